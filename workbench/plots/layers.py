"""Maps over the numbered layers: what a transfer copied, and what a freeze froze.

Example:
    >>> from workbench import build_model, transfer
    >>> fig = transfer_map(transfer(build_model(nc=10), build_model(nc=3), dry_run=True))
    >>> sorted(trace.name for trace in fig.data if trace.type == "bar")
    ['shape_mismatch (2)', 'transferred (156)']
"""
from __future__ import annotations

from collections import Counter
from html import escape

import numpy as np
import plotly.graph_objects as go
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..freezing import FreezeReport, bn_policy
from ..i18n import N_, _, ngettext
from ..layers import layer_index_of, numbered_layers
from ..transfer import STATUSES, Row, TransferReport

MARGIN = dict(l=60, r=30, t=60, b=40)
STATUS_COLOURS = {"transferred": "#2ca02c", "partial": "#e6b422", "adapted": "#4c78a8",
                  "shape_mismatch": "#d62728", "missing_in_source": "#8c8c8c", "unused": "#c7c7c7"}
STATE_COLOURS = {N_("frozen"): "#4c78a8", N_("partly frozen"): "#9ecae9", N_("trainable"): "#f58518",
                 N_("no parameters"): "#d0d0d0"}


def _percent(share: float) -> str:
    """``100%`` and ``0%`` only when exact; ``99.6%`` otherwise."""
    return f"{100 * share:.0f}%" if share in (0.0, 1.0) else f"{min(max(100 * share, 0.1), 99.9):.1f}%"


def _tile_text(row: Row) -> str:
    if row.status == "unused":
        shapes = _("source {shape}, not used (source layer {layer})").format(shape=row.source_shape, layer=row.layer)
    elif row.source_shape is None:
        shapes = _("target {shape}, not in the source").format(shape=row.shape)
    else:
        shapes = _("target {shape} &larr; source {source}").format(shape=row.shape, source=row.source_shape)
        shapes += _(" ({text})").format(text=escape(row.source_name)) if row.source_name != row.name else ""
    note = f"<br>{escape(row.note)}" if row.note else ""
    kind = _("parameter") if row.parameter else _("buffer")
    return _("<b>{name}</b><br>{status} · {kind}<br>{shapes}<br>{numel:,} values, {copied:,} copied{note}").format(
        name=escape(row.name), status=row.status, kind=kind, shapes=shapes, numel=row.numel, copied=row.copied,
        note=note)


def transfer_map(report: TransferReport, *, title: str | None = None) -> go.Figure:
    """One tile per state_dict entry, stacked per layer and coloured by status; hover shows shapes and counts.

    Columns are the target's numbered layers (``unused`` source entries sit at their source
    layer, hatched); the number above a column is the layer's parameter coverage.
    """
    height: Counter = Counter()
    tiles: dict[str, dict[str, list]] = {s: {"x": [], "base": [], "text": []} for s in STATUSES}
    for row in sorted(report.rows, key=lambda r: r.status == "unused"):
        x = -1 if row.layer is None else row.layer
        tile = tiles[row.status]
        tile["x"].append(x)
        tile["base"].append(height[x])
        tile["text"].append(_tile_text(row))
        height[x] += 1
    traces, counts = [], report.counts
    for status, tile in tiles.items():
        if tile["x"]:
            marker = dict(color=STATUS_COLOURS[status], line=dict(color="white", width=0.5),
                          pattern_shape="/" if status == "unused" else "")
            traces.append(dict(type="bar", x=np.array(tile["x"]), y=np.ones(len(tile["x"])),
                               base=np.array(tile["base"]), marker=marker, name=f"{status} ({counts[status]})",
                               hovertext=tile["text"], hovertemplate="%{hovertext}<extra></extra>"))
    summaries = report.by_layer()
    traces.append(dict(type="scatter", x=np.array([s.index for s in summaries]), mode="text", showlegend=False,
                       y=np.array([height[s.index] + 0.6 for s in summaries]),
                       text=[_percent(s.coverage) for s in summaries], textfont=dict(size=10),
                       hovertext=[_("layer {index} {type} ({stage}): {transferred}/{items} items, "
                                    "{copied:,}/{params:,} parameter values copied").format(
                                        index=s.index, type=s.type, stage=s.stage, transferred=s.transferred,
                                        items=s.items, copied=s.copied, params=s.params) for s in summaries],
                       hovertemplate="%{hovertext}<extra></extra>"))
    layer_ticks = {index: f"{index} {kind}" for index, _, _, kind in report.layers}
    ticks = sorted(height)
    headline = report.headline + _(" · coverage {coverage:.1f}%").format(coverage=100 * report.coverage) + (
        _(" (dry run)") if report.dry_run else "")
    layout = dict(title=title or headline, barmode="overlay", bargap=0.15, height=420, margin=MARGIN,
                  xaxis=dict(title=_("layer"), tickvals=ticks,
                             ticktext=[layer_ticks.get(i, _("other")) for i in ticks]),
                  yaxis=dict(title=_("state_dict entries")), legend=dict(orientation="h", y=-0.2))
    return go.Figure(traces, layout)


