"""Which layer of a source is which layer of the target: reading a source, its layer indices, layer maps.

A source (a model, a state_dict, a checkpoint dict or path) is read as ``{name: tensor}`` by
:func:`source_state`; :func:`layer_prefixes` numbers its layers as
:func:`~workbench.layers.numbered_layers` numbers a model's. A layer map
``{source_layer: target_layer}`` renames source layers before :func:`workbench.transfer.transfer`
matches them, for architectures whose indices shifted; :func:`suggest_layer_map` proposes one
by aligning the two sequences of per-layer entry names and shapes.

Before any of that, :func:`align_layout` lines up the two naming layouts of numbered layers:
Ultralytics and YOLOv5 name layer ``i`` ``model.{i}``, this workbench ``layers.{i}``. A source
in one layout and a target in the other are matched index for index, and the ledger says so.

Example:
    >>> from workbench import build_model
    >>> layer_prefixes(build_model(nc=3))[9]
    'layers.9'
    >>> suggest_layer_map(build_model(nc=10), build_model(nc=3))[9]
    9
"""
from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .checkpoints import STATE_DICT_KEYS, load_weights
from .i18n import N_
from .layers import numbered_layers
from .run_labels import event

_NUMBERED = re.compile(r"^((?:layers|model)\.\d+)\.")


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


def _container(prefixes: dict[int, str]) -> str | None:
    """``"model"`` or ``"layers"`` when every layer is ``{that}.{i}`` with its own index ``i``, else ``None``."""
    heads = {p.split(".", 1)[0] for p in prefixes.values()}
    if len(heads) == 1 and heads <= {"model", "layers"} and all(p == f"{next(iter(heads))}.{i}"
                                                                 for i, p in prefixes.items()):
        return next(iter(heads))
    return None


def _layout_name(container: str, keys) -> str:
    """The family a ``model.{i}``/``layers.{i}`` state_dict comes from: YOLOv5 keeps anchors in its Detect."""
    if container == "layers":
        return "workbench"
    return "YOLOv5" if any(k.endswith((".anchors", ".anchor_grid")) for k in keys) else "Ultralytics"


def align_layout(src: dict, src_prefixes: dict[int, str], dst_prefixes: dict[int, str]):
    """The source renamed into the target's layout of numbered layers, its new prefixes, and a note.

    When every source entry sits under ``model.{i}`` (Ultralytics, YOLOv5) and the target's
    layers are ``layers.{i}`` (this workbench), or the other way round, source layer ``i`` is
    renamed to target layer ``i``; the note says so. Any other pair is returned unchanged with
    an empty note. ``src`` is ``{key: (source name, tensor)}``; the source names are kept.

    Example:
        >>> src = {"model.0.conv.weight": ("model.0.conv.weight", torch.zeros(1))}
        >>> renamed, prefixes, note = align_layout(src, {0: "model.0"}, {0: "layers.0"})
        >>> list(renamed), prefixes, note
        (['layers.0.conv.weight'], {0: 'layers.0'}, 'source layout: Ultralytics (model.{i} → layers.{i})')
    """
    have, want = _container(src_prefixes), _container(dst_prefixes)
    if have is None or want is None or have == want or not all(k.startswith(have + ".") for k in src):
        return src, src_prefixes, ""
    index = layer_indexer(src_prefixes)
    renamed = {}
    for key, entry in src.items():
        i = index(key)
        if i is None or not key.startswith(src_prefixes[i] + "."):
            return src, src_prefixes, ""
        renamed[f"{want}.{i}{key[len(src_prefixes[i]):]}"] = entry
    note = event(N_("source layout: {name} ({have}.{{i}} → {want}.{{i}})"), name=_layout_name(have, src), have=have,
                 want=want)
    return renamed, {i: f"{want}.{i}" for i in src_prefixes}, note


def layer_indexer(prefixes: dict[int, str]):
    """A fast ``key -> layer index`` for state_dict keys (prefixes have at most two dotted parts)."""
    lookup = {p: i for i, p in prefixes.items()}
    default = lookup.get("")

    def index(key: str) -> int | None:
        head, _, rest = key.partition(".")
        if head in lookup:
            return lookup[head]
        return lookup.get(head + "." + rest.partition(".")[0], default)

    return index


def remap_layers(src: dict, layer_map: Mapping[int, int], src_prefixes: dict[int, str], dst_prefixes: dict[int, str]):
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
    index = layer_indexer(src_prefixes)
    kept, moved = {}, {}
    for key, entry in src.items():
        i = index(key)
        if i in layer_map:
            moved[dst_prefixes[layer_map[i]] + key[len(src_prefixes[i]):]] = entry
        else:
            kept[key] = entry
    displaced = {k: v for k, v in kept.items() if k in moved}
    return {**{k: v for k, v in kept.items() if k not in moved}, **moved}, displaced


def check_target_model(model, what: str) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what} must be the nn.Module to receive the weights (e.g. build_model(nc=3)); "
                         f"got {type(model).__name__}")


def check_layer_map(layer_map) -> dict[int, int]:
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


def _signatures(state: dict, prefixes: dict[int, str]) -> list[tuple[int, tuple]]:
    """Per layer (in index order): its entries' (name inside the layer, shape), for layers that hold any."""
    index = layer_indexer(prefixes)
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
    check_target_model(model, "model")
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
