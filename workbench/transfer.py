"""Weight transfer with a ledger: what a pretrained checkpoint gives a new model, entry by entry.

The default is Ultralytics' rule: copy every state_dict entry whose name *and* shape match
(``intersect_dicts``, then ``load_state_dict(strict=False)``), leave the rest at their fresh
initialisation, and count "items" as state_dict entries (BatchNorm buffers and the 0-d
``num_batches_tracked`` included). So on the same pair of models the first line of the report,
``Transferred X/Y items from pretrained weights``, is Ultralytics' log line.

Beyond that rule, and reported with their own statuses:

* ``class_names=(source_names, target_names)``: the final class layer's rows (weight and bias)
  are copied by class name, case- and space-insensitive (``partial``);
* ``layer_map={src_index: dst_index}``: source layers are renamed to other layer indices before
  matching, for architectures whose indices shifted (:func:`suggest_layer_map` proposes one);
* the first conv is adapted to another input-channel count (``adapted``): summed over the
  source channels for 1 channel, otherwise repeated and scaled by ``c_source / c_target``.
  (Ultralytics 8.3 copies the overlapping channels of ``model.0.conv.weight`` instead and adds
  one to its count; the headline here keeps the name-and-shape count and reports the adapted
  conv on the next line.)

Example:
    >>> from workbench import build_model
    >>> report = transfer(build_model(nc=10), build_model(nc=3))
    >>> str(report).splitlines()[0]
    'Transferred 156/158 items from pretrained weights'
"""
from __future__ import annotations

import math
import operator
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from html import escape
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .checkpoints import STATE_DICT_KEYS, load_weights
from .layers import numbered_layers
from .models import Detect
from .table import Table

STATUSES = ("transferred", "partial", "adapted", "shape_mismatch", "missing_in_source", "unused")
STATUS_COLOURS = {"transferred": "#d9f2d9", "partial": "#fff2cc", "adapted": "#dbe9ff", "shape_mismatch": "#f8d0d0",
                  "missing_in_source": "#eeeeee", "unused": "#f4f4f4"}
_NUMBERED = re.compile(r"^((?:layers|model)\.\d+)\.")


class Row(NamedTuple):
    """One ledger row: a target state_dict entry (or, with status ``unused``, a source entry).

    ``copied`` is how many of the target's values received pretrained values (all of them for
    ``transferred`` and ``adapted``, the matched class rows for ``partial``, none otherwise).
    """

    name: str
    status: str
    shape: tuple | None
    source_shape: tuple | None
    source_name: str | None
    layer: int | None
    numel: int
    copied: int
    parameter: bool
    note: str = ""


class ReportLayer(NamedTuple):
    """One numbered target layer as the report knows it: index, module name (the key prefix), stage, type."""

    index: int
    name: str
    stage: str
    type: str


class LayerSummary(NamedTuple):
    """Counts of one numbered target layer's entries by status, with its parameter values copied."""

    index: int
    name: str
    stage: str
    type: str
    items: int
    transferred: int
    partial: int
    adapted: int
    shape_mismatch: int
    missing_in_source: int
    params: int
    copied: int

    @property
    def coverage(self) -> float:
        return self.copied / self.params if self.params else 1.0


