"""Weight transfer with a ledger: what a pretrained checkpoint gives a new model, entry by entry.

The default is Ultralytics' rule: copy every state_dict entry whose name *and* shape match
(``intersect_dicts``, then ``load_state_dict(strict=False)``), leave the rest at their fresh
initialisation, and count "items" as state_dict entries (BatchNorm buffers and the 0-d
``num_batches_tracked`` included). So on the same pair of models the first line of the report,
``Transferred X/Y items from pretrained weights``, is Ultralytics' log line.

Beyond that rule, and reported with their own statuses:

* ``class_names=(source_names, target_names)``: the final class layer's rows (weight and bias)
  are copied by class name, case- and space-insensitive (``partial``);
* a source in Ultralytics' or YOLOv5's layout (layer ``i`` is ``model.{i}``) into a workbench
  model (``layers.{i}``), or the other way round, is matched layer ``i`` to layer ``i`` without
  being asked; the ledger notes it (``source layout: Ultralytics (model.{i} → layers.{i})``);
* ``layer_map={src_index: dst_index}``: source layers are renamed to other layer indices before
  matching, for architectures whose indices shifted (:func:`suggest_layer_map` proposes one);
  its pairs override the index-for-index default of a recognised layout;
* the first conv is adapted to another input-channel count (``adapted``): summed over the
  source channels for 1 channel, otherwise repeated and scaled by ``c_source / c_target``.
  (Ultralytics from 8.3.132 copies the overlapping channels of ``model.0.conv.weight`` instead,
  from 8.4.175 sums them for 1 channel, and adds one to its count; the headline here keeps the
  name-and-shape count and reports the adapted conv on the next line.)

The ledger's types and their rendering live in :mod:`workbench.transfer_report`; reading a
source, layer indices and layer maps in :mod:`workbench.layer_map`. Both are re-exported here.

Example:
    >>> from workbench import build_model
    >>> report = transfer(build_model(nc=10), build_model(nc=3))
    >>> str(report).splitlines()[0]
    'Transferred 156/158 items from pretrained weights'
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import nn

from .heads import class_layer_names, detect_heads
from .layer_map import (
    align_layout,
    check_layer_map,
    check_target_model,
    layer_indexer,
    layer_prefixes,
    remap_layers,
    source_state,
    suggest_layer_map,
)
from .layers import numbered_layers
from .transfer_report import STATUS_COLOURS, STATUSES, LayerSummary, ReportLayer, Row, TransferReport

__all__ = [
    "STATUSES",
    "STATUS_COLOURS",
    "LayerSummary",
    "ReportLayer",
    "Row",
    "TransferReport",
    "adapt_input_conv",
    "class_layer_keys",
    "layer_prefixes",
    "source_state",
    "suggest_layer_map",
    "transfer",
]


# ----------------------------------------------------------------------------------------------- class rows
def _norm(name: str) -> str:
    return "".join(str(name).lower().split())


def class_layer_keys(model: nn.Module, nc: int) -> list[str]:
    """State_dict keys (weight, then bias) of the final class layer(s) with ``nc`` outputs.

    A detection head, the workbench's or Ultralytics' (:func:`~workbench.heads.detect_heads`), has
    one per level: the last conv of each class branch (``cv3``, and ``one2one_cv3`` where present).
    Any other model has one: the last ``nn.Linear`` or conv layer with ``nc`` outputs.

    Example:
        >>> from workbench import build_model
        >>> class_layer_keys(build_model("n", "detect", nc=3), 3)[-2:]
        ['layers.22.cv3.2.2.weight', 'layers.22.cv3.2.2.bias']
    """
    names = [n for name, head in detect_heads(model) for n in class_layer_names(name, head)]
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
            :func:`workbench.load_weights`). It is never modified. A source or model of meta
            tensors (shapes only, :func:`workbench.manifests.manifest_model`) needs ``dry_run=True``.
        model: the model to receive the weights (any ``nn.Module``), changed in place.
        dry_run: predict the ledger and load nothing.
        class_names: ``(source_names, target_names)``: copy the final class layer's rows for
            the names both share (case- and space-insensitive), reported as ``partial``.
        layer_map: ``{source_layer_index: target_layer_index}`` (see :func:`suggest_layer_map`);
            unmapped layers keep their index. An Ultralytics/YOLOv5 source (``model.{i}``) and a
            workbench target (``layers.{i}``), or the reverse, are lined up by index first.

    Example:
        >>> from workbench import build_model
        >>> transfer(build_model(nc=10), build_model(nc=10)).n_transferred
        158
    """
    check_target_model(model, "model")
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run must be True or False (got {dry_run!r})")
    layer_map = check_layer_map(layer_map)
    src = {k: (k, v) for k, v in source_state(source).items()}
    if not dry_run:
        _check_not_meta(src, model)
    src_prefixes = layer_prefixes(source if isinstance(source, nn.Module) else src, like=model)
    layers = numbered_layers(model)
    dst_prefixes = {layer.index: layer.name for layer in layers}
    src, aligned_prefixes, layout = align_layout(src, src_prefixes, dst_prefixes)
    displaced = {}
    if layer_map:
        src, displaced = remap_layers(src, layer_map, aligned_prefixes, dst_prefixes)
    plan = _class_plan(model, src, class_names) if class_names is not None else {}
    rows, load, consumed = _match(model, src, plan, build=not dry_run)
    if load:
        unexpected = model.load_state_dict(load, strict=False).unexpected_keys
        assert not unexpected, f"unexpected keys {unexpected}"
    src_index = layer_indexer(src_prefixes)
    for key, (name, tensor) in list(src.items()) + list(displaced.items()):
        if name not in consumed:
            note = "displaced by layer_map" if key in displaced and displaced[key][0] == name else ""
            rows.append(Row(name=name, status="unused", shape=None, source_shape=tuple(tensor.shape),
                            source_name=name, layer=src_index(name), numel=tensor.numel(), copied=0, parameter=False,
                            note=note))
            consumed.add(name)
    report = TransferReport(tuple(rows), tuple(ReportLayer(x.index, x.name, x.stage, x.type) for x in layers), dry_run,
                            dict(layer_map or {}), layout)
    if not dry_run and report.n_items and not report.n_transferred:
        warnings.warn(_nothing_transferred(report, src), UserWarning, stacklevel=2)
    return report