def _layer_policies(model: nn.Module) -> dict[int | None, set[str]]:
    found: dict[int | None, set[str]] = {}
    layers = numbered_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and bn_policy(module) is not None:
            found.setdefault(layer_index_of(name, layers), set()).add(bn_policy(module))
    return found


def freeze_rows(source: nn.Module | FreezeReport) -> list[tuple[int, str, str, int, int, str]]:
    """Per numbered layer: ``(index, type, stage, frozen params, total params, BatchNorm policy or "")``.

    From a model, read from ``requires_grad`` and the policies :func:`~workbench.freeze` gave
    its BatchNorm modules; from a :class:`FreezeReport`, the report's policy marks its frozen layers.
    """
    if isinstance(source, FreezeReport):
        return [(r.index, r.type, r.stage, r.frozen, r.total, source.bn if r.frozen and source.bn else "")
                for r in source.rows if r.index >= 0]
    if not isinstance(source, nn.Module):
        raise ValueError(f"freeze_map takes a model or a FreezeReport, got {type(source).__name__}")
    policies = _layer_policies(source)
    rows = []
    for layer in numbered_layers(source):
        params = list(layer.module.parameters())
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        rows.append((layer.index, layer.type, layer.stage, frozen, sum(p.numel() for p in params),
                     "/".join(sorted(policies.get(layer.index, ())))))
    return rows


def _state(frozen: int, total: int) -> str:
    if total == 0:
        return "no parameters"
    return "frozen" if frozen == total else "trainable" if frozen == 0 else "partly frozen"


def compact(count: int) -> str:
    """A parameter count in at most four characters: ``464``, ``18.6k``, ``460k``, ``1.4M``.

    Example:
        >>> [compact(n) for n in (464, 18_560, 460_288, 1_442_131)]
        ['464', '18.6k', '460k', '1.4M']
    """
    for size, unit in ((1_000_000, "M"), (1_000, "k")):
        if count >= size:
            value = count / size
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(count)


def frozen_span(rows: list[tuple[int, str, str, int, int, str]], depth: int | None = None) -> str:
    """Which layers a freeze froze, from :func:`freeze_rows`: ``"layers 0-4 frozen (1 of them has no parameters)"``.

    A layer counts as frozen when any of its parameters is; a layer without parameters inside the
    frozen span is named apart, and so are partly frozen ones (e.g. BatchNorm's gamma and beta
    left trainable by ``bn="affine"``). ``depth``, when the freeze was ``depth=N``, extends the span
    over parameterless layers at its end (a pooling layer before the head), which the rows alone
    cannot tell apart from unfrozen ones. The freeze panel's summary and the freeze map's title both use it.

    Example:
        >>> frozen_span([(0, "Conv", "backbone", 10, 10, ""), (1, "ReLU", "backbone", 0, 0, ""),
        ...              (2, "Conv", "backbone", 5, 10, "affine"), (3, "Linear", "head", 0, 4, "")])
        'layers 0-2 frozen (1 of them partly, 1 has no parameters)'
    """
    touched = [r for r in rows if r[3] > 0]
    if not touched:
        return _("no layer frozen")
    last = max([r[0] for r in touched] + ([depth - 1] if depth else []))
    inside = [r for r in rows if r[0] <= last]
    if any(r[3] == 0 and r[4] > 0 for r in inside):  # not a prefix: a list of layers or name patterns
        return ngettext("{n} layer frozen ({which})", "{n} layers frozen ({which})", len(touched)).format(
            n=len(touched), which=", ".join(str(r[0]) for r in touched))
    span = _("layer 0 frozen") if last == 0 else _("layers 0-{last} frozen").format(last=last)
    partly, empty = sum(0 < r[3] < r[4] for r in inside), sum(r[4] == 0 for r in inside)
    notes = ([_("{n} of them partly").format(n=partly)] if partly else []) + (
        [ngettext("{n} has no parameters", "{n} have no parameters", empty).format(n=empty)] if empty else [])
    return span + (_(" ({text})").format(text=_(", ").join(notes)) if notes else "")


