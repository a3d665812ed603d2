"""The studio's one figure: rows are the model's numbered layers, columns what happens to each, steps below.

Top, one row per layer shared across columns: the transfer status from the ledger (left out
without a source), frozen or trainable with the BatchNorm policy, the gradient-norm heatmap
(layers x steps, log10; frozen cells blank, the first non-finite layer marked) and the weight
drift since the start. Below, on the heatmap's step axis: the total gradient norm with the clip
line and the clip coefficient, every group's LR (preview dashed, record solid, "now"), the loss
with the validation metric, and the freeze-depth timeline with a mark at every change.

Example:
    >>> from workbench import History, build_model
    >>> rows = layer_rows(build_model(nc=3))
    >>> h = History(loss=[1.0, 0.9], epoch=[0, 0], grad_norm=[2.0, 1.0], clip_coef=[1.0, 1.0], depth=[2, 2],
    ...             layer_names=[r.name for r in rows], layer_grad_norms=[[1.0] * 10, [10.0] * 10])
    >>> steps, z = grad_rows(rows, h)
    >>> z[0].tolist(), z[2].tolist()  # layer 0 frozen (a gap), layer 2 trainable: log10 of its norms
    ([nan, nan], [0.0, 1.0])
    >>> fig = studio_figure(rows, h, depth=2)  # the heatmap holds them cell by cell
    >>> heatmap = next(t for t in fig.data if t.type == "heatmap")
    >>> heatmap.z[4:6].tolist(), heatmap.y[4:6].tolist(), heatmap.x[4:6].tolist()
    ([0.0, 1.0], [2.0, 2.0], [1.0, 2.0])
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..i18n import N_, _
from ..layers import numbered_layers
from ..monitor import OTHER
from ..run_labels import metric_label, status_label
from ..schedules import Preview
from ..training import History
from ..transfer import TransferReport
from .curves import coinciding_curves, colour, epoch_end_steps
from .health import clip_value

TRANSFER_COLOURS = {"transferred": "#2ca02c", "partial": "#e6b422", "adapted": "#4c78a8",
                    N_("re-initialised"): "#d62728"}  # the studio's own word; the ledger's statuses stay as named
FREEZE_COLOURS = {N_("frozen"): "#4c78a8", N_("trainable"): "#f58518", N_("no parameters"): "#d0d0d0"}
TOP, GAP = 0.5, 0.035  # the layer rows fill the figure above TOP; step panels below, GAP apart
STEP_PANELS = (("norm", 0.3), ("lr", 0.27), ("loss", 0.25), ("depth", 0.18))


@dataclass(frozen=True)
class LayerRow:
    """One numbered layer as a row of the studio: index, state_dict prefix, type, parameters, BatchNorm inside."""

    index: int
    name: str
    type: str
    params: int
    batchnorm: bool

    @property
    def label(self) -> str:
        return f"{self.index} {self.type}"


def layer_rows(model: nn.Module) -> list[LayerRow]:
    """The studio's rows: one per numbered layer of any ``nn.Module``."""
    return [LayerRow(layer.index, layer.name, layer.type, sum(p.numel() for p in layer.module.parameters()),
                     any(isinstance(m, _BatchNorm) for m in layer.module.modules()))
            for layer in numbered_layers(model)]


def layer_transfer_status(report: TransferReport) -> dict[int, str]:
    """Per layer index: ``transferred`` (every entry), ``partial`` (some, or class rows by name),
    ``adapted`` (input channels), or ``re-initialised`` (nothing came from the source)."""
    found = {}
    for s in report.by_layer():
        if s.adapted:
            found[s.index] = "adapted"
        elif s.transferred == s.items:
            found[s.index] = "transferred"
        elif s.transferred or s.partial:
            found[s.index] = "partial"
        else:
            found[s.index] = "re-initialised"
    return found


def history_until(history: History, step: int) -> History:
    """The run as it stood after ``step`` steps (the replay's frames): per-step lists cut, epochs ended by then."""
    step = max(0, min(step, history.step))
    ends = [e for e in epoch_end_steps(history) if e <= step]
    done = len(ends) if step < history.step else history.epochs_done
    cut = dict(loss=history.loss[:step], epoch=history.epoch[:step], grad_norm=history.grad_norm[:step],
               clip_coef=history.clip_coef[:step], depth=history.depth[:step],
               layer_grad_norms=history.layer_grad_norms[:step], lr={k: v[:step] for k, v in history.lr.items()},
               momentum={k: v[:step] for k, v in history.momentum.items()},
               val={k: v[:done] for k, v in history.val.items()}, events=[e for e in history.events if e[0] <= step],
               epochs_done=done, status=history.status if step == history.step else "replay")
    if history.non_finite is not None and step < history.step:  # it failed after the last recorded step
        cut["non_finite"] = None
    return replace(history, **cut)


