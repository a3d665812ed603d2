"""Pure plotting functions: a History (or report) in, a figure out. No widgets here.

Example:
    >>> from workbench import History
    >>> fig = loss_curve(History(loss=[2.0, 1.5, 1.2], epoch=[0, 0, 1]))
    >>> list(fig.data[0].y)
    [2.0, 1.5, 1.2]
"""
from __future__ import annotations

import plotly.graph_objects as go

from .training import History


def loss_curve(history: History, title: str = "Training loss") -> go.Figure:
    """Per-step training loss, with the validation accuracy per epoch on a second axis when recorded."""
    steps = list(range(1, history.step + 1))
    fig = go.Figure(go.Scatter(x=steps, y=history.loss, mode="lines", name="train loss"))
    accuracy = history.val.get("accuracy", [])
    if accuracy:
        ends = _epoch_end_steps(history)[: len(accuracy)]
        fig.add_trace(go.Scatter(x=ends, y=accuracy, mode="lines+markers", name="val accuracy", yaxis="y2"))
        fig.update_layout(yaxis2=dict(title="val accuracy", overlaying="y", side="right", range=[0, 1.05], dtick=0.2))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=320,
                      margin=dict(l=50, r=50, t=40, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def _epoch_end_steps(history: History) -> list[int]:
    """The step number at which each epoch ended."""
    return [k + 1 for k, epoch in enumerate(history.epoch) if k + 1 == len(history.epoch) or history.epoch[k + 1] != epoch]
