"""Signal propagation as an interactive figure: the std of every layer's output, one curve per initialisation.

Example:
    >>> from workbench.stability import SignalRow
    >>> rows = [SignalRow("kaiming", True, i, f"layers.{i}", "Conv", 0.0, 1.0 + i) for i in range(3)]
    >>> fig = signal_figure(rows)
    >>> [trace.name for trace in fig.data], fig.data[0].y.tolist()
    (['kaiming'], [1.0, 2.0, 3.0])
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ..i18n import _
from .curves import colour
from .health import log_dtick

PRETRAINED = "pretrained"  # the scheme name of the curve measured on pretrained weights


def signal_figure(rows: Sequence, *, title: str | None = None) -> go.Figure:
    """Std of each numbered layer's output (log axis), one line per scheme, the pretrained curve thick and black.

    ``rows`` are :class:`~workbench.stability.SignalRow` of one BatchNorm setting (the panel
    filters them). A std that collapses towards 0 or grows layer after layer is the problem; 1 is drawn dotted.
    A std of exactly 0 is drawn a decade below the smallest non-zero one (the axis title says where).
    """
    schemes = list(dict.fromkeys(r.scheme for r in rows))
    positive = [r.std for r in rows if r.std > 0]
    floor = 10.0 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1e-12  # where a std of 0 is drawn
    traces = []
    for k, scheme in enumerate(schemes):
        mine = [r for r in rows if r.scheme == scheme]
        special = scheme == PRETRAINED
        traces.append(dict(type="scatter", mode="lines+markers", name=scheme,
                           x=np.array([r.index for r in mine], dtype=float),
                           y=np.array([max(r.std, floor) for r in mine], dtype=float),
                           line=dict(color="black" if special else colour(k), width=4 if special else 2),
                           customdata=[_("{type}: mean {mean:.3g}, std {std:.3g}").format(type=r.type, mean=r.mean,
                                                                                         std=r.std) for r in mine],
                           hovertemplate=_("{scheme}<br>layer %{{x}} %{{customdata}}<extra></extra>").format(
                               scheme=scheme)))
    zeros = any(r.std == 0 for r in rows)
    low = floor if zeros or not positive else min(positive)
    high = max(positive + [1.0])  # 1 is always on the axis (the dotted line)
    bn = {r.batchnorm for r in rows}
    setting = _("with BatchNorm") if bn == {True} else _("without BatchNorm") if bn == {False} else ""
    default = (_("Std of each layer's output on one batch {setting}").format(setting=setting) if setting
               else _("Std of each layer's output on one batch"))
    layout = dict(title=title or default,
                  height=380, margin=dict(l=60, r=30, t=50, b=40), xaxis=dict(title=_("layer index"), dtick=1),
                  yaxis=dict(title=_("std of the output") + (_(" (std 0 drawn at {floor:.0e})").format(floor=floor)
                                                             if zeros else ""),
                             type="log", exponentformat="e", dtick=log_dtick((math.log10(low), math.log10(high)))),
                  shapes=[dict(type="line", xref="paper", x0=0, x1=1, yref="y", y0=1, y1=1,
                               line=dict(color="grey", dash="dot"))])
    return go.Figure(traces, layout)
