"""The two things every lesson experiment takes: the target task's data and the training recipe.

An experiment is ``experiment(target=Target(...), recipe=Recipe(...), seed=..., source=...)``
instead of a long list of keyword arguments: :class:`Target` says which images (how many per
class, which classes, how far from the source), :class:`Recipe` says how ``fit`` trains on them.
The lessons train on the CPU (``Recipe.device``), so that a lesson's numbers do not depend on
the machine's accelerator.

Example:
    >>> target, recipe = Target(n_per_class=4), Recipe(epochs=1, batch_size=8)
    >>> train, val = target.data(seed=0)
    >>> len(train), train.classes
    (16, ('triangle', 'ring', 'halfdisk', 'tee'))
    >>> sorted(recipe.fit_options())
    ['batch_size', 'clip', 'device', 'epochs', 'lr', 'optimizer', 'schedule']
    >>> recipe.replace(epochs=3).epochs
    3
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..schedules import Schedule
from ..training import DEFAULT_CLIP, Optim

TARGET_CLASSES = ("triangle", "ring", "halfdisk", "tee")  # two source classes, two the source never saw
VAL_PER_CLASS = 25


@dataclass(frozen=True)
class Target:
    """The target task: ``n_per_class`` training images of each of ``classes``, a fixed validation set.

    ``domain`` is ``"shapes"`` (the source's kind of images) or ``"digits"`` (real handwritten
    digits, far from the source); ``gap`` is :func:`workbench.data.shapes`' domain-gap knob in
    [0, 1]; ``val_per_class`` validation images per class, the same for every ``n_per_class``.
    """

    n_per_class: int = 10
    classes: Sequence[str] = TARGET_CLASSES
    domain: str = "shapes"
    gap: float = 0.0
    val_per_class: int = VAL_PER_CLASS

    def data(self, seed: int = 0):
        """``(train, val)`` for this target, drawn with ``seed`` (see :func:`.pretraining.target_data`)."""
        from .pretraining import target_data  # pretraining builds on this module

        return target_data(self.n_per_class, domain=self.domain, gap=self.gap, classes=self.classes,
                           val_per_class=self.val_per_class, seed=seed)

    def replace(self, **changes) -> Target:
        """A copy with ``changes`` (``Target().replace(n_per_class=40)``)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Recipe:
    """How ``fit`` trains: epochs, batch size, optimiser (a name or :class:`~workbench.training.Optim`),
    learning rate, schedule, gradient clipping and device (the lessons' default: the CPU)."""

    epochs: int = 6
    batch_size: int = 16
    optimizer: str | Optim = "auto"
    lr: float | None = None
    schedule: Schedule | None = None
    clip: float | None = DEFAULT_CLIP
    device: str = "cpu"

    def fit_options(self) -> dict:
        """The keyword arguments of :func:`workbench.fit` this recipe sets."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def replace(self, **changes) -> Recipe:
        """A copy with ``changes`` (``LESSON.replace(epochs=3)``)."""
        return dataclasses.replace(self, **changes)


LESSON = Recipe()  # the lessons' default recipe
