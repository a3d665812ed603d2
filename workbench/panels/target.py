"""The target task's knobs (domain, target size, domain gap) above a :class:`ComparePanel` (lesson 1).

Example:
    >>> from workbench import build_model
    >>> TargetPanel(n_per_class=4, source=build_model(nc=10)).compare.runs.value
    ('pretrained', 'scratch')
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import ipywidgets as widgets

from ..experiments.pretraining import DOMAINS, STARTS, TARGET_CLASSES, target_data
from .base import STYLE, Panel
from .compare import ComparePanel


class TargetPanel(Panel):
    """The target task's knobs (domain, target size, gap) above a :class:`~workbench.panels.ComparePanel`.

    Moving a knob makes new target data for the next Run; ``panel.compare`` is the ComparePanel
    (its ``run()`` trains and returns the histories).

    What to look for: with few images and no gap, the pretrained run is right after an epoch while
    scratch stays at chance; move the gap up or pick digits and the pretrained lead shrinks.

    Example:
        >>> from workbench import build_model
        >>> panel = TargetPanel(n_per_class=4, source=build_model(nc=10))
        >>> panel.n_per_class.value = 6
        >>> len(panel.compare.train), panel.compare.runs.value
        (24, ('pretrained', 'scratch'))
    """

    CONTROLS = ("domain", "n_per_class", "gap")

    def __init__(self, *, domain: str = "shapes", n_per_class: int = 10, gap: float = 0.0,
                 classes: Sequence[str] = TARGET_CLASSES, source=None, epochs: int = 6, batch_size: int = 16,
                 seed: int = 0, hide: Iterable[str] = (), **fit_options):
        self.classes = tuple(classes)
        self.domain = widgets.ToggleButtons(options=DOMAINS, value=domain, description="target domain", style=STYLE)
        self.n_per_class = widgets.IntSlider(value=n_per_class, min=2, max=149, description="images per class",
                                             style=STYLE, continuous_update=False)
        self.gap = widgets.FloatSlider(value=gap, min=0.0, max=1.0, step=0.1, description="domain gap",
                                       style=STYLE, continuous_update=False)
        self.about = widgets.HTML()
        train, val = self._data(seed)
        self.compare = ComparePanel(train, val, source=source, runs=STARTS, epochs=epochs, batch_size=batch_size,
                                    seed=seed, hide=("depth", "unfreeze_at"), **{"device": "cpu", **fit_options})
        for control in (self.domain, self.n_per_class, self.gap):
            control.observe(self._update, names="value")
        self._describe()
        knobs = widgets.HBox([self.n_per_class, self.gap])
        self._finish([self.domain, knobs, self.about, self.compare], seed, hide)

    def _data(self, seed: int):
        return target_data(self.n_per_class.value, domain=self.domain.value, gap=self.gap.value,
                           classes=self.classes, seed=seed)

    def _update(self, change=None) -> None:
        self.compare.train, self.compare.val = self._data(self.seed)
        self._describe()

    def _describe(self) -> None:
        train = self.compare.train
        self.about.value = (f"target: {len(train)} training images of {train.nc} classes "
                            f"({', '.join(train.classes)}); {len(self.compare.val)} validation images; "
                            "press Run")