@dataclass(frozen=True)
class TransferReport:
    """The ledger: one row per target state_dict entry, then the source's unused entries.

    ``n_transferred``/``n_items`` count state_dict entries as Ultralytics does; ``coverage`` is
    the fraction of the target's parameter values that came from the source. ``str(report)``
    prints the summary and every entry that did not transfer whole; Jupyter shows it as HTML.
    """

    rows: tuple[Row, ...]
    layers: tuple[ReportLayer, ...] = ()
    dry_run: bool = False
    layer_map: dict = field(default_factory=dict)

    def where(self, status: str) -> list[Row]:
        """The rows with one status (one of ``STATUSES``)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; choose one of {list(STATUSES)}")
        return [r for r in self.rows if r.status == status]

    @property
    def counts(self) -> Counter:
        return Counter(r.status for r in self.rows)

    @property
    def n_items(self) -> int:
        return sum(1 for r in self.rows if r.status != "unused")

    @property
    def n_transferred(self) -> int:
        return self.counts["transferred"]

    @property
    def coverage(self) -> float:
        params = [r for r in self.rows if r.parameter and r.status != "unused"]
        total = sum(r.numel for r in params)
        return sum(r.copied for r in params) / total if total else 1.0

    @property
    def headline(self) -> str:
        return f"Transferred {self.n_transferred}/{self.n_items} items from pretrained weights"

    def by_layer(self) -> list[LayerSummary]:
        """One summary per numbered target layer that holds state_dict entries."""
        groups: dict[int, list[Row]] = {}
        for r in self.rows:
            if r.status != "unused" and r.layer is not None:
                groups.setdefault(r.layer, []).append(r)
        out = []
        for layer in self.layers:
            rows = groups.get(layer.index, [])
            if rows:
                c = Counter(r.status for r in rows)
                out.append(LayerSummary(**layer._asdict(), items=len(rows), transferred=c["transferred"],
                                        partial=c["partial"], adapted=c["adapted"],
                                        shape_mismatch=c["shape_mismatch"], missing_in_source=c["missing_in_source"],
                                        params=sum(r.numel for r in rows if r.parameter),
                                        copied=sum(r.copied for r in rows if r.parameter)))
        return out

    def _summary_lines(self) -> list[str]:
        c, target = self.counts, [r for r in self.rows if r.status != "unused"]
        n_params = sum(r.parameter for r in target)
        n_nbt = sum(r.name.endswith("num_batches_tracked") for r in target)
        params = sum(r.numel for r in target if r.parameter)
        lines = [self.headline + ("  (dry run: nothing loaded)" if self.dry_run else "")]
        if c["adapted"]:
            lines.append(f"  plus {c['adapted']} adapted to other input channels (not counted above)")
        if c["partial"]:
            lines.append(f"  plus {c['partial']} partial (class rows copied by name; not counted above)")
        lines.append(f"Parameter coverage: {100 * self.coverage:.1f}% of {params:,} values")
        lines.append(f"Items: {n_params} parameters + {len(target) - n_params} buffers "
                     f"({n_nbt} num_batches_tracked)")
        lines.append("Entries: " + ", ".join(f"{s} {c[s]}" for s in STATUSES))
        if self.layer_map:
            lines.append(f"Layer map (source -> target): {self.layer_map}")
        return lines

    def _detail_rows(self) -> list[Row]:
        return [r for r in self.rows if r.status != "transferred"]

    def layer_table(self) -> Table:
        """Per numbered layer: its entries by status and the share of its parameter values copied."""
        header = ("layer", "name", "stage", "type", "items", "transferred", "partial", "adapted", "mismatch",
                  "missing", "coverage")
        rows = [{"layer": s.index, "name": s.name, "stage": s.stage, "type": s.type, "items": s.items,
                 "transferred": s.transferred, "partial": s.partial, "adapted": s.adapted,
                 "mismatch": s.shape_mismatch, "missing": s.missing_in_source, "coverage": f"{100 * s.coverage:.1f}%"}
                for s in self.by_layer()]
        return Table(header, rows, indent=2, title="Per layer:")

    def detail_table(self) -> Table:
        """Every entry that did not transfer whole, with its shapes (coloured by status in HTML)."""
        rows = [{"status": r.status, "entry": r.name, "shapes": _shapes(r), "note": r.note}
                for r in self._detail_rows()]
        return Table(("status", "entry", "shapes", "note"), rows, indent=2, title="Not transferred whole:",
                     row_style=lambda row: f"background:{STATUS_COLOURS[row['status']]}")

    def __str__(self) -> str:
        parts = ["\n".join(self._summary_lines()), str(self.layer_table())]
        if self._detail_rows():
            parts.append(str(self.detail_table()))
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        return f"TransferReport({self.headline!r}, coverage={100 * self.coverage:.1f}%)"

    def _repr_html_(self) -> str:
        summary = "<br>".join(escape(line) for line in self._summary_lines())
        details = self.detail_table()._repr_html_()
        return (f"<div><b>{summary}</b>{self.layer_table()._repr_html_()}"
                f"<details><summary>entries not transferred whole</summary>{details}</details></div>")


def _shapes(r: Row) -> str:
    if r.status == "unused":
        return f"source {r.source_shape}"
    if r.source_shape is None:
        return f"target {r.shape}"
    return f"target {r.shape} <- source {r.source_shape}" + (
        f" ({r.source_name})" if r.source_name and r.source_name != r.name else "")


# ----------------------------------------------------------------------------------------------- sources
def source_state(source) -> dict[str, torch.Tensor]:
    """A read-only view of the source's tensors: an ``nn.Module``, a state_dict, a checkpoint dict or a path."""
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise FileNotFoundError(f"no checkpoint at {source}; the shipped weights are at "
                                    "workbench.checkpoints.pretrained_path('shapes_n')")
        return load_weights(source)
    if isinstance(source, nn.Module):
        return source.state_dict()
    if isinstance(source, Mapping):
        if all(isinstance(v, torch.Tensor) for v in source.values()):
            return dict(source)
        for key in STATE_DICT_KEYS:
            if source.get(key) is not None:
                return source_state(source[key])
    raise ValueError("source must be an nn.Module, a state_dict (dict of name -> tensor), or a checkpoint path; "
                     f"got {type(source).__name__}")


