"""Figures of the lessons' experiment results (duck-typed: any object with the fields named below).

Example:
    >>> from types import SimpleNamespace as NS
    >>> run = NS(accuracy=0.9, accuracy_bn=0.95)
    >>> result = NS(knobs=lambda: "shapes", pretrained=run, scratch=NS(accuracy=0.3, accuracy_bn=0.6))
    >>> [list(t.y) for t in sweep_bars([result]).data]
    [[0.9], [0.95], [0.3], [0.6]]
"""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

COLOURS = {"pretrained": "#1f77b4", "scratch": "#ff7f0e"}


def sweep_bars(results: Sequence, starts: Sequence[str] = ("pretrained", "scratch"),
               title: str = "Pretrained against scratch over the knobs") -> go.Figure:
    """Final validation accuracy per setting: solid bars as trained, hatched bars with BN re-estimated.

    Each result has ``knobs()`` (the bar group's label) and, per start, a run with ``accuracy``
    and ``accuracy_bn`` (lesson 1's ``Comparison``).
    """
    x = [r.knobs() for r in results]
    fig = go.Figure()
    for start in starts:
        colour = COLOURS.get(start, "#7f7f7f")
        runs = [getattr(r, start) for r in results]
        fig.add_bar(x=x, y=[run.accuracy for run in runs], name=f"{start}, as trained", marker_color=colour)
        fig.add_bar(x=x, y=[run.accuracy_bn for run in runs], name=f"{start}, BN re-estimated",
                    marker=dict(color="white", line=dict(color=colour, width=2),
                                pattern=dict(shape="/", fgcolor=colour)))
    fig.update_layout(title=title, barmode="group", height=400, yaxis=dict(title="validation accuracy",
                                                                         range=[0, 1.05]),
                      legend=dict(orientation="h", y=-0.25), margin=dict(l=60, r=30, t=60, b=40))
    return fig
