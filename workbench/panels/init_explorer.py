"""The initialisation explorer: schemes, BatchNorm on or off, and pretrained weights as one more curve.

Example:
    >>> from workbench import build_model
    >>> panel = InitExplorer(build_model(nc=3), schemes=("kaiming", "zero"), pretrained=False)
    >>> [trace.name for trace in panel.figure.data]
    ['kaiming', 'zero']
"""
from __future__ import annotations

from collections.abc import Iterable

import ipywidgets as widgets
import torch
from torch import nn

from .. import data
from ..checkpoints import pretrained as shipped
from ..i18n import _
from ..models import INIT_SCHEMES
from ..plots.signals import PRETRAINED, signal_figure
from ..stability import SignalRow, signal_propagation
from .base import STYLE, Panel, live_figure, refresh_figure


def as_is_signal(model: nn.Module, x: torch.Tensor, batchnorm: bool = True, scheme: str = PRETRAINED
                 ) -> list[SignalRow]:
    """:func:`~workbench.stability.signal_propagation`'s rows for the model's own weights (no re-initialisation)."""
    return signal_propagation(model, x, (), batchnorm, as_is=scheme)


class InitExplorer(Panel):
    """Pick initialisation schemes and BatchNorm on/off -> the std of every layer's output right after init.

    ``model`` (default: the shipped ``shapes_n`` model) is copied, re-initialised per scheme by
    :func:`~workbench.stability.signal_propagation` and measured on ``x`` (default: 40 shape images);
    ``pretrained`` adds the curve of the model's own weights (``signal_propagation(..., as_is=)``).

    What to look for: without BatchNorm the signal fades layer after layer, ``normal`` (std 0.01)
    fastest and ``kaiming`` slowest; ``zero`` is 0 throughout (nothing flows, nothing learns); with
    BatchNorm every scheme holds a steady std from the first layer to the last. The pretrained
    weights were trained with BatchNorm: steady with it, fading without it.
    """

    CONTROLS = ("schemes", "batchnorm", "pretrained")

    def __init__(self, model: nn.Module | None = None, x: torch.Tensor | None = None, *,
                 schemes: Iterable[str] = ("kaiming", "xavier", "normal"), batchnorm: bool = False,
                 pretrained: bool = True, seed: int = 0, hide: Iterable[str] = ()):
        self.seed = seed
        self.model = model if model is not None else shipped("shapes_n")
        self.x = x if x is not None else data.shapes(4, seed=seed).x
        self.schemes = widgets.SelectMultiple(options=INIT_SCHEMES, value=tuple(schemes), description=_("schemes"),
                                              style=STYLE, rows=len(INIT_SCHEMES))
        self.batchnorm = widgets.Checkbox(value=batchnorm, description=_("with BatchNorm"), style=STYLE)
        self.pretrained = widgets.Checkbox(value=pretrained, description=_("the model's own (pretrained) weights"),
                                           style=STYLE)
        self.rows: list[SignalRow] = []
        self.figure = live_figure(signal_figure(self._measure()))
        for control in (self.schemes, self.batchnorm, self.pretrained):
            control.observe(self._update, names="value")
        self._finish([widgets.HBox([self.schemes, widgets.VBox([self.batchnorm, self.pretrained])]), self.figure],
                     seed, hide)

    def _measure(self) -> list[SignalRow]:
        self.rows = signal_propagation(self.model, self.x, list(self.schemes.value), self.batchnorm.value,
                                       seed=self.seed, as_is=PRETRAINED if self.pretrained.value else None)
        return self.rows

    def _update(self, change=None) -> None:
        refresh_figure(self.figure, signal_figure(self._measure()))