def row_labels(rows: Sequence[LayerRow], history: History) -> list[str]:
    """Row labels top to bottom; ``(other)`` last when the run measured parameters outside every layer."""
    return [r.label for r in rows] + ([OTHER] if OTHER in history.layer_names else [])


def _row_of(rows: Sequence[LayerRow], name: str) -> int | None:
    by_name = {r.name: k for k, r in enumerate(rows)}
    if name in by_name:
        return by_name[name]
    if name == OTHER:
        return len(rows)
    return 0 if len(rows) == 1 else None  # a model that is one layer: the monitor names it by its class


def grad_rows(rows: Sequence[LayerRow], history: History, max_columns: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, z)``: log10 gradient norm, ``z[row, column]``; NaN where frozen (``History.depth``) or no
    gradient. Longer runs are binned to ``max_columns`` columns holding each bin's largest norm."""
    labels = row_labels(rows, history)
    n = len(history.layer_grad_norms)
    norms = np.full((n, len(labels)), np.nan)
    measured = np.asarray(history.layer_grad_norms, dtype=float).reshape(n, len(history.layer_names))
    for j, name in enumerate(history.layer_names):
        k = _row_of(rows, name)
        if k is not None:
            norms[:, k] = measured[:, j]
    depth = np.asarray(history.depth[:n] + [0] * (n - len(history.depth)), dtype=float)
    index = np.array([r.index for r in rows] + [math.inf] * (len(labels) - len(rows)))
    norms[index[None, :] < depth[:, None]] = np.nan  # frozen at that step
    norms[~(norms > 0)] = np.nan
    steps = np.arange(1, n + 1, dtype=float)
    if n > max_columns:
        bins = np.array_split(np.arange(n), max_columns)
        with np.errstate(all="ignore"):
            norms = np.stack([np.fmax.reduce(norms[b], axis=0) for b in bins])
        steps = np.array([b[-1] + 1 for b in bins], dtype=float)
    with np.errstate(all="ignore"):
        return steps, np.log10(norms).T


def heatmap_cells(steps: np.ndarray, z: np.ndarray) -> dict:
    """The heatmap as one cell per (row, step), flat float arrays: a live figure sends them as binary arrays,
    which keep NaN (a gap), where JSON has no NaN and lists of ``None`` cost a deep copy per value."""
    rows, columns = np.meshgrid(np.arange(z.shape[0], dtype=float), steps, indexing="ij")
    return dict(x=columns.ravel(), y=rows.ravel(), z=np.ascontiguousarray(z, dtype=float).ravel())


def _column_markers(labels, states, colours, hover, axis: int, text=None) -> list[dict]:
    """One square marker per row, one trace per state (the legend names the states)."""
    traces = []
    for state, col in colours.items():
        mine = [k for k, s in enumerate(states) if s == state]
        traces.append(dict(type="scatter", mode="markers+text", x=np.zeros(len(mine)), y=np.array(mine, dtype=float),
                           marker=dict(symbol="square", size=15, color=col), name=_(state), legendgroup=f"col{axis}",
                           text=[text[k] for k in mine] if text else None, textposition="middle right",
                           textfont=dict(size=9), showlegend=bool(mine), hovertext=[hover[k] for k in mine],
                           hovertemplate="%{hovertext}<extra></extra>", xaxis=f"x{axis}", yaxis=f"y{axis}"))
    return traces


def transfer_column(rows, labels, report: TransferReport) -> list[dict]:
    status = layer_transfer_status(report)
    summary = {s.index: s for s in report.by_layer()}
    states = [status.get(r.index) for r in rows]
    hover = [_("layer {layer}: {state}").format(layer=r.label,
                                                state=_(status[r.index]) if r.index in status else _("no state")) + (
        _("<br>{transferred}/{items} items, {coverage:.0f}% of parameter values copied").format(
            transferred=summary[r.index].transferred, items=summary[r.index].items,
            coverage=100 * summary[r.index].coverage) if r.index in summary else "")
        for r in rows]
    return _column_markers(labels, states, TRANSFER_COLOURS, hover, 4)


def freeze_column(rows, labels, depth: int, bn: str) -> list[dict]:
    states = ["no parameters" if not r.params else "frozen" if r.index < depth else "trainable" for r in rows]
    badges = [bn if s == "frozen" and r.batchnorm else "" for r, s in zip(rows, states)]
    hover = [_("layer {layer}: {state}, {params:,} parameters").format(layer=r.label, state=_(s), params=r.params)
             + (_("<br>BatchNorm policy {policy!r}").format(policy=b) if b else "")
             for r, s, b in zip(rows, states, badges)]
    return _column_markers(labels, states, FREEZE_COLOURS, hover, 2, text=badges)


