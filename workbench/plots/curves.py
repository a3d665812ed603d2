"""Curves over steps: training loss, LR and momentum per group, paired runs, the live training dashboard.

Figures are built from plain dicts in one go (fast enough to redraw on every slider move).

Example:
    >>> from workbench import History
    >>> fig = loss_curve(History(loss=[2.0, 1.5, 1.2], epoch=[0, 0, 1]))
    >>> list(fig.data[0].y)
    [2.0, 1.5, 1.2]
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from ..i18n import N_, _
from ..run_labels import status_label
from ..schedules import Preview
from ..training import History
from .grid import on, side_by_side, stacked
from .health import grad_matrix

PALETTE = qualitative.Plotly + qualitative.Dark24  # 34 distinct colours: many groups (layer-wise decay) stay apart
MARGIN = dict(l=60, r=30, t=50, b=40)


def colour(k: int) -> str:
    """The k-th colour of the workbench's palette (groups and runs keep their colour across figures)."""
    return PALETTE[k % len(PALETTE)]


def epoch_end_steps(history: History) -> list[int]:
    """The step number (1-based) at which each epoch ended."""
    epochs = history.epoch
    return [k + 1 for k, epoch in enumerate(epochs) if k + 1 == len(epochs) or epochs[k + 1] != epoch]


def loss_curve(history: History, title: str | None = None) -> go.Figure:
    """Per-step training loss, with the validation accuracy per epoch on a second axis when recorded."""
    steps = list(range(1, history.step + 1))
    fig = go.Figure(go.Scatter(x=steps, y=history.loss, mode="lines", name=_("train loss")))
    accuracy = history.val.get("accuracy", [])
    if accuracy:
        ends = epoch_end_steps(history)[: len(accuracy)]
        fig.add_trace(go.Scatter(x=ends, y=accuracy, mode="lines+markers", name=_("val accuracy"), yaxis="y2"))
        fig.update_layout(yaxis2=dict(title=_("val accuracy"), overlaying="y", side="right", range=[0, 1.05],
                                      dtick=0.2))
    fig.update_layout(title=title or _("Training loss"), xaxis_title=_("step"), yaxis_title=_("loss"), height=320,
                      margin=dict(l=50, r=50, t=40, b=40), legend=dict(orientation="h", y=-0.25))
    return fig


def _group_names(preview: Preview | None, history: History | None) -> list[str]:
    names = list(preview.lr) if preview is not None else []
    return names + [n for n in (history.lr if history is not None else {}) if n not in names]


def _line(x, y, name: str, k: int, panel: int, dash: str | None = None, **extra) -> dict:
    return dict(type="scatter", x=np.asarray(x), y=np.asarray(y, dtype=float), name=name,
                line=dict(color=colour(k), dash=dash), **on(panel), **{"mode": "lines", **extra})


def coinciding_curves(curves: Mapping[str, np.ndarray]) -> list[list[str]]:
    """Names grouped by equal curves (same length, equal values at every step), in first-seen order.

    Example:
        >>> coinciding_curves({"weight": np.ones(3), "norm": np.ones(3), "bias": np.zeros(3)})
        [['weight', 'norm'], ['bias']]
    """
    classes: list[list[str]] = []
    for name, y in curves.items():
        same = next((c for c in classes if len(curves[c[0]]) == len(y) and np.allclose(curves[c[0]], y)), None)
        if same is None:
            classes.append([name])
        else:
            same.append(name)
    return classes


PREVIEW_EXTRA_WIDTH, PREVIEW_OPACITY = 6.0, 0.3  # the preview: a wide pale band beneath the recorded line
LR_AXIS_TITLE = N_("learning rate (log; 0 not shown)")  # a log axis has no place for the warmup's rate 0


def _source(preview: Preview | None, history: History | None, key: str) -> dict[str, np.ndarray]:
    """Per group, the curve that decides what coincides: the preview's where there is one, else the record."""
    curves = {}
    for name in _group_names(preview, history):
        found = getattr(preview, key) if preview is not None and name in preview.lr else getattr(history, key)
        curves[name] = np.asarray(found[name], dtype=float)
    return curves


