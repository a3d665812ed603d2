"""ipywidgets panels: controls call primitives and show their result. Every control is an attribute.

Example:
    >>> from workbench import build_model
    >>> panel = FreezeDepthPreview(build_model())
    >>> panel.depth.value = 3
    >>> panel.summary.value
    'depth=3: layers 0-2 frozen (12,496 parameters), 7 layers trainable (1,438,602 parameters)'
"""
from __future__ import annotations

import html

import ipywidgets as widgets
from torch import nn

from .layers import numbered_layers

SLIDER_STYLE = {"description_width": "initial"}


def depth_summary(model: nn.Module, depth: int) -> str:
    """One line: which layers ``freeze(model, depth)`` would freeze, and how many parameters each side holds."""
    layers = numbered_layers(model)
    frozen = sum(p.numel() for layer in layers[:depth] for p in layer.module.parameters())
    total = sum(p.numel() for p in model.parameters())
    span = "no layer frozen" if depth == 0 else f"layers 0-{depth - 1} frozen ({frozen:,} parameters)"
    return f"depth={depth}: {span}, {len(layers) - depth} layers trainable ({total - frozen:,} parameters)"


def depth_table_html(model: nn.Module, depth: int) -> str:
    """The layer list with the layers a freeze depth would freeze shaded."""
    rows = []
    for layer in numbered_layers(model):
        frozen = layer.index < depth
        params = sum(p.numel() for p in layer.module.parameters())
        style = "background:#dbe9f6;color:#555" if frozen else ""
        state = "frozen" if frozen else "trainable"
        rows.append(f"<tr style='{style}'><td>{layer.index}</td><td>{html.escape(layer.name)}</td>"
                    f"<td>{layer.stage}</td><td>{layer.type}</td><td>{params:,}</td><td>{state}</td></tr>")
    head = "<tr><th>index</th><th>name</th><th>stage</th><th>type</th><th>params</th><th>would be</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


class FreezeDepthPreview(widgets.VBox):
    """A depth slider that shows which layers YOLOv5's ``--freeze N`` would freeze (it freezes nothing)."""

    def __init__(self, model: nn.Module, depth: int = 0):
        self.model = model
        n_layers = len(numbered_layers(model))
        self.depth = widgets.IntSlider(value=depth, min=0, max=n_layers - 1, description="freeze depth",
                                       style=SLIDER_STYLE, continuous_update=True)
        self.summary = widgets.Label()
        self.table = widgets.HTML()
        self.depth.observe(self._update, names="value")
        self._update()
        super().__init__([self.depth, self.summary, self.table])

    def _update(self, change=None) -> None:
        self.summary.value = depth_summary(self.model, self.depth.value)
        self.table.value = depth_table_html(self.model, self.depth.value)