def _check_not_meta(src: dict, model: nn.Module) -> None:
    """Meta tensors (a manifest, a model built on the meta device) have shapes and no values: a ledger only."""
    side = ("source" if any(t.is_meta for _, t in src.values()) else
            "model" if any(t.is_meta for t in model.state_dict().values()) else None)
    if side:
        raise ValueError(f"the {side} holds shapes only (meta tensors, e.g. workbench.manifests.manifest_model): "
                         "there are no values to copy. Pass dry_run=True to read the ledger")


def _nothing_transferred(report: TransferReport, src: dict) -> str:
    target = next((r.name for r in report.rows if r.status != "unused"), "?")
    if not src:
        return f"{report.headline}: the source holds no tensors; check that it is the checkpoint you meant"
    return (f"{report.headline}: no source entry matched a target entry by name and shape (e.g. target {target!r}, "
            f"source {next(iter(src.values()))[0]!r}). Likely causes: the source uses another layout (a foreign "
            f"model names its layers its own way; Ultralytics' 'model.{{i}}' and this workbench's 'layers.{{i}}' "
            f"are lined up by themselves), or another architecture (scale, task, channels). Pass "
            f"layer_map=suggest_layer_map(source, model) to match layers by position and shape, and read "
            f"report.where('unused') to see what the source holds")


def _match(model: nn.Module, src: dict, plan: dict, build: bool):
    """The ledger rows for the target entries, the tensors to load, and the source names used."""
    target = model.state_dict()
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    index = layer_indexer({layer.index: layer.name for layer in numbered_layers(model)})
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