def freeze_map(source: nn.Module | FreezeReport, *, title: str | None = None, depth: int | None = None) -> go.Figure:
    """Frozen or trainable, per numbered layer (bar height: its parameters, linear, the count printed on it).

    The height is true to scale, so the first layers' bars are as small as their share of the
    model; the count above each bar gives the number. A badge names the BatchNorm policy of a
    frozen layer (``eval``, ``train``, ``affine``, ``frozen``); the title names the frozen layers
    (:func:`frozen_span`, given ``depth`` when the freeze was ``depth=N``) and the trainable share.
    The figure always has one bar trace per state (empty when no layer is in it) and the badge
    trace, so a live view updates in place.

    Example:
        >>> from workbench import build_model, freeze
        >>> model = build_model(nc=3)
        >>> _ = freeze(model, depth=3, bn="affine")
        >>> fig = freeze_map(model)
        >>> [(trace.name, len(trace.x)) for trace in fig.data][:3], list(fig.data[-1].text)
        ([('frozen', 0), ('partly frozen', 3), ('trainable', 7)], ['affine', 'affine', 'affine'])
        >>> list(fig.data[1].text), fig.layout.title.text.split(" · ")[0]
        (['464', '4.7k', '7.4k'], 'layers 0-2 frozen (3 of them partly)')
    """
    rows = freeze_rows(source)
    top = max((r[4] for r in rows), default=1) or 1
    traces = []
    for state, colour in STATE_COLOURS.items():
        mine = [r for r in rows if _state(r[3], r[4]) == state]
        traces.append(dict(
            type="bar", x=np.array([r[0] for r in mine], dtype=int), y=np.array([r[4] for r in mine]),
            name=_(state), marker_color=colour, text=[compact(r[4]) for r in mine], textposition="outside",
            width=0.8,  # per bar: a trace's automatic width follows its own x spacing, so states would differ
            textfont=dict(size=10), cliponaxis=False,
            showlegend=bool(mine) and state != "no parameters",  # a zero-height bar: its "0" label says it
            hovertemplate="%{hovertext}<extra></extra>",
            hovertext=[_("layer {index} {type} ({stage})<br>{state}: {frozen:,} of {total:,} parameters frozen").format(
                index=r[0], type=r[1], stage=r[2], state=_(state), frozen=r[3], total=r[4])
                + (_("<br>BatchNorm policy: {policy}").format(policy=r[5]) if r[5] else "") for r in mine]))
    badges = [r for r in rows if r[5]]
    traces.append(dict(type="scatter", x=np.array([r[0] for r in badges], dtype=int), text=[r[5] for r in badges],
                       y=np.array([r[4] + 0.1 * top for r in badges], dtype=float), mode="text",
                       textposition="top center", textfont=dict(size=10, color="#334"), name=_("BatchNorm policy"),
                       showlegend=False, hoverinfo="skip"))
    total = sum(r[4] for r in rows)
    trainable = total - sum(r[3] for r in rows)
    share = 100 * trainable / total if total else 0.0
    headline = _("{span} · trainable {trainable:,} of {total:,} parameters ({share:.1f}%)").format(
        span=frozen_span(rows, depth), trainable=trainable, total=total, share=share)
    layout = dict(title=title or headline, height=380, margin=MARGIN, bargap=0.2, barmode="overlay",
                  legend=dict(orientation="h", y=-0.3),
                  xaxis=dict(title=_("layer"), tickvals=[r[0] for r in rows], tickangle=0, tickfont=dict(size=10),
                             ticktext=[f"{r[0]}<br>{r[1]}" for r in rows]),  # two lines: long type names fit
                  yaxis=dict(title=_("parameters in the layer"), range=[0, 1.3 * top]))
    return go.Figure(traces, layout)
