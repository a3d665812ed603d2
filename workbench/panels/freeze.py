"""Freezing panels: the depth preview of the first notebook, and the freeze panel with its map and step time.

Example:
    >>> from workbench import build_model
    >>> panel = FreezeDepthPreview(build_model())
    >>> panel.depth.value = 3
    >>> panel.summary.value
    'depth=3: layers 0-2 frozen (12,496 parameters), 7 layers trainable (1,438,602 parameters)'
"""
from __future__ import annotations

import copy
import html
from collections.abc import Iterable

import ipywidgets as widgets
import torch
from torch import nn

from ..freezing import BN_POLICIES, set_freeze_depth
from ..i18n import N_, _, gloss, labels, ngettext
from ..layers import numbered_layers
from ..modes import eval_mode
from ..plots import freeze_map
from ..plots.layers import freeze_rows, frozen_span
from ..table import Table
from ..training import step_time
from .base import STYLE, Panel, live_figure, refresh_figure

SLIDER_STYLE = STYLE
DEPTH_TABLE = (N_("index"), N_("name"), N_("stage"), N_("type"), N_("params"), N_("would be"))


def depth_summary(model: nn.Module, depth: int) -> str:
    """One line: which layers ``freeze(model, depth)`` would freeze, and how many parameters each side holds."""
    layers = numbered_layers(model)
    frozen = sum(p.numel() for layer in layers[:depth] for p in layer.module.parameters())
    total = sum(p.numel() for p in model.parameters())
    span = {0: _("no layer frozen"), 1: _("layer 0 frozen")}.get(depth) or _("layers 0-{last} frozen").format(
        last=depth - 1)
    span += _(" ({n:,} parameters)").format(n=frozen) if depth else ""
    rest = len(layers) - depth
    trainable = ngettext("{n} layer trainable ({params:,} parameters)", "{n} layers trainable ({params:,} parameters)",
                         rest).format(n=rest, params=total - frozen)
    yolo = gloss(" (the layers YOLOv5's --freeze {depth} freezes)").format(depth=depth) if depth else ""
    return _("depth={depth}: {span}, {trainable}").format(depth=depth, span=span, trainable=trainable) + yolo


def depth_table_html(model: nn.Module, depth: int) -> str:
    """The layer list with the layers a freeze depth would freeze shaded."""
    rows = [{"index": layer.index, "name": layer.name, "stage": layer.stage, "type": layer.type,
             "params": sum(p.numel() for p in layer.module.parameters()),
             "would be": _("frozen") if layer.index < depth else _("trainable")} for layer in numbered_layers(model)]
    return Table(DEPTH_TABLE, rows, labels=labels(DEPTH_TABLE),
                 row_style=lambda row: "background:#dbe9f6;color:#555" if row["would be"] == _("frozen") else ""
                 )._repr_html_()


class FreezeDepthPreview(widgets.VBox):
    """A depth slider that shows which layers YOLOv5's ``--freeze N`` would freeze (it freezes nothing)."""

    def __init__(self, model: nn.Module, depth: int = 0):
        self.model = model
        n_layers = len(numbered_layers(model))
        self.depth = widgets.IntSlider(value=depth, min=0, max=n_layers - 1, description=_("freeze depth"),
                                       style=SLIDER_STYLE, continuous_update=True)
        self.summary = widgets.Label()
        self.table = widgets.HTML()
        self.depth.observe(self._update, names="value")
        self._update()
        super().__init__([self.depth, self.summary, self.table])

    def _update(self, change=None) -> None:
        self.summary.value = depth_summary(self.model, self.depth.value)
        self.table.value = depth_table_html(self.model, self.depth.value)