def layer_prefixes(source, like: nn.Module | None = None) -> dict[int, str]:
    """Layer index -> state_dict prefix, as :func:`numbered_layers` numbers them.

    A module is asked directly. For a bare state_dict, ``layers.{i}.``/``model.{i}.`` keys give
    ``i``. Otherwise, when every top-level name is a layer of ``like`` (the target model), its
    indices are used; failing that, the names are numbered in the order they first appear.
    """
    if isinstance(source, nn.Module):
        return {layer.index: layer.name for layer in numbered_layers(source)}
    numbered = {m.group(1) for k in source if (m := _NUMBERED.match(k))}
    heads = dict.fromkeys(k.split(".", 1)[0] for k in source)
    if numbered and len(numbered) >= 0.5 * len(heads):
        return {int(p.rsplit(".", 1)[1]): p for p in sorted(numbered, key=lambda p: int(p.rsplit(".", 1)[1]))}
    known = {layer.name: layer.index for layer in numbered_layers(like)} if like is not None else {}
    if heads and all(h in known for h in heads):
        return {known[h]: h for h in heads}
    return dict(enumerate(heads))


def _indexer(prefixes: dict[int, str]):
    """A fast ``key -> layer index`` for state_dict keys (prefixes have at most two dotted parts)."""
    lookup = {p: i for i, p in prefixes.items()}
    default = lookup.get("")

    def index(key: str) -> int | None:
        head, _, rest = key.partition(".")
        if head in lookup:
            return lookup[head]
        return lookup.get(head + "." + rest.partition(".")[0], default)

    return index


def _remap(src: dict, layer_map: Mapping[int, int], src_prefixes: dict[int, str], dst_prefixes: dict[int, str]):
    """Source ``{key: (source name, tensor)}`` renamed by ``layer_map``.

    Mapped entries win a name collision; the entries they displace are returned apart.
    """
    bad_src = [i for i in layer_map if i not in src_prefixes]
    bad_dst = [j for j in layer_map.values() if j not in dst_prefixes]
    if bad_src or bad_dst:
        raise ValueError(f"layer_map refers to layers that do not exist: source {bad_src}, target {bad_dst}; "
                         f"source layers are {sorted(src_prefixes)}, target layers {sorted(dst_prefixes)}")
    if len(set(layer_map.values())) != len(layer_map):
        raise ValueError(f"layer_map sends two source layers to one target layer: {dict(layer_map)}")
    index = _indexer(src_prefixes)
    kept, moved = {}, {}
    for key, entry in src.items():
        i = index(key)
        if i in layer_map:
            moved[dst_prefixes[layer_map[i]] + key[len(src_prefixes[i]):]] = entry
        else:
            kept[key] = entry
    displaced = {k: v for k, v in kept.items() if k in moved}
    return {**{k: v for k, v in kept.items() if k not in moved}, **moved}, displaced


# ----------------------------------------------------------------------------------------------- class rows
def _norm(name: str) -> str:
    return "".join(str(name).lower().split())


