"""The target task's knobs (domain, target size, domain gap) above a comparison panel (lesson 1).

Example:
    >>> from workbench import build_model
    >>> TargetPanel(Target(4), source=build_model(nc=10)).compare.runs.value
    ('pretrained', 'scratch')
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import ipywidgets as widgets
from torch import nn

from ..experiments.pretraining import (
    DOMAINS,
    PRETRAINING_RECIPE,
    SMALL_TARGET,
    STARTS,
    bn_reestimated_accuracy,
    checked_build,
)
from ..experiments.recipe import Recipe, Target
from ..i18n import N_, _, labels
from ..table import Table
from .base import STYLE, Panel
from .compare import ComparePanel

BN_TABLE = (N_("run"), N_("val accuracy, as trained"), N_("val accuracy, BatchNorm re-estimated"))


class BNComparePanel(ComparePanel):
    """A :class:`~workbench.panels.ComparePanel` whose table adds each finished run's accuracy with BN re-estimated.

    ``accuracy_bn`` holds ``{run: accuracy}`` after a run (see
    :func:`~workbench.experiments.pretraining.bn_reestimated_accuracy`): the validation accuracy of
    the trained weights once BatchNorm's running statistics are recomputed on the training images.
    """

    def start(self) -> bool:
        self.accuracy_bn: dict[str, float] = {}
        return super().start()

    def _train(self) -> None:
        super()._train()
        self.accuracy_bn = {name: bn_reestimated_accuracy(model, self.train, self.val, self.batch_size.value)
                            for name, model in self.models.items() if self.histories[name].status == "completed"}
        self.redraw()

    def _table(self) -> str:
        rows = [{"run": name, "val accuracy, as trained": f"{h.val['accuracy'][-1]:.3f}",
                 "val accuracy, BatchNorm re-estimated": f"{self.accuracy_bn[name]:.3f}"}
                for name, h in self.histories.items() if name in getattr(self, "accuracy_bn", {})]
        table = Table(BN_TABLE, rows, title=_("after the last epoch"), labels=labels(BN_TABLE))._repr_html_() \
            if rows else ""
        return super()._table() + table


class TargetPanel(Panel):
    """The target task's knobs (domain, target size, gap) above a :class:`BNComparePanel`.

    ``domain``, ``n_per_class`` and ``gap``, when given, replace the target's (as a saved state does).
    Moving a knob makes new target data for the next Run; ``panel.compare`` is the comparison
    panel (its ``run()`` trains and returns the histories; ``panel.compare.accuracy_bn`` then holds
    each run's accuracy with BatchNorm re-estimated).

    What to look for: with few images and no gap, the pretrained run is right after an epoch while
    scratch, as trained, stays at chance; its BatchNorm-re-estimated accuracy, in the table under
    the curves, shows what its weights learnt. Move the gap up or pick digits and the pretrained
    lead shrinks.

    Example:
        >>> from workbench import build_model
        >>> panel = TargetPanel(Target(4), source=build_model(nc=10))
        >>> panel.n_per_class.value = 6
        >>> len(panel.compare.train), panel.compare.runs.value
        (24, ('pretrained', 'scratch'))
    """

    CONTROLS = ("domain", "n_per_class", "gap")

    def __init__(self, target: Target = SMALL_TARGET, recipe: Recipe = PRETRAINING_RECIPE, *, source=None,
                 build: Callable[[int], nn.Module] | None = None, domain: str | None = None,
                 n_per_class: int | None = None, gap: float | None = None, seed: int = 0, hide: Iterable[str] = ()):
        knobs = {"domain": domain, "n_per_class": n_per_class, "gap": gap}
        self.target = target = target.replace(**{k: v for k, v in knobs.items() if v is not None})
        self.domain = widgets.ToggleButtons(options=DOMAINS, value=target.domain, description=_("target domain"),
                                            style=STYLE)
        self.n_per_class = widgets.IntSlider(value=target.n_per_class, min=2, max=149,
                                             description=_("images per class"),
                                             style=STYLE, continuous_update=False)
        self.gap = widgets.FloatSlider(value=target.gap, min=0.0, max=1.0, step=0.1, description=_("domain gap"),
                                       style=STYLE, continuous_update=False)
        self.about = widgets.HTML()
        train, val = self._data(seed)
        options = recipe.fit_options()
        self.compare = BNComparePanel(train, val, source=source, build=build and checked_build(build), runs=STARTS,
                                      epochs=options.pop("epochs"), batch_size=options.pop("batch_size"), seed=seed,
                                      hide=("depth", "unfreeze_at"), **options)
        for control in (self.domain, self.n_per_class, self.gap):
            control.observe(self._update, names="value")
        self._describe()
        knobs = widgets.HBox([self.n_per_class, self.gap])
        self._finish([self.domain, knobs, self.about, self.compare], seed, hide)

    def _data(self, seed: int):
        knobs = self.target.replace(n_per_class=self.n_per_class.value, domain=self.domain.value, gap=self.gap.value)
        return knobs.data(seed)

    def _update(self, change=None) -> None:
        self.compare.train, self.compare.val = self._data(self.seed)
        self._describe()

    def _describe(self) -> None:
        train = self.compare.train
        self.about.value = _("target: {n} training images of {nc} classes ({classes}); {n_val} validation "
                             "images; press Run").format(n=len(train), nc=train.nc, classes=", ".join(train.classes),
                                                         n_val=len(self.compare.val))