def _lr_traces(preview: Preview | None, history: History | None, index: dict[str, int]) -> list[dict]:
    """One line per set of coinciding groups and per source, in the first group's colour, named by all of them."""
    traces = []
    for group in coinciding_curves(_source(preview, history, "lr")):
        label = " = ".join(group)
        mine = []
        for kind, source in ((N_("preview"), preview), (N_("recorded"), history)):
            present = [g for g in group if source is not None and g in source.lr]
            if not present:
                continue
            y = source.lr[present[0]]
            trace = _line(np.arange(len(y)), y, label, index[group[0]], 1, legendgroup=label, showlegend=False,
                          meta=dict(groups=present, kind=kind, value="lr"),
                          hovertemplate=_("{groups}, {kind}<br>iteration %{{x}}: lr %{{y:.6g}}<extra></extra>").format(
                              groups=label, kind=_(kind)))
            trace["line"]["width"] = 2 + PREVIEW_EXTRA_WIDTH if kind == "preview" else 2
            if kind == "preview":
                trace["opacity"] = PREVIEW_OPACITY
            mine.append(trace)
        next((t for t in mine if t["meta"]["kind"] == "recorded"), mine[0])["showlegend"] = True
        traces += mine
    return traces


def _momentum_traces(preview: Preview | None, history: History | None, index: dict[str, int]) -> list[dict]:
    """One momentum line per set of groups that share it (usually one for all), per source."""
    traces = []
    for group in coinciding_curves(_source(preview, history, "momentum")):
        who = _("every group") if len(group) == len(index) else ", ".join(group)
        for kind, source in (("preview", preview), ("recorded", history)):
            present = [g for g in group if source is not None and g in source.momentum]
            if not present:
                continue
            y = source.momentum[present[0]]
            trace = _line(np.arange(len(y)), y, _("momentum, {groups}").format(groups=who), index[group[0]], 2,
                          showlegend=False,
                          meta=dict(groups=present, kind=kind, value="momentum"),
                          hovertemplate=_("momentum of {groups}, {kind}<br>iteration %{{x}}: %{{y:.4f}}<extra></extra>"
                                          ).format(groups=who, kind=_(kind)))
            if len(group) == len(index) > 1:
                trace["line"]["color"] = "#444"
            if kind == "preview":
                trace["line"]["width"], trace["opacity"] = 2 + PREVIEW_EXTRA_WIDTH, PREVIEW_OPACITY
            traces.append(trace)
    return traces


def lr_curves(preview: Preview | None = None, history: History | None = None, *, at: int | None = None,
              title: str | None = None) -> go.Figure:
    """Every group's LR (top) and momentum (bottom) per iteration: the preview a wide pale band, the record a line.

    Groups whose curves coincide are drawn as one line in one colour, named by all of them
    (``"weight = norm"``), so the legend names every group. The LR axis is logarithmic (rates of
    1e-5 and 0.1 both show); a rate of 0 (the start of a warmup) has no place on it and is left out,
    as the axis title says. The momentum is drawn once per set of groups that share it. Each
    trace's ``meta`` says what it is (``groups``, ``kind`` "preview" or "recorded", ``value`` "lr" or "momentum").

    Args:
        preview: ``schedule.preview(groups, nb, epochs)``, the curves before training.
        history: a :class:`History`; its step ``k`` (1-based) ran at iteration ``k - 1``.
        at: an iteration to mark with a vertical line (the last shape; the warmup panel's scrubber moves it).

    Example:
        >>> from workbench import YoloSchedule, build_model, param_groups
        >>> preview = YoloSchedule("ultralytics").preview(param_groups(build_model(), 0.01), nb=10, epochs=5)
        >>> fig = lr_curves(preview, at=3)
        >>> [trace.name for trace in fig.data if trace.showlegend]  # weight and norm share one curve
        ['weight = norm', 'bias']
        >>> [(t.meta["groups"], float(t.y[0])) for t in fig.data if t.meta["value"] == "lr"]  # iteration 0
        [(['weight', 'norm'], 0.0), (['bias'], 0.1)]
        >>> fig.layout.yaxis.type, fig.layout.yaxis.title.text
        ('log', 'learning rate (log; 0 not shown)')
    """
    if preview is None and history is None:
        raise ValueError("lr_curves needs a preview (schedule.preview(...)), a History, or both")
    index = {name: k for k, name in enumerate(_group_names(preview, history))}
    traces = _lr_traces(preview, history, index) + _momentum_traces(preview, history, index)
    layout = stacked([0.65, 0.35], gap=0.08)
    layout["yaxis"].update(title=_(LR_AXIS_TITLE), type="log", dtick=1, exponentformat="power")  # one label a decade
    layout["yaxis2"]["title"] = _("momentum")
    layout["xaxis2"]["title"] = _("iteration")
    shapes, notes = [], []
    if preview is not None and preview.warmup:
        shapes.append(dict(type="rect", xref="x", yref="paper", x0=0, x1=preview.warmup, y0=0, y1=1,
                           fillcolor="#888", opacity=0.12, line_width=0, layer="below"))
        notes.append(dict(text=_("warmup ({n} it)").format(n=preview.warmup), x=0, xref="x", y=1, yref="paper",
                          xanchor="left",
                          yanchor="bottom", showarrow=False))
    if preview is not None and history is not None:
        notes.append(dict(text=_("wide pale band: preview · thin line: recorded"), x=1, xref="paper", y=1,
                          yref="paper", xanchor="right", yanchor="bottom", showarrow=False))
    if at is not None:
        shapes.append(dict(type="line", xref="x", yref="paper", x0=at, x1=at, y0=0, y1=1,
                           line=dict(color="black", width=1.5)))
    title = title or _("Learning rate and momentum per parameter group")
    layout.update(title=title, height=460, margin=MARGIN, legend=dict(orientation="h", y=-0.18), shapes=shapes,
                  annotations=notes)
    return go.Figure(traces, layout)