def class_layer_keys(model: nn.Module, nc: int) -> list[str]:
    """State_dict keys (weight, then bias) of the final class layer(s) with ``nc`` outputs.

    Our Detect head has one per level (the last conv of each ``cv3`` branch); any other model
    has one: the last ``nn.Linear`` or conv layer with ``nc`` outputs.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, Detect):
            names += [f"{name}.cv3.{i}.{len(branch) - 1}" for i, branch in enumerate(module.cv3)]
    if not names:
        last = [name for name, m in model.named_modules()
                if isinstance(m, nn.Linear) and m.out_features == nc
                or isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == nc]
        if not last:
            raise ValueError(f"found no final class layer with {nc} outputs (a Linear or conv); "
                             f"target_names has {nc} names: does the model have that many classes?")
        names = last[-1:]
    keys = set(model.state_dict(keep_vars=True))
    return [f"{n}.{p}" for n in names for p in ("weight", "bias") if f"{n}.{p}" in keys]


def _source_class_key(key: str, target: torch.Tensor, src: dict, n: int) -> str:
    """The source key holding the ``n`` class rows for target ``key``.

    The same name when the source has it; otherwise (a source that names its layers differently)
    the last source tensor of the same kind (``weight``/``bias``) with ``n`` rows of the target's width.
    """
    if key in src:
        rows = src[key][1].shape[0] if src[key][1].ndim else 0
        if rows != n:
            raise ValueError(f"the source's {key} has {rows} class rows but source_names has {n} names")
        return key
    suffix = key.rsplit(".", 1)[1]
    found = [k for k, (_, t) in src.items() if k.endswith("." + suffix) and t.ndim == target.ndim
             and t.shape[0] == n and t.shape[1:] == target.shape[1:]]
    if not found:
        raise ValueError(f"the source has no class layer with {n} rows for {key}: check source_names ({n} names)")
    return found[-1]


def _class_plan(model: nn.Module, src: dict, class_names) -> dict[str, tuple[str, list[int], list[int], int]]:
    """target key -> (source key, target rows, source rows, number of target rows) for the class layer."""
    if (not isinstance(class_names, Sequence) or len(class_names) != 2
            or any(isinstance(n, str) or not isinstance(n, Sequence) for n in class_names)):
        raise ValueError("class_names must be a pair (source_names, target_names) of lists of class names")
    source_names, target_names = class_names
    index = {}
    for i, name in enumerate(source_names):
        if _norm(name) in index:
            raise ValueError(f"source class name {name!r} appears twice (names are compared case- and "
                             "space-insensitively)")
        index[_norm(name)] = i
    pairs = [(j, index[_norm(name)]) for j, name in enumerate(target_names) if _norm(name) in index]
    rows_t, rows_s = [j for j, _ in pairs], [i for _, i in pairs]
    target = model.state_dict()
    return {key: (_source_class_key(key, target[key], src, len(source_names)), rows_t, rows_s, len(target_names))
            for key in class_layer_keys(model, len(target_names))}


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-conv weight for another input-channel count (as timm's ``adapt_input_conv``).

    One channel: the sum over the source channels, so a grey image gives what the source model
    gives for that image repeated to every channel. ``k`` channels: the source channels repeated
    cyclically and scaled by ``c_source / k``, keeping the activation scale.

    Example:
        >>> adapt_input_conv(torch.ones(8, 3, 3, 3), 1).shape
        torch.Size([8, 1, 3, 3])
    """
    c = weight.shape[1]
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    repeat = math.ceil(in_channels / c)
    return weight.repeat(1, repeat, *([1] * (weight.ndim - 2)))[:, :in_channels] * (c / in_channels)


