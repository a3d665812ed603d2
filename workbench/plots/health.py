"""How healthy a run is: per-layer gradient norms, weight and BatchNorm drift, signal propagation at init.

Example:
    >>> from workbench import History
    >>> h = History(loss=[1.0, 1.0], epoch=[0, 0], grad_norm=[20.0, 5.0], clip_coef=[0.49999997, 1.0],
    ...             layer_names=["a"], layer_grad_norms=[[20.0], [5.0]])
    >>> grad_heatmap(h).layout.shapes[0].y0  # the clip line, read from the clipped step
    10.0
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure as MplFigure
from plotly.colors import qualitative

from ..freezing import BNDrift
from ..i18n import _
from ..training import History
from .fonts import font_rc
from .grid import on, stacked

MARGIN = dict(l=60, r=30, t=50, b=40)


def grad_matrix(history: History, max_columns: int = 300) -> tuple[list[int], list[list[float]], list[str]]:
    """Per-layer gradient norms as ``(steps, log10 norms [layer][column], layer names)``, ready for a heatmap.

    A zero norm (a frozen layer has no gradient) becomes ``None``, shown as a gap (``None``, not
    NaN: a live figure sends its data as JSON, which has no NaN). Runs longer than
    ``max_columns`` steps are binned: each column holds its bin's largest norm (spikes stay
    visible) and is labelled with the bin's last step.
    """
    norms = np.asarray(history.layer_grad_norms, dtype=float).reshape(len(history.layer_grad_norms),
                                                                      len(history.layer_names))
    n = len(norms)
    if n > max_columns:
        bins = np.array_split(np.arange(n), max_columns)
        norms = np.stack([norms[b].max(0) for b in bins])
        steps = [int(b[-1]) + 1 for b in bins]
    else:
        steps = list(range(1, n + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(norms > 0, np.log10(norms), np.nan).T
    z = [[None if math.isnan(v) else v for v in row] for row in z.tolist()]
    return steps, z, list(history.layer_names)


def clip_value(history: History) -> float | None:
    """The clipping threshold of a run: ``history.clip`` if recorded, else read from a clipped step."""
    if getattr(history, "clip", None):
        return float(history.clip)
    clipped = [(c, g) for c, g in zip(history.clip_coef, history.grad_norm) if c < 1.0]
    return float(f"{clipped[0][0] * (clipped[0][1] + 1e-6):.6g}") if clipped else None


def shared_scale(histories: Mapping[str, History] | Sequence[History]) -> dict:
    """One colour scale and one total-norm range for several runs' :func:`grad_heatmap`: ``{"zrange", "norm_range"}``.

    ``zrange`` spans every run's log10 per-layer norms, ``norm_range`` (log10) every run's total
    norms: pass both to :func:`grad_heatmap` (``grad_heatmap(h, **shared_scale(runs))``) so that a
    brighter cell, or a higher line, means a larger gradient across the figures.

    Example:
        >>> a = History(grad_norm=[1.0], clip_coef=[1.0], layer_names=["a"], layer_grad_norms=[[1.0]])
        >>> b = History(grad_norm=[100.0], clip_coef=[1.0], layer_names=["a"], layer_grad_norms=[[100.0]])
        >>> shared_scale([a, b])["zrange"]
        (0.0, 2.0)
    """
    runs = list(histories.values()) if isinstance(histories, Mapping) else list(histories)
    cells = np.asarray([v for h in runs for step in h.layer_grad_norms for v in step], dtype=float)
    totals = np.asarray([g for h in runs for g in h.grad_norm], dtype=float)
    cells, totals = cells[np.isfinite(cells) & (cells > 0)], totals[np.isfinite(totals) & (totals > 0)]
    if not len(cells) or not len(totals):
        raise ValueError("shared_scale needs runs with recorded gradient norms (History from fit)")
    zrange = (float(np.log10(cells.min())), float(np.log10(cells.max())))
    low, high = np.log10(totals.min()), np.log10(totals.max())
    return {"zrange": zrange, "norm_range": (float(low - 0.1), float(high + 0.1))}


def _log_span(values) -> tuple[float, float]:
    """log10 of the smallest and largest positive finite value (0, 0 when there is none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return (float(np.log10(values.min())), float(np.log10(values.max()))) if len(values) else (0.0, 0.0)


def log_dtick(span: tuple[float, float]) -> int | str:
    """Ticks of a short log axis: a label per decade when it spans two or more (labels never crowd), else 1-2-5."""
    return 1 if span[1] - span[0] >= 2 else "D2"


def grad_heatmap(history: History, *, clip: float | str | None = "auto", max_columns: int = 300,
                 title: str | None = None, zrange: tuple[float, float] | None = None,
                 norm_range: tuple[float, float] | None = None) -> go.Figure:
    """Per-layer gradient L2 norms (layers x steps, log10 colour) above the total norm with the clip line.

    Args:
        history: a :class:`History` from :func:`fit` (``layer_grad_norms``, ``grad_norm``, ``clip_coef``).
        clip: the clipping threshold to draw; ``"auto"`` reads it from the run, ``None`` draws none.
        max_columns: longer runs are binned to this many columns (the largest norm of each bin).
        zrange, norm_range: fixed log10 ranges of the colour scale and the total-norm axis, to compare
            figures (:func:`shared_scale`); ``None``: this run's own.
    """
    clip = clip_value(history) if clip == "auto" else clip
    x, z, names = grad_matrix(history, max_columns)
    steps, norms = np.arange(1, len(history.grad_norm) + 1), np.asarray(history.grad_norm, dtype=float)
    scale = dict(zmin=zrange[0], zmax=zrange[1]) if zrange is not None else {}
    traces = [dict(type="heatmap", x=x, y=names, z=z, colorscale="Viridis", name=_("log10 grad norm"), **scale,
                   colorbar=dict(title="log10 |g|", len=0.65, y=0.68),
                   hovertemplate=_("step %{x}<br>%{y}<br>log10 |g| = %{z:.2f}<extra></extra>")),
              dict(type="scatter", mode="lines", x=steps, y=norms, name=_("total norm"), line=dict(color="#333"),
                   **on(2))]
    clipped = [k for k, c in enumerate(history.clip_coef) if c < 1.0]
    if clipped:
        traces.append(dict(type="scatter", mode="markers", x=steps[clipped], y=norms[clipped], **on(2),
                           name=_("clipped ({n} steps)").format(n=len(clipped)), marker=dict(color="#d62728", size=5)))
    layout = stacked([0.68, 0.32], gap=0.07)
    layout["yaxis"].update(title=_("layer"), autorange="reversed")
    shown = norm_range if norm_range is not None else _log_span(norms)
    layout["yaxis2"].update(title=_("total |g|"), type="log", dtick=log_dtick(shown), exponentformat="power",
                            **({"range": list(norm_range)} if norm_range is not None else {}))
    layout["xaxis2"]["title"] = _("step")
    shapes, notes = [], []
    if clip:
        shapes.append(dict(type="line", xref="paper", yref="y2", x0=0, x1=1, y0=clip, y1=clip,
                           line=dict(color="#d62728", dash="dash")))
        notes.append(dict(text=_("clip {clip:g}").format(clip=clip), xref="paper", yref="y2", x=1, y=math.log10(clip),
                          xanchor="right",
                          yanchor="bottom", showarrow=False, font=dict(color="#d62728")))
    layout.update(title=title or _("Gradient norms per layer"), height=520, margin=MARGIN,
                  legend=dict(orientation="h", y=-0.15), shapes=shapes,
                  annotations=notes)
    return go.Figure(traces, layout)


def loss_plot(history: History, *, title: str | None = None) -> go.Figure:
    """The training loss per step on a log axis, so a final spike does not flatten the rest; a stop is marked.

    A run that ended on a non-finite value gets a dashed line at that step, labelled with the layer
    :attr:`History.non_finite` names.

    Example:
        >>> fig = loss_plot(History(loss=[1.1, 1.0, 80.0], epoch=[0, 0, 0]))
        >>> fig.layout.yaxis.type, list(fig.data[0].y)
        ('log', [1.1, 1.0, 80.0])
    """
    if not history.loss:
        raise ValueError("loss_plot needs a History with recorded steps (from fit)")
    steps = list(range(1, len(history.loss) + 1))
    fig = go.Figure(go.Scatter(x=steps, y=history.loss, mode="lines+markers", marker=dict(size=4), name=_("loss"),
                               hovertemplate=_("step %{x}<br>loss %{y:.4g}<extra></extra>")))
    bad = history.non_finite
    if bad is not None:
        fig.add_vline(x=bad.step, line=dict(color="#d62728", dash="dash"),
                      annotation=dict(text=_("non-finite at step {step} ({where})").format(step=bad.step,
                                                                                    where=bad.layer or bad.kind),
                                      font=dict(color="#d62728")), annotation_position="top left")
    fig.update_layout(title=title or _("Training loss (log axis)"), height=320, margin=MARGIN, xaxis_title=_("step"),
                      showlegend=False, yaxis=dict(title=_("loss"), type="log",
                                                   dtick=log_dtick(_log_span(history.loss)),
                                 exponentformat="power"))
    return fig


def _as_runs(drift: Mapping) -> dict[str, Mapping]:
    """``{layer: value}`` becomes ``{"": {layer: value}}``; ``{run: {layer: value}}`` is kept."""
    if not isinstance(drift, Mapping) or not drift:
        raise ValueError("pass drift as {layer: value} (weight_drift(model, start)) or {run: {layer: value}}")
    nested = [isinstance(v, (Mapping, BNDrift)) for v in drift.values()]
    if any(nested) and not all(nested):
        raise ValueError("drift mixes runs ({run: {layer: value}}) and layers ({layer: value}): use one form")
    return dict(drift) if all(nested) else {"": drift}


def drift_bars(drift: Mapping, *, measure: str | None = None, title: str | None = None) -> go.Figure:
    """Bars per layer of :func:`~workbench.monitor.weight_drift` (or any ``{layer: value}``), runs side by side.

    Example:
        >>> fig = drift_bars({"pretrained": {"layers.0": 0.01, "layers.9": 0.3},
        ...                   "scratch": {"layers.0": 0.5, "layers.9": 0.9}})
        >>> [trace.name for trace in fig.data], list(fig.data[1].y)
        (['pretrained', 'scratch'], [0.5, 0.9])
    """
    runs = _as_runs(drift)
    measure = measure or _("weight drift ||W - W0|| / ||W0||")
    fig = go.Figure()
    for k, (run, values) in enumerate(runs.items()):
        fig.add_trace(go.Bar(x=list(values), y=list(values.values()), name=run or measure,
                             marker_color=qualitative.Plotly[k % 10],
                             hovertemplate="%{x}<br>%{y:.4g}<extra>" + (run or "") + "</extra>"))
    fig.update_layout(title=title or _("How far each layer moved from its start"), barmode="group", height=340,
                      margin=MARGIN, yaxis_title=measure, xaxis_title=_("layer"), showlegend=len(runs) > 1)
    return fig


def bn_drift_bars(drift: BNDrift | Mapping[str, BNDrift], *,
                  title: str | None = None) -> go.Figure:
    """Mean shift (in starting standard deviations) and variance change of every BatchNorm, per run.

    ``drift`` is :func:`~workbench.bn_drift` ``(model, start)`` or ``{run: bn_drift(...)}``.

    Example:
        >>> from workbench.freezing import BNDrift, BNDriftRow
        >>> rows = BNDrift([BNDriftRow("layers.0.bn", 0, 0.5, 0.2, 3)])
        >>> list(bn_drift_bars(rows).data[0].y)
        [0.5]
    """
    runs = {"": drift} if isinstance(drift, BNDrift) else _as_runs(drift)
    traces = []
    for k, (run, rows) in enumerate(runs.items()):
        names = [r.name for r in rows]
        style = dict(type="bar", x=names, name=run or _("BatchNorm"), legendgroup=run,
                     marker_color=qualitative.Plotly[k % 10])
        traces.append(dict(y=[r.mean_shift for r in rows], **style))
        traces.append(dict(y=[r.var_change for r in rows], showlegend=False, **style, **on(2)))
    layout = stacked([1, 1], gap=0.1)
    layout["yaxis"]["title"], layout["yaxis2"]["title"] = _("mean shift (std0)"), _("variance change")
    layout.update(title=title or _("BatchNorm running statistics: how far they moved"), barmode="group", height=460,
                  margin=MARGIN, showlegend=len(runs) > 1)
    return go.Figure(traces, layout)


SIGNAL_MARKERS, SIGNAL_DASHES = ("o", "s", "^", "D", "v", "P"), ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))