def heatmap_traces(rows, labels, history: History, depth: int, max_columns: int) -> list[dict]:
    traces = [dict(type="heatmap", **heatmap_cells(*grad_rows(rows, history, max_columns)), colorscale="Viridis",
                   name=_("log10 grad norm"),
                   colorbar=dict(title="log10 |g|", len=0.4, y=0.75, x=0.805, thickness=12), hoverongaps=False,
                   hovertemplate=_("step %{x}<br>layer %{y}<br>log10 |g| = %{z:.2f}<extra></extra>"))]
    frozen = [k for k, r in enumerate(rows) if r.index < depth and r.params]
    traces.append(dict(type="scatter", mode="text", x=np.full(len(frozen), 0.5), y=np.array(frozen, dtype=float),
                       text=[_("frozen")] * len(frozen),
                       textposition="middle right", textfont=dict(size=9, color="#4c78a8"), name=_("frozen rows"),
                       showlegend=False, hoverinfo="skip"))
    found = history.non_finite
    k = _row_of(rows, found.layer) if found is not None and found.layer else None
    if k is not None:
        traces.append(dict(type="scatter", mode="markers+text", x=[found.step], y=[k], name=_("non-finite"),
                           text=[_("non-finite")], textposition="middle left", marker=dict(symbol="x", size=14,
                           color="#d62728"), hovertext=[found.message], hovertemplate="%{hovertext}<extra></extra>"))
    return traces


def drift_trace(rows, labels, drift: Mapping[str, float] | None) -> list[dict]:
    """Weight drift ``||W - W0|| / ||W0||`` per row (``weight_drift`` of the model against its start)."""
    drift = drift or {}
    ks = [(k, v) for name, v in drift.items() if (k := _row_of(rows, name)) is not None and math.isfinite(v)]
    return [dict(type="bar", orientation="h", x=np.array([v for _, v in ks], dtype=float),
                 y=np.array([k for k, _ in ks], dtype=float), name=_("weight drift"),
                 customdata=[labels[k] for k, _ in ks],
                 marker_color="#9467bd", showlegend=False, xaxis="x3", yaxis="y3",
                 hovertemplate=_("layer %{customdata}<br>||W - W0|| / ||W0|| = %{x:.3g}<extra></extra>"))]


def _steps(n: int) -> np.ndarray:
    """Steps 1..n as floats (a live figure sends float arrays as binary, int64 ones as lists)."""
    return np.arange(1, n + 1, dtype=float)


def norm_traces(history: History) -> list[dict]:
    """The total gradient norm (log axis) and the clip coefficient (right axis, 1 = not clipped)."""
    steps = _steps(history.step)
    return [dict(type="scatter", mode="lines", x=steps, y=np.asarray(history.grad_norm, dtype=float),
                 name=_("total |g|"), line=dict(color="#333"), xaxis="x5", yaxis="y5"),
            dict(type="scatter", mode="lines", x=_steps(len(history.clip_coef)),
                 y=np.asarray(history.clip_coef, dtype=float), name=_("clip coefficient"),
                 line=dict(color="#d62728", width=1), xaxis="x5", yaxis="y6")]


STUDIO_LR_TITLE = N_("lr (log; 0 not shown)")  # a log axis has no place for the warmup's rate 0
def lr_traces(history: History, preview: Preview | None) -> list[dict]:
    """Every group's LR: the preview dashed, pale and wider than the record drawn solid over it, so a preview the
    run followed still shows at the record's edges. Groups on the same curve are stacked widest first, and the
    legend names the groups each coincides with."""
    names = list(preview.lr) if preview is not None else []
    names += [n for n in history.lr if n not in names]
    base = {n: np.asarray(preview.lr[n] if preview is not None and n in preview.lr else history.lr[n], dtype=float)
            for n in names}
    width, note = {}, {}
    for group in coinciding_curves(base):
        for j, name in enumerate(group):
            width[name] = 1.5 + 2.5 * (len(group) - 1 - j)
            others = [g for g in group if g != name]
            note[name] = _(" (= {groups})").format(groups=_(", ").join(others)) if others else ""
    previews, records = [], []  # every preview below every record
    for k, name in enumerate(names):
        style = dict(legendgroup=f"lr {name}", xaxis="x7", yaxis="y7", mode="lines")
        if preview is not None and name in preview.lr:
            y = np.asarray(preview.lr[name], dtype=float)
            previews.append(dict(type="scatter", x=_steps(len(y)), y=y,
                                 name=_("lr {group}{same} preview").format(group=name, same=note[name]),
                                 line=dict(color=colour(k), dash="dash", width=width[name] + 4), opacity=0.4, **style))
        if name in history.lr:
            y = np.asarray(history.lr[name], dtype=float)
            recorded = _("lr {group}").format(group=name + note[name])
            records.append(dict(type="scatter", x=_steps(len(y)), y=y, name=recorded,
                                line=dict(color=colour(k), width=width[name]), **style))
    return previews + records


