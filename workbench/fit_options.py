"""``fit``'s two grouped options: the optimiser (:class:`Optim`) and the freeze schedule (:class:`Freeze`).

``fit(optimizer=...)`` takes a name (``"auto"``, ``"sgd"``, ``"adamw"``; ``lr=`` is the one
shortcut beside it), an :class:`Optim` with every setting, or your own torch optimiser.
``fit(freeze=...)`` takes ``{epoch: depth}``, a rule ``(epoch, step) -> depth``, or a
:class:`Freeze` that adds the BatchNorm policy of the frozen layers.

Example:
    >>> Optim("sgd", lr=0.01, momentum=0.9)
    Optim(name='sgd', lr=0.01, momentum=0.9, weight_decay=0.0005)
    >>> Freeze({0: 9, 2: 0}, bn="frozen")
    Freeze(schedule={0: 9, 2: 0}, bn='frozen')
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .fit_checks import check_options
from .freezing import BN_POLICIES
from .optim import OPTIMIZERS


@dataclass(frozen=True)
class Optim:
    """A named optimiser and its settings, built over all parameters by :func:`~workbench.optim.make_optimizer`.

    ``name``: ``"auto"`` (Ultralytics' rule: AdamW for short runs, SGD for long ones), ``"sgd"``
    or ``"adamw"``; ``lr=None`` takes the optimiser's default; ``momentum`` is SGD's momentum or
    AdamW's beta1; ``weight_decay`` applies to the ``weight`` groups only.
    """

    name: str = "auto"
    lr: float | None = None
    momentum: float = 0.937
    weight_decay: float = 5e-4

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"Optim name {self.name!r} is unknown: use one of {list(OPTIMIZERS)}, or pass your own "
                             f"torch optimizer to fit(optimizer=...)")
        check_options(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


@dataclass(frozen=True)
class Freeze:
    """A freeze schedule and the BatchNorm policy of the layers it freezes (see :mod:`workbench.freezing`).

    ``schedule``: ``{epoch: depth}`` (``{0: 9, 2: 0}``: layers 0..8 frozen for two epochs) or a rule
    ``schedule(epoch, step) -> depth | None`` asked before every step (``None`` keeps the depth).
    ``bn``: ``"eval"``, ``"train"``, ``"affine"`` or ``"frozen"``.
    """

    schedule: Mapping[int, int] | Callable[[int, int], int | None]
    bn: str = "eval"

    def __post_init__(self):
        if self.bn not in BN_POLICIES:
            raise ValueError(f"Freeze bn={self.bn!r} is not a BatchNorm policy: choose one of {list(BN_POLICIES)}")
        if not callable(self.schedule) and not isinstance(self.schedule, Mapping):
            raise ValueError(f"Freeze schedule must be {{epoch: depth}} or a rule (epoch, step) -> depth "
                             f"(got {self.schedule!r})")


def as_optim(optimizer, lr) -> Optim | torch.optim.Optimizer:
    """``fit``'s ``optimizer``/``lr`` as one :class:`Optim` (or the torch optimiser passed in)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        if lr is not None:
            raise ValueError("lr= sets the learning rate of a named optimizer; your torch optimizer has its own: "
                             "set it when you build the optimizer, and leave lr out")
        return optimizer
    if isinstance(optimizer, str):
        return Optim(optimizer, lr=lr)
    if isinstance(optimizer, Optim):
        if lr is not None and lr != optimizer.lr:
            raise ValueError(f"lr={lr} and {optimizer} disagree: give the learning rate once, inside Optim(...)")
        return optimizer
    raise ValueError(f"optimizer must be a name ({', '.join(map(repr, OPTIMIZERS))}), an Optim(...) or a torch "
                     f"optimizer (got {optimizer!r})")


def as_freeze(freeze) -> Freeze | None:
    """``fit``'s ``freeze`` as a :class:`Freeze` (a bare schedule or rule gets the ``"eval"`` policy)."""
    return freeze if freeze is None or isinstance(freeze, Freeze) else Freeze(freeze)