def _smooth(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (the first steps average what there is)."""
    y = np.asarray(values, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    total = np.cumsum(np.insert(y, 0, 0.0))
    k = np.arange(1, len(y) + 1)
    start = np.maximum(k - window, 0)
    return (total[k] - total[start]) / (k - start)


def shared_points(a, b) -> int:
    """How many of the first ``min(len(a), len(b))`` values two curves have exactly in common.

    Example:
        >>> shared_points([0.5, 0.7, 0.9], [0.5, 0.7, 0.6, 0.8])
        2
    """
    n = min(len(a), len(b))
    return int(np.sum(np.asarray(a[:n], dtype=float) == np.asarray(b[:n], dtype=float)))


def _overlaps(curves: Mapping[str, list[float]], each: str) -> dict[str, str]:
    """Per run, the hover note naming the runs drawn on the same points (e.g. a staged run while still frozen);
    ``each`` words one such run (``{run}``, ``{count}`` points of ``{n}``)."""
    notes = {}
    for name, y in curves.items():
        same = [each.format(run=other, count=count, n=min(len(y), len(curves[other]))) for other in curves
                if other != name and (count := shared_points(y, curves[other]))]
        notes[name] = _("<br>same as {runs}").format(runs="; ".join(same)) if same else ""
    return notes


def compare_runs(runs: Mapping[str, History], *, smooth: int = 1, title: str | None = None) -> go.Figure:
    """Training loss per step (left) and validation accuracy per epoch (right) of several runs, overlaid.

    Runs that share points (a staged run is its frozen twin until it unfreezes) stay visible: when
    any two coincide somewhere, each run is drawn wider than the next (the first widest), and the
    hover names the runs on the same points.

    Example:
        >>> from workbench import History
        >>> runs = {"pretrained": History(loss=[1.0, 0.5], epoch=[0, 0], val={"accuracy": [0.9]}),
        ...         "scratch": History(loss=[1.1, 1.0], epoch=[0, 0], val={"accuracy": [0.4]})}
        >>> [trace.name for trace in compare_runs(runs).data]
        ['pretrained', 'pretrained', 'scratch', 'scratch']
    """
    if not runs:
        raise ValueError("compare_runs needs at least one run: {name: History}")
    losses = {name: list(_smooth(h.loss, smooth)) for name, h in runs.items()}
    accuracies = {name: list(h.val.get("accuracy", [])) for name, h in runs.items()}
    loss_notes = _overlaps(losses, _("{run} at {count} of {n} steps"))
    accuracy_notes = _overlaps(accuracies, _("{run} at {count} of {n} epochs"))
    stacked_runs = any(loss_notes.values()) or any(accuracy_notes.values())
    traces = []
    for k, name in enumerate(runs):
        extra = len(runs) - 1 - k if stacked_runs else 0
        loss = _line(np.arange(1, len(losses[name]) + 1), losses[name], name, k, 1, legendgroup=name,
                     hovertemplate=_("{run}<br>step %{{x}}: loss %{{y:.4g}}{note}<extra></extra>").format(
                         run=name, note=loss_notes[name]))
        accuracy = _line(np.arange(1, len(accuracies[name]) + 1), accuracies[name], name, k, 2, legendgroup=name,
                         showlegend=False, mode="lines+markers", marker=dict(size=6 + 4 * extra),
                         hovertemplate=_("{run}<br>epoch %{{x}}: accuracy %{{y:.3f}}{note}<extra></extra>").format(
                             run=name, note=accuracy_notes[name]))
        for trace in (loss, accuracy):
            trace["line"]["width"] = 1.5 + 2.0 * extra
        traces += [loss, accuracy]
    loss_title = _("training loss") + (_(" (mean of {n} steps)").format(n=smooth) if smooth > 1 else "")
    layout = side_by_side(2, titles=(loss_title, _("validation accuracy")))
    layout["xaxis"]["title"], layout["yaxis"]["title"] = _("step"), _("loss")
    layout["xaxis2"].update(title=_("epoch"), dtick=1)
    layout["yaxis2"]["range"] = [0, 1.02]
    layout.update(title=title or _("Runs on the same seed and data"), height=360, margin=MARGIN,
                  legend=dict(orientation="h", y=-0.2))
    return go.Figure(traces, layout)


def training_dashboard(history: History, *, max_columns: int = 300, title: str | None = None) -> go.Figure:
    """The live view of a run: loss, LR per group, and per-layer gradient norms (log10) over the steps.

    Groups whose LR curves coincide are drawn as one line, named by all of them (``"lr weight = norm"``),
    so no group's line hides under another's.

    Example:
        >>> from workbench import History
        >>> h = History(loss=[2.0, 1.0], epoch=[0, 0], lr={"weight": [0.0, 0.01], "norm": [0.0, 0.01],
        ...             "bias": [0.1, 0.01]}, layer_names=["a", "b"], layer_grad_norms=[[1.0, 10.0], [0.1, 0.0]])
        >>> fig = training_dashboard(h)
        >>> [(trace.type, trace.name) for trace in fig.data]
        [('scatter', 'loss'), ('scatter', 'lr weight = norm'), ('scatter', 'lr bias'), ('heatmap', 'log10 grad norm')]
    """
    traces = [dict(type="scatter", mode="lines", x=np.arange(1, history.step + 1), y=np.asarray(history.loss),
                   name=_("loss"), line=dict(color="#333"))]
    index = {name: k for k, name in enumerate(history.lr)}
    for group in coinciding_curves({name: np.asarray(v, dtype=float) for name, v in history.lr.items()}):
        values, label = history.lr[group[0]], _("lr {group}").format(group=" = ".join(group))
        traces.append(_line(np.arange(1, len(values) + 1), values, label, index[group[0]], 2,
                            meta=dict(groups=group, value="lr")))
    x, z, names = grad_matrix(history, max_columns)
    traces.append(dict(type="heatmap", x=x, y=names, z=z, colorscale="Viridis", name=_("log10 grad norm"),
                       colorbar=dict(title="log10 |g|", len=0.45, y=0.22),
                       hovertemplate=_("step %{x}<br>%{y}<br>log10 |g| = %{z:.2f}<extra></extra>"), **on(3)))
    layout = stacked([0.3, 0.25, 0.45], gap=0.06)
    layout["yaxis"]["title"] = _("loss")
    layout["yaxis2"].update(title=_("lr"), rangemode="tozero", exponentformat="e")
    layout["yaxis3"].update(title=_("layer"), autorange="reversed")
    layout["xaxis3"]["title"] = _("step")
    status = _("{status}: step {step}, epoch {epoch}").format(status=status_label(history.status),
                                                              step=history.step, epoch=history.epochs_done)
    layout.update(title=title or status, height=620, margin=MARGIN, legend=dict(orientation="h", y=-0.08))
    return go.Figure(traces, layout)
