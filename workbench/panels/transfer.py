"""The transfer panel: class counts and names, an optional layer map -> the ledger and the transfer map.

Example:
    >>> parse_layer_map("9:10, 8 : 9"), format_layer_map({9: 10, 8: 9})
    ({9: 10, 8: 9}, '9:10, 8:9')
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import ipywidgets as widgets
import torch
from torch import nn

from ..i18n import _
from ..plots import transfer_map
from ..runs import default_build, default_source
from ..transfer import TransferReport, source_state, suggest_layer_map, transfer
from .base import STYLE, Panel, live_figure, refresh_figure

_PAIR = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_layer_map(text: str) -> dict[int, int]:
    """``"9:10, 8:9"`` -> ``{9: 10, 8: 9}`` (source layer: target layer); an empty text is no map."""
    pairs = [p for p in text.replace(";", ",").split(",") if p.strip()]
    found = {}
    for pair in pairs:
        match = _PAIR.match(pair)
        if match is None:
            raise ValueError(f"cannot read {pair.strip()!r} in the layer map: write source:target pairs of layer "
                             f"indices separated by commas, e.g. '9:10, 8:9'")
        found[int(match.group(1))] = int(match.group(2))
    return found


def format_layer_map(layer_map: dict[int, int]) -> str:
    return ", ".join(f"{i}:{j}" for i, j in layer_map.items())


def parse_names(text: str) -> list[str]:
    """Class names from a comma-separated text (spaces around names are dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]


class TransferPanel(Panel):
    """What a checkpoint gives a new model: pick the target class count and names, optionally a layer map.

    Every change runs ``transfer(source, target, dry_run=True, ...)`` on a fresh target built by
    ``build(target_nc)``, and shows the ledger (``panel.report``) and :func:`~workbench.plots.transfer_map`.
    :meth:`transferred_model` returns a target with the weights really loaded.

    What to look for: backbone layers transfer whole whatever the class count; only the class
    layer's entries change status; with class names, the rows of shared classes are copied.

    Example:
        >>> from workbench import build_model
        >>> panel = TransferPanel(build_model(nc=10), target_nc=3)
        >>> panel.report.headline
        'Transferred 156/158 items from pretrained weights'
        >>> panel.target_nc.value = 10
        >>> panel.report.headline
        'Transferred 158/158 items from pretrained weights'
    """

    CONTROLS = ("target_nc", "source_names", "target_names", "match_names", "layer_map")
    BUTTONS = ("suggest",)

    def __init__(self, source=None, build: Callable[[int], nn.Module] | None = None, *, target_nc: int = 3,
                 source_names: str | Iterable[str] | None = None, target_names: str | Iterable[str] = "",
                 match_names: bool = True, layer_map: str | dict = "", seed: int = 0, hide: Iterable[str] = ()):
        source = default_source() if source is None else source
        self.source = source_state(source) if isinstance(source, (str, Path)) else source
        self.build = build or default_build(self.source)
        if source_names is None:
            source_names = getattr(self.source, "pretrained_info", {}).get("classes", [])
        self._targets: dict[int, nn.Module] = {}
        self.seed = seed
        self.target_nc = widgets.BoundedIntText(value=target_nc, min=1, max=1000, description=_("target classes"),
                                                style=STYLE, layout=widgets.Layout(width="170px"))
        self.source_names = widgets.Text(value=_text(source_names), description=_("source class names"), style=STYLE,
                                         continuous_update=False, layout=widgets.Layout(width="95%"))
        self.target_names = widgets.Text(value=_text(target_names), description=_("target class names"), style=STYLE,
                                         continuous_update=False, placeholder=_("e.g. triangle, ring, tee"),
                                         layout=widgets.Layout(width="95%"))
        self.match_names = widgets.Checkbox(value=match_names, description=_("copy class rows by name"), indent=False)
        self.layer_map = widgets.Text(value=layer_map if isinstance(layer_map, str) else format_layer_map(layer_map),
                                      description=_("layer map (source:target)"), placeholder=_("e.g. 9:10, 8:9"),
                                      style=STYLE, continuous_update=False)
        self.suggest = widgets.Button(description=_("suggest a layer map"),
                                      tooltip=_("align the layers by their shapes"),
                                      layout=widgets.Layout(width="auto"))
        self.counts = widgets.Label()
        self.message = widgets.HTML()
        self.ledger = widgets.HTML()
        self.report: TransferReport | None = None
        self.figure = None
        self._update()
        for control in (self.target_nc, self.source_names, self.target_names, self.match_names, self.layer_map):
            control.observe(self._update, names="value")
        self.suggest.on_click(self._suggest)
        controls = [widgets.HBox([self.target_nc, self.match_names]), self.source_names, self.target_names,
                    widgets.HBox([self.layer_map, self.suggest])]
        self._finish([*controls, self.counts, self.message, self.figure, self.ledger], seed, hide)

    def target(self, nc: int | None = None) -> nn.Module:
        """The fresh target model for ``nc`` classes (built once per class count, seeded, never loaded into)."""
        nc = self.target_nc.value if nc is None else nc
        if nc not in self._targets:
            torch.manual_seed(self.seed)
            self._targets[nc] = self.build(nc)
        return self._targets[nc]

    def _options(self) -> dict:
        options = {"layer_map": parse_layer_map(self.layer_map.value) or None}
        source_names, target_names = parse_names(self.source_names.value), parse_names(self.target_names.value)
        if self.match_names.value and target_names:
            if len(target_names) != self.target_nc.value:
                raise ValueError(f"target class names lists {len(target_names)} names but there are "
                                 f"{self.target_nc.value} target classes: name every class, or clear the names")
            if not source_names:
                raise ValueError("to copy class rows by name, give the source class names too")
            options["class_names"] = (source_names, target_names)
        return options

    def _update(self, change=None) -> None:
        try:
            self.report = transfer(self.source, self.target(), dry_run=True, **self._options())
        except ValueError as err:
            self.message.value = f"<span style='color:#b00'>{html.escape(str(err), quote=False)}</span>"
            if self.figure is not None:
                return
            self.report = transfer(self.source, self.target(), dry_run=True)
        else:
            self.message.value = ""
        n_source = len(parse_names(self.source_names.value)) or getattr(self.source, "nc", None) or "?"
        self.counts.value = _("source: {n_source} classes · target: {n_target} classes · {headline}, parameter "
                              "coverage {coverage:.1f}%").format(n_source=n_source, n_target=self.target_nc.value,
                                                                 headline=self.report.headline,
                                                                 coverage=100 * self.report.coverage)
        self.ledger.value = self.report._repr_html_()
        fig = transfer_map(self.report)
        if self.figure is None:
            self.figure = live_figure(fig)
        else:
            refresh_figure(self.figure, fig)

    def _suggest(self, button=None) -> None:
        moved = {i: j for i, j in suggest_layer_map(self.source, self.target()).items() if i != j}
        if not moved:
            self.message.value = _("the layers already line up by index: no layer map needed")
        self.layer_map.value = format_layer_map(moved)

    def transferred_model(self) -> tuple[nn.Module, TransferReport]:
        """A new target (same seed) with the pretrained weights really loaded, and its ledger."""
        torch.manual_seed(self.seed)
        model = self.build(self.target_nc.value)
        return model, transfer(self.source, model, **self._options())


def _text(names: str | Iterable[str]) -> str:
    return names if isinstance(names, str) else ", ".join(names)