def example_batch(model: nn.Module, batch: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random image batch that fits ``model`` (channels of its first conv) and labels within its outputs."""
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if conv is None:
        raise ValueError(f"{type(model).__name__} has no conv layer to read the input shape from: pass "
                         f"example=(x, y), a small batch of inputs and labels")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, conv.in_channels, size, size, generator=g)
    with eval_mode(model), torch.no_grad():
        n_out = model(x).shape[1]
    return x, torch.randint(0, n_out, (batch,), generator=g)


class FreezePanel(Panel):
    """Freeze depth and BatchNorm policy -> the freeze map, the frozen/trainable counts and a measured step time.

    The panel freezes its own copy of ``model`` (``panel.model``; ``inplace=True`` freezes yours)
    with :func:`~workbench.freezing.set_freeze_depth`, and times ``steps`` training steps on a
    batch of ``batch`` images (:func:`~workbench.training.step_time`; ``steps=0`` turns timing off).

    What to look for: the first layers hold few parameters, so the trainable share falls slowly
    until the last backbone layers; the step time falls as the backward pass gets shorter.

    Example:
        >>> from workbench import build_model
        >>> panel = FreezePanel(build_model(nc=3), steps=0)
        >>> panel.depth.value = 9
        >>> panel.summary.value
        "depth=9, bn='eval': layers 0-8 frozen, 1,108,048 parameters frozen; trainable 334,083 of 1,442,131 (23.2%)"
    """

    CONTROLS = ("depth", "bn")

    def __init__(self, model: nn.Module, *, depth: int = 0, bn: str = "eval", steps: int = 2, batch: int = 2,
                 example: tuple[torch.Tensor, torch.Tensor] | None = None, inplace: bool = False, seed: int = 0,
                 hide: Iterable[str] = ()):
        self.model = model if inplace else copy.deepcopy(model)
        n_layers = len(numbered_layers(self.model))
        self.steps = steps
        self.depth = widgets.IntSlider(value=depth, min=0, max=n_layers - 1, description=_("freeze depth"),
                                       style=STYLE, continuous_update=False)
        self.bn = widgets.Dropdown(options=BN_POLICIES, value=bn, description=_("BatchNorm policy"), style=STYLE)
        self.summary = widgets.Label()
        self.timing = widgets.Label()
        self.message = widgets.HTML()
        self.example = example if example is not None or not steps else example_batch(self.model, batch, seed=seed)
        self.full_step = step_time(self.model, *self.example, steps=steps, warmup=1) if steps else None
        self.report = set_freeze_depth(self.model, depth, bn)
        self.figure = live_figure(freeze_map(self.model, depth=depth))
        self._update()
        for control in (self.depth, self.bn):
            control.observe(self._update, names="value")
        self._finish([widgets.HBox([self.depth, self.bn]), self.summary, self.timing, self.message, self.figure],
                     seed, hide)

    def _update(self, change=None) -> None:
        try:
            self.report = set_freeze_depth(self.model, self.depth.value, self.bn.value)
        except ValueError as err:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(err), quote=False)}</span>"
            return
        self.message.value = ""
        report, depth = self.report, self.depth.value
        frozen = report.total - report.trainable
        share = 100 * report.trainable / report.total if report.total else 0.0
        span = frozen_span(freeze_rows(self.model), depth)  # the freeze map's title says the same
        self.summary.value = _("depth={depth}, bn={bn!r}: {span}, {frozen:,} parameters frozen; "
                               "trainable {trainable:,} of {total:,} ({share:.1f}%)").format(
            depth=depth, bn=self.bn.value, span=span, frozen=frozen, trainable=report.trainable, total=report.total,
            share=share)
        refresh_figure(self.figure, freeze_map(self.model, depth=depth))
        self.step_seconds = step_time(self.model, *self.example, steps=self.steps) if self.steps else None
        if depth == 0 and self.step_seconds is not None:
            self.full_step = self.step_seconds  # the baseline, measured again whenever nothing is frozen
        self.timing.value = self._timing_text()

    def _timing_text(self) -> str:
        if self.step_seconds is None:
            return _("step time: not measured (steps=0)")
        return _("one training step on {batch} images: {ms:.1f} ms ({ratio:.2f}x the {full_ms:.1f} ms with nothing "
                 "frozen)").format(batch=len(self.example[0]), ms=1000 * self.step_seconds,
                                   ratio=self.step_seconds / self.full_step, full_ms=1000 * self.full_step)