def loss_traces(history: History) -> list[dict]:
    """The training loss per step and the validation metric (accuracy, mAP50) at the end of each epoch (right axis)."""
    traces = [dict(type="scatter", mode="lines", x=_steps(history.step), y=np.asarray(history.loss, dtype=float),
                   name=_("train loss"), line=dict(color="#1f77b4"), xaxis="x8", yaxis="y8")]
    shown = [k for k in ("accuracy", "mAP50") if k in history.val] or [k for k in history.val if k != "loss"]
    for key in shown[:1]:
        values = history.val[key]
        ends = epoch_end_steps(history)[: len(values)]
        traces.append(dict(type="scatter", mode="lines+markers", x=np.asarray(ends), y=np.asarray(values, dtype=float),
                           name=metric_label(key), line=dict(color="#2ca02c"), xaxis="x8",
                           yaxis="y9"))
    return traces


def depth_changes(history: History) -> list[tuple[int, int, int | None]]:
    """``(step, depth, previous depth)`` at the first recorded step and wherever ``History.depth`` changed."""
    d = history.depth
    return [(k + 1, d[k], d[k - 1] if k else None) for k in range(len(d)) if k == 0 or d[k] != d[k - 1]]


def depth_traces(history: History, depth: int, total: int) -> list[dict]:
    """The freeze depth per step, a mark at every change, and the slider's depth ahead (dashed)."""
    style = dict(xaxis="x10", yaxis="y10")
    changes = depth_changes(history)
    now = len(history.depth)
    ahead = total > now  # steps left to run: after a run there is nothing ahead to draw
    return [dict(type="scatter", mode="lines", x=_steps(now), y=np.asarray(history.depth, dtype=float),
                 line=dict(color="#4c78a8", shape="hv"), name=_("freeze depth"), **style),
            dict(type="scatter", mode="markers+text", x=np.array([c[0] for c in changes], dtype=float),
                 y=np.array([c[1] for c in changes], dtype=float), name=_("depth changes"),
                 text=[f"{c[1]}" if c[2] is None else f"{c[2]}→{c[1]}" for c in changes], textposition="top right",
                 marker=dict(symbol="diamond", size=9, color="#4c78a8"), showlegend=False, **style),
            dict(type="scatter", mode="lines", x=np.array([max(now, 1), total] if ahead else [], dtype=float),
                 y=np.array([depth, depth] if ahead else [], dtype=float), line=dict(color="#4c78a8", dash="dot"),
                 name=_("slider depth (ahead)"), showlegend=ahead, **style)]