def signal_style(k: int) -> tuple[str, object]:
    """The k-th scheme's ``(marker, linestyle)``: distinct for the first 30 schemes (6 markers x 5 dashes).

    Example:
        >>> [signal_style(k) for k in range(3)]
        [('o', '-'), ('s', '--'), ('^', '-.')]
    """
    return SIGNAL_MARKERS[k % len(SIGNAL_MARKERS)], SIGNAL_DASHES[k % len(SIGNAL_DASHES)]


def signal_plot(rows: Sequence, *, title: str | None = None) -> MplFigure:
    """The std of every layer's output right after each initialisation (matplotlib): one panel per BatchNorm setting.

    ``rows`` are :func:`~workbench.stability.signal_propagation` rows (``scheme``, ``batchnorm``,
    ``index``, ``std``), on a log axis, each scheme with its own marker and dash so that curves in
    one band (with BatchNorm every scheme sits near 1) stay visible; a std of exactly 0 is drawn on
    the dashed "std 0" line, a decade below the smallest non-zero std. A std that collapses towards 0
    or explodes with depth is the problem.

    Example:
        >>> from workbench.stability import SignalRow
        >>> rows = [SignalRow("kaiming", False, i, f"layers.{i}", "Conv", 0.0, 1.0) for i in range(3)]
        >>> len(signal_plot(rows).axes)
        1
    """
    if not rows:
        raise ValueError("signal_plot needs rows from workbench.stability.signal_propagation(...)")
    import matplotlib  # here, not at import: pyplot picks the notebook's backend
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(font_rc()):  # Chinese glyphs when the language is Chinese
        return _signal_axes(plt, rows, title or _("Signal propagation at initialisation"))