def _first_conv_key(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return f"{name}.weight"
    return None


def _can_adapt(s: torch.Tensor, t: torch.Tensor) -> bool:
    return (s.ndim == t.ndim >= 3 and s.shape[0] == t.shape[0] and s.shape[2:] == t.shape[2:]
            and s.shape[1] != t.shape[1])


# ----------------------------------------------------------------------------------------------- transfer
def transfer(source, model: nn.Module, *, dry_run: bool = False, class_names=None,
             layer_map: Mapping[int, int] | None = None) -> TransferReport:
    """Copy every entry whose name and shape match from ``source`` into ``model``; return the ledger.

    Args:
        source: an ``nn.Module``, a state_dict, or a checkpoint path (safe loading only, see
            :func:`workbench.load_weights`). It is never modified.
        model: the model to receive the weights (any ``nn.Module``), changed in place.
        dry_run: predict the ledger and load nothing.
        class_names: ``(source_names, target_names)``: copy the final class layer's rows for
            the names both share (case- and space-insensitive), reported as ``partial``.
        layer_map: ``{source_layer_index: target_layer_index}`` (see :func:`suggest_layer_map`);
            unmapped layers keep their index.

    Example:
        >>> from workbench import build_model
        >>> transfer(build_model(nc=10), build_model(nc=10)).n_transferred
        158
    """
    _check_model(model, "model")
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run must be True or False (got {dry_run!r})")
    layer_map = _check_layer_map(layer_map)
    src = {k: (k, v) for k, v in source_state(source).items()}
    src_prefixes = layer_prefixes(source if isinstance(source, nn.Module) else src, like=model)
    layers = numbered_layers(model)
    dst_prefixes = {layer.index: layer.name for layer in layers}
    displaced = {}
    if layer_map:
        src, displaced = _remap(src, layer_map, src_prefixes, dst_prefixes)
    plan = _class_plan(model, src, class_names) if class_names is not None else {}
    rows, load, consumed = _match(model, src, plan, build=not dry_run)
    if load:
        unexpected = model.load_state_dict(load, strict=False).unexpected_keys
        assert not unexpected, f"unexpected keys {unexpected}"
    src_index = _indexer(src_prefixes)
    for key, (name, tensor) in list(src.items()) + list(displaced.items()):
        if name not in consumed:
            note = "displaced by layer_map" if key in displaced and displaced[key][0] == name else ""
            rows.append(Row(name=name, status="unused", shape=None, source_shape=tuple(tensor.shape),
                            source_name=name, layer=src_index(name), numel=tensor.numel(), copied=0, parameter=False,
                            note=note))
            consumed.add(name)
    report = TransferReport(tuple(rows), tuple(ReportLayer(x.index, x.name, x.stage, x.type) for x in layers), dry_run,
                            dict(layer_map or {}))
    if not dry_run and report.n_items and not report.n_transferred:
        warnings.warn(_nothing_transferred(report, src), UserWarning, stacklevel=2)
    return report


def _check_model(model, what: str) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what} must be the nn.Module to receive the weights (e.g. build_model(nc=3)); "
                         f"got {type(model).__name__}")


def _check_layer_map(layer_map) -> dict[int, int]:
    """``{source_layer: target_layer}`` with integer keys and values (numpy integers too), or a ValueError."""
    if layer_map is None:
        return {}
    if not isinstance(layer_map, Mapping):
        raise ValueError(f"layer_map must be a dict {{source_layer: target_layer}}, e.g. {{9: 22}} or "
                         f"suggest_layer_map(source, model); got {type(layer_map).__name__}")
    try:
        return {_layer(k): _layer(v) for k, v in layer_map.items()}
    except TypeError:
        raise ValueError(f"layer_map keys and values must be layer indices (integers >= 0), got {dict(layer_map)}; "
                         "suggest_layer_map(source, model) proposes one") from None