def _layout(labels: list[str], transfer: bool, total: int, now: int, clip: float | None, depth_max: int) -> dict:
    cols = ([("x4", [0.0, 0.06])] if transfer else []) + [("x2", [0.075 if transfer else 0.0, 0.135 if transfer
                                                                  else 0.06])]
    heat = [0.2 if transfer else 0.13, 0.8]
    rows_axis = dict(tickvals=list(range(len(labels))), ticktext=labels, range=[len(labels) - 0.5, -0.5],
                     domain=[TOP, 1.0], showgrid=False, zeroline=False)
    layout = {"xaxis": dict(domain=heat, anchor="y", range=[0.5, total + 0.5], showticklabels=False),
              "yaxis": dict(rows_axis, anchor="x", showticklabels=not cols),
              "xaxis3": dict(domain=[0.9, 1.0], anchor="y3", title=_("drift"), rangemode="tozero", nticks=3),
              "yaxis3": dict(rows_axis, anchor="x3", matches="y", showticklabels=False)}
    for k, (axis, domain) in enumerate(cols):
        n = axis[1:]
        layout[f"xaxis{n}"] = dict(domain=domain, anchor=f"y{n}", range=[-0.6, 2.2], showticklabels=False,
                                   showgrid=False, zeroline=False,
                                   title=dict(text=_("transfer") if axis == "x4" else _("frozen"), font=dict(size=10)))
        layout[f"yaxis{n}"] = dict(rows_axis, anchor=f"x{n}", matches=None if k == 0 else "y", showticklabels=k == 0)
    if cols:
        layout["yaxis"]["matches"] = f"y{cols[0][0][1:]}"
    top, free = TOP - GAP, TOP - GAP * len(STEP_PANELS)
    total_h = sum(h for _, h in STEP_PANELS)
    for (panel, h), n in zip(STEP_PANELS, (5, 7, 8, 10)):
        size = free * h / total_h
        layout[f"xaxis{n}"] = dict(domain=heat, anchor=f"y{n}", matches="x", showticklabels=panel == "depth")
        layout[f"yaxis{n}"] = dict(domain=[round(max(top - size, 0), 4), round(top, 4)], anchor=f"x{n}")
        top -= size + GAP
    layout["yaxis5"].update(type="log", title=_("total |g|"), dtick=1)  # one tick label a decade: minor labels overlap
    layout["yaxis6"] = dict(overlaying="y5", anchor="x5", side="right", range=[0, 1.05], title=_("clip coef"),
                            tickvals=[0, 0.5, 1], showgrid=False)
    # a log axis: 1e-5 and 0.1 both show
    layout["yaxis7"].update(title=_(STUDIO_LR_TITLE), type="log", dtick=1, exponentformat="power")
    layout["yaxis8"]["title"] = _("loss")
    layout["yaxis9"] = dict(overlaying="y8", anchor="x8", side="right", range=[0, 1.05], title=_("val"),
                          tickvals=[0, 0.5, 1], showgrid=False)
    layout["yaxis10"].update(title=_("depth"), range=[-0.5, depth_max + 0.5])
    layout["xaxis10"]["title"] = _("step")
    shapes = [dict(type="line", xref="x7", yref="y7 domain", x0=now, x1=now, y0=0, y1=1, line=dict(color="black"))]
    notes = [dict(text=_("now"), xref="x7", yref="y7 domain", x=now, y=1, showarrow=False, yanchor="bottom")]
    if clip:
        shapes.append(dict(type="line", xref="x5 domain", yref="y5", x0=0, x1=1, y0=clip, y1=clip,
                           line=dict(color="#d62728", dash="dash")))
        notes.append(dict(text=_("clip {clip:g}").format(clip=clip), xref="x5 domain", yref="y5", x=1,
                          y=math.log10(clip),
                          xanchor="right", yanchor="bottom", showarrow=False, font=dict(color="#d62728")))
    layout.update(shapes=shapes, annotations=notes)
    return layout


def studio_figure(rows: Sequence[LayerRow], history: History | None = None, *, report: TransferReport | None = None,
                  depth: int = 0, bn: str = "eval", preview: Preview | None = None,
                  drift: Mapping[str, float] | None = None, max_columns: int = 300, title: str | None = None
                  ) -> go.Figure:
    """The studio's figure (see the module docstring).

    Args:
        rows: :func:`layer_rows` of the model.
        history: the run so far (a new ``History()`` before training; :func:`history_until` for a replay frame).
        report: the :class:`~workbench.transfer.TransferReport` of the source; ``None`` leaves the column out.
        depth, bn: the freeze depth and BatchNorm policy the frozen column shows (the slider's before training).
        preview: ``schedule.preview(optimizer, nb, epochs)``: the LR curves ahead, and the step axis's length.
        drift: ``{layer name: ||W - W0|| / ||W0||}`` (:func:`~workbench.monitor.weight_drift`).
    """
    history = history if history is not None else History()
    labels = row_labels(rows, history)
    total = max(len(next(iter(preview.lr.values()))) if preview is not None and preview.lr else 0, history.step, 1)
    traces = transfer_column(rows, labels, report) if report is not None else []
    traces += freeze_column(rows, labels, depth, bn) + heatmap_traces(rows, labels, history, depth, max_columns)
    traces += drift_trace(rows, labels, drift) + norm_traces(history) + lr_traces(history, preview)
    traces += loss_traces(history) + depth_traces(history, depth, total)
    layout = _layout(labels, report is not None, total, history.step, clip_value(history), max(len(rows) - 1, 1))
    status = _("{status}: step {step} of {total}, epoch {epoch}, depth {depth} ({bn})").format(
        status=status_label(history.status), step=history.step, total=total, epoch=history.epochs_done, depth=depth,
        bn=bn)
    layout.update(title=title or status, height=940, margin=dict(l=70, r=40, t=50, b=40),
                  legend=dict(orientation="h", y=-0.05, font=dict(size=10)), barmode="overlay")
    return go.Figure(traces, layout, _validate=False)  # built from checked dicts; validating costs ~20 ms
