"""Figures of the lessons' experiment results (duck-typed: any object with the fields named below).

* :func:`accuracy_curves`: runs side by side per epoch, as trained and with BatchNorm re-estimated;
* :func:`sweep_bars`: final accuracies over several targets.

Example:
    >>> from types import SimpleNamespace as NS
    >>> run = NS(accuracy=0.9, accuracy_bn=0.95)
    >>> result = NS(knobs=lambda: "shapes", pretrained=run, scratch=NS(accuracy=0.3, accuracy_bn=0.6))
    >>> [list(t.y) for t in sweep_bars([result]).data]
    [[0.9], [0.95], [0.3], [0.6]]
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..i18n import N_, _
from .grid import side_by_side

COLOURS = {"pretrained": "#1f77b4", "scratch": "#ff7f0e"}
SYMBOLS = {"pretrained": "circle", "scratch": "square"}
PANELS = (N_("training loss"), N_("val accuracy, as trained"), N_("val accuracy, BatchNorm re-estimated"))


def accuracy_curves(runs: Mapping, *, chance: float | None = None, title: str | None = None) -> go.Figure:
    """Three panels: training loss per step; validation accuracy per epoch as trained; and re-estimated.

    ``runs`` maps a name to a run with ``history`` (loss per step), ``curve`` (accuracy per epoch
    as trained) and ``curve_bn`` (the same with BatchNorm re-estimated: lesson 1's ``Run``). Both
    accuracy panels share one y range, 0 to 1; ``chance`` is named in their titles. Runs differ by
    colour and marker, so one that lies on another stays visible.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> run = NS(history=NS(loss=[1.4, 0.9]), curve=[0.25, 0.25], curve_bn=[0.4, 0.6])
        >>> fig = accuracy_curves({"scratch": run}, chance=0.25)
        >>> [list(t.y) for t in fig.data[1:3]], fig.layout.annotations[1].text
        ([[0.25, 0.25], [0.4, 0.6]], 'val accuracy, as trained (chance 0.25)')
    """
    traces = []
    for name, run in runs.items():
        colour = COLOURS.get(name, "#7f7f7f")
        epochs = np.arange(1, len(run.curve) + 1)
        traces.append(dict(type="scatter", mode="lines", x=np.arange(1, len(run.history.loss) + 1),
                           y=list(run.history.loss), name=name, legendgroup=name, line=dict(color=colour)))
        for panel, curve in ((2, run.curve), (3, run.curve_bn)):
            traces.append(dict(type="scatter", mode="lines+markers", x=epochs[:len(curve)], y=list(curve), name=name,
                               legendgroup=name, showlegend=False, xaxis=f"x{panel}", yaxis=f"y{panel}",
                               line=dict(color=colour), marker=dict(symbol=SYMBOLS.get(name, "circle"), size=8)))
    note = _(" (chance {chance:.2f})").format(chance=chance) if chance is not None else ""
    layout = side_by_side(3, gap=0.07, titles=[_(PANELS[0]), *(_(t) + note for t in PANELS[1:])])
    layout["xaxis"]["title"], layout["yaxis"]["title"] = _("step"), _("loss")
    for panel in (2, 3):
        layout[f"xaxis{panel}"].update(title=_("epoch"), dtick=1)
        layout[f"yaxis{panel}"].update(range=[0, 1.02], title=_("accuracy") if panel == 2 else None)
    layout.update(title=title or _("Pretrained against scratch"), height=380, margin=dict(l=60, r=30, t=80, b=40),
                  legend=dict(orientation="h", y=-0.2))
    return go.Figure(traces, layout)


def sweep_bars(results: Sequence, starts: Sequence[str] = ("pretrained", "scratch"),
               title: str | None = None) -> go.Figure:
    """Final validation accuracy per setting: solid bars as trained, hatched bars with BN re-estimated.

    Each result has ``knobs()`` (the bar group's label) and, per start, a run with ``accuracy``
    and ``accuracy_bn`` (lesson 1's ``Comparison``).
    """
    x = [r.knobs() for r in results]
    fig = go.Figure()
    for start in starts:
        colour = COLOURS.get(start, "#7f7f7f")
        runs = [getattr(r, start) for r in results]
        fig.add_bar(x=x, y=[run.accuracy for run in runs], name=_("{start}, as trained").format(start=start),
                    marker_color=colour)
        fig.add_bar(x=x, y=[run.accuracy_bn for run in runs], name=_("{start}, BN re-estimated").format(start=start),
                    marker=dict(color="white", line=dict(color=colour, width=2),
                                pattern=dict(shape="/", fgcolor=colour)))
    fig.update_layout(title=title or _("Pretrained against scratch over the knobs"), barmode="group", height=400,
                      yaxis=dict(title=_("validation accuracy"), range=[0, 1.05]),
                      legend=dict(orientation="h", y=-0.25), margin=dict(l=60, r=30, t=60, b=40))
    return fig