def _signal_axes(plt, rows: Sequence, title: str) -> MplFigure:
    """The figure of :func:`signal_plot`, built under the fonts of the current language."""
    positive = [r.std for r in rows if r.std > 0]
    floor = 10 ** math.floor(math.log10(min(positive)) - 1) if positive else 1e-12  # where a std of 0 is drawn
    settings = sorted({r.batchnorm for r in rows}, reverse=True)
    fig = plt.figure(figsize=(5.2 * len(settings), 3.6), layout="constrained")
    plt.close(fig)  # returned, not drawn twice: Jupyter shows the returned figure once
    axes = fig.subplots(1, len(settings), sharey=True, squeeze=False)[0]
    style = {s: signal_style(k) for k, s in enumerate(dict.fromkeys(r.scheme for r in rows))}  # same in every panel
    for ax, bn in zip(axes, settings):
        schemes = list(dict.fromkeys(r.scheme for r in rows if r.batchnorm == bn))
        for scheme in schemes:
            mine = [r for r in rows if r.batchnorm == bn and r.scheme == scheme]
            marker, dash = style[scheme]
            ax.plot([r.index for r in mine], [max(r.std, floor) for r in mine], marker=marker, ls=dash, ms=5,
                    mfc="none", label=scheme)  # hollow markers and own dashes: coinciding curves stay visible
        ax.set_yscale("log")
        ax.axhline(floor, color="grey", lw=0.8, ls="--")
        ax.annotate(_("std 0"), (0, floor), xytext=(2, 2), textcoords="offset points", fontsize=7, color="grey")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_title(_("with BatchNorm") if bn else _("without BatchNorm"))
        ax.set_xlabel(_("layer index"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(_("std of the layer's output"))
    axes[-1].legend(title=_("init"), fontsize=8)
    fig.suptitle(title)
    return fig
