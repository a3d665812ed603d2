"""Axes for several panels in one figure, as plain layout dicts (much faster to build than ``make_subplots``).

Example:
    >>> layout = stacked([2, 1])
    >>> layout["yaxis"]["domain"][1], layout["xaxis2"]["matches"]
    (1.0, 'x')
"""
from __future__ import annotations

from collections.abc import Sequence


def on(k: int) -> dict:
    """The trace keywords that put a trace on panel ``k`` (1-based)."""
    return {} if k == 1 else {"xaxis": f"x{k}", "yaxis": f"y{k}"}


def _suffix(k: int) -> str:
    return "" if k == 1 else str(k)


def stacked(heights: Sequence[float], gap: float = 0.07) -> dict:
    """Rows from top to bottom, sharing the x axis (tick labels on the bottom row only)."""
    free, total, top, layout = 1.0 - gap * (len(heights) - 1), sum(heights), 1.0, {}
    for k, height in enumerate(heights, 1):
        size = free * height / total
        s = _suffix(k)
        layout[f"yaxis{s}"] = dict(domain=[round(max(top - size, 0.0), 4), round(top, 4)], anchor=f"x{s}")
        layout[f"xaxis{s}"] = dict(anchor=f"y{s}", showticklabels=k == len(heights))
        if k > 1:
            layout[f"xaxis{s}"]["matches"] = "x"
        top -= size + gap
    return layout


def side_by_side(n: int, gap: float = 0.1, titles: Sequence[str] = ()) -> dict:
    """``n`` panels from left to right, each with its own axes; ``titles`` become annotations above them."""
    width, layout, notes = (1.0 - gap * (n - 1)) / n, {}, []
    for k in range(1, n + 1):
        left = (k - 1) * (width + gap)
        s = _suffix(k)
        layout[f"xaxis{s}"] = dict(domain=[round(left, 4), round(left + width, 4)], anchor=f"y{s}")
        layout[f"yaxis{s}"] = dict(anchor=f"x{s}")
        if k <= len(titles):
            notes.append(dict(text=titles[k - 1], x=left + width / 2, y=1.0, xref="paper", yref="paper",
                              xanchor="center", yanchor="bottom", showarrow=False))
    layout["annotations"] = notes
    return layout