def _layer(value) -> int:
    """A layer index: an integer >= 0, or its decimal string (JSON keys are strings)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or operator.index(value) < 0:
        raise TypeError
    return operator.index(value)


def _nothing_transferred(report: TransferReport, src: dict) -> str:
    target = next((r.name for r in report.rows if r.status != "unused"), "?")
    if not src:
        return f"{report.headline}: the source holds no tensors; check that it is the checkpoint you meant"
    return (f"{report.headline}: no source entry matched a target entry by name and shape (e.g. target {target!r}, "
            f"source {next(iter(src))!r}). Likely causes: the source uses another layout (Ultralytics names layer i "
            f"'model.{{i}}', this workbench 'layers.{{i}}'; a foreign model has its own names), or another "
            f"architecture (scale, task, channels). Pass layer_map=suggest_layer_map(source, model) to match "
            f"layers by position and shape, and read report.where('unused') to see what the source holds")


def _match(model: nn.Module, src: dict, plan: dict, build: bool):
    """The ledger rows for the target entries, the tensors to load, and the source names used."""
    target = model.state_dict()
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    index = _indexer({layer.index: layer.name for layer in numbered_layers(model)})
    first_conv = _first_conv_key(model)
    rows, load, consumed = [], {}, set()
    for key, t in target.items():
        shape, n, is_param = tuple(t.shape), t.numel(), key in params
        entry = partial(Row, name=key, shape=shape, layer=index(key), numel=n, parameter=is_param)
        if key in plan:
            row, value = _class_row(key, t, src, plan[key], index(key), is_param, build)
        elif key not in src:
            row, value = entry(status="missing_in_source", source_shape=None, source_name=None, copied=0), None
        else:
            name, s = src[key]
            found = partial(entry, source_shape=tuple(s.shape), source_name=name)
            if s.shape == t.shape:
                row, value = found(status="transferred", copied=n), s
            elif key == first_conv and _can_adapt(s, t):
                how = "sum over channels" if t.shape[1] == 1 else f"repeat, scale {s.shape[1]}/{t.shape[1]}"
                row = found(status="adapted", copied=n, note=f"input channels {s.shape[1]} -> {t.shape[1]} ({how})")
                value = adapt_input_conv(s.detach().to(t.dtype), t.shape[1]) if build else None
            else:
                row, value = found(status="shape_mismatch", copied=0), None
        rows.append(row)
        if row.source_name is not None:
            consumed.add(row.source_name)
        if value is not None and build:
            load[key] = value
    return rows, load, consumed


def _class_row(key: str, t: torch.Tensor, src: dict, plan: tuple, layer: int | None, is_param: bool, build: bool):
    """A class-layer entry: rows copied by class name (``partial``), or whole when the order is the same."""
    source_key, rows_t, rows_s, n_target = plan
    name, s = src[source_key]
    entry = partial(Row, name=key, shape=tuple(t.shape), source_shape=tuple(s.shape), source_name=name, layer=layer,
                    numel=t.numel(), parameter=is_param)
    if s.shape[1:] != t.shape[1:]:
        return entry(status="shape_mismatch", copied=0, note="class layer input width differs: no rows copied"), None
    if s.shape == t.shape and rows_t == rows_s == list(range(n_target)):
        return entry(status="transferred", copied=t.numel(), note="class names in the same order"), s
    per_row = t[0].numel() if t.ndim else 1
    row = entry(status="partial", copied=len(rows_t) * per_row,
                note=f"{len(rows_t)}/{n_target} class rows copied by name")
    if not build or not rows_t:
        return row, None
    value = t.detach().clone()
    value[rows_t] = s.detach()[rows_s].to(t.device, t.dtype)
    return row, value


# ----------------------------------------------------------------------------------------------- layer maps
def _signatures(state: dict, prefixes: dict[int, str]) -> list[tuple[int, tuple]]:
    """Per layer (in index order): its entries' (name inside the layer, shape), for layers that hold any."""
    index = _indexer(prefixes)
    sig: dict[int, list] = {}
    for key, tensor in state.items():
        i = index(key)
        if i is not None:
            sig.setdefault(i, []).append((key[len(prefixes[i]):], tuple(tensor.shape)))
    return [(i, tuple(sig[i])) for i in sorted(sig)]


def _align(a: list, b: list) -> list[tuple[int, int]]:
    """Positions of a longest common subsequence of ``a`` and ``b`` (equal items)."""
    m, n = len(a), len(b)
    best = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m - 1, -1, -1):
        for j in range(n - 1, -1, -1):
            best[i][j] = best[i + 1][j + 1] + 1 if a[i] == b[j] else max(best[i + 1][j], best[i][j + 1])
    pairs, i, j = [], 0, 0
    while i < m and j < n:
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def suggest_layer_map(source, model: nn.Module) -> dict[int, int]:
    """Propose ``{source_layer: target_layer}`` by aligning the two sequences of per-layer shapes.

    Layers are compared by their entries' names and shapes; a longest common subsequence pairs
    the identical ones in order, and the layers left between two pairs are paired in order when
    both sides have the same number of them with the same entry names (a resized head).

    Example:
        >>> from workbench import build_model
        >>> suggest_layer_map(build_model(nc=10), build_model(nc=3))[9]
        9
    """
    _check_model(model, "model")
    src = source_state(source)
    a = _signatures(src, layer_prefixes(source if isinstance(source, nn.Module) else src, like=model))
    b = _signatures(model.state_dict(), {layer.index: layer.name for layer in numbered_layers(model)})
    anchors = _align([sig for _, sig in a], [sig for _, sig in b])
    pairs = list(anchors)
    for (i0, j0), (i1, j1) in zip([(-1, -1)] + anchors, anchors + [(len(a), len(b))]):
        gap_a, gap_b = range(i0 + 1, i1), range(j0 + 1, j1)
        if len(gap_a) == len(gap_b) and all([k for k, _ in a[i][1]] == [k for k, _ in b[j][1]]
                                            for i, j in zip(gap_a, gap_b)):
            pairs += zip(gap_a, gap_b)
    return {a[i][0]: b[j][0] for i, j in sorted(pairs)}
