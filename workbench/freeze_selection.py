"""What a :func:`~workbench.freezing.freeze` or ``unfreeze`` call selects, and the checks on its arguments.

A call selects by ``depth`` (layers ``0..depth-1``, YOLOv5's ``--freeze N``), by ``layers``
(indices) or by ``patterns`` over parameter names; layers are
:func:`~workbench.layers.numbered_layers`. The :class:`Selection` names the parameters and the
BatchNorm modules inside it. Every check raises a ``ValueError`` that names the argument and the
fix, before anything changes.

Example:
    >>> from workbench import build_model
    >>> chosen = selection_of(build_model(nc=3), depth=1, layers=None, patterns=None)
    >>> chosen.text, chosen.params, chosen.norms
    ('depth=1', ('layers.0.conv.weight', 'layers.0.bn.weight', 'layers.0.bn.bias'), ('layers.0.bn',))
    >>> matches("*.bn.*", "layers.0.bn.weight"), matches("bn", "layers.0.conv.weight")
    (True, False)
"""
from __future__ import annotations

import fnmatch
import operator
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .batchnorm import BN_POLICIES
from .layers import layer_index_of, numbered_layers


@dataclass(frozen=True)
class Selection:
    """The parameters and BatchNorm modules one call selects, and how the user selected them."""

    text: str  # how the user selected, for the report ("depth=9")
    params: tuple[str, ...]  # parameter names (as model.named_parameters() gives them)
    norms: tuple[str, ...]  # BatchNorm module names


def join_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module (e.g. build_model(nc=3)), got {type(model).__name__}")


def _index(value):
    """Python's or numpy's integer as an ``int`` (``operator.index``); anything else (bools too) unchanged."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def check_policy(bn: str) -> None:
    if not isinstance(bn, str) or bn not in BN_POLICIES:
        raise ValueError(f"unknown BatchNorm policy bn={bn!r}; choose one of {list(BN_POLICIES)}")


def check_depth(depth, n_layers: int) -> int:
    depth = _index(depth)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= n_layers:
        raise ValueError(f"depth must be an integer in 0..{n_layers} (the model has {n_layers} numbered layers; "
                         f"depth N freezes layers 0..N-1), got {depth!r}")
    return depth


def _check_layers(layers: Iterable[int] | int, n_layers: int) -> list[int]:
    layers = _index(layers)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (int, Iterable)):
        raise ValueError(f"layers must be a layer index or a list of them (0..{n_layers - 1}), got {layers!r}")
    indices = [layers] if isinstance(layers, int) else [_index(i) for i in layers]
    if not indices:
        raise ValueError(f"layers=[] selects nothing; give indices in 0..{n_layers - 1}")
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers:
            raise ValueError(f"unknown layer index {i!r}: the model's layers are numbered 0..{n_layers - 1}")
    return indices


def matches(pattern: str, name: str) -> bool:
    """A pattern with ``*``, ``?`` or ``[`` is an fnmatch glob over the whole name; otherwise a substring."""
    return fnmatch.fnmatchcase(name, pattern) if any(c in pattern for c in "*?[") else pattern in name


def _by_patterns(model: nn.Module, patterns: Iterable[str] | str) -> Selection:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    names = [n for n, _ in model.named_parameters()]
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"patterns must be non-empty strings matched against parameter names, got {patterns!r}")
    for pattern in patterns:
        if not any(matches(pattern, n) for n in names):
            raise ValueError(f"pattern {pattern!r} matches no parameter name; names look like {names[:3]} "
                             f"(a pattern with * ? [ is a glob over the whole name, otherwise a substring)")
    chosen = tuple(n for n in names if any(matches(p, n) for p in patterns))
    norms = tuple(m_name for m_name, m in model.named_modules() if isinstance(m, _BatchNorm) and any(
        matches(p, join_name(m_name, t)) for t, _ in [*m.named_parameters(), *m.named_buffers()] for p in patterns))
    return Selection(f"patterns={patterns}", chosen, norms)


def selection_of(model: nn.Module, depth, layers, patterns, everything_if_none: bool = False) -> Selection:
    given = [k for k, v in (("depth", depth), ("layers", layers), ("patterns", patterns)) if v is not None]
    if len(given) > 1 or (not given and not everything_if_none):
        raise ValueError(f"pass exactly one of depth=, layers= or patterns= (got {', '.join(given) or 'none'})")
    if patterns is not None:
        return _by_patterns(model, patterns)
    norms = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    names = [n for n, _ in model.named_parameters()]
    if not given:
        return Selection("everything", tuple(names), tuple(norms))
    numbered = numbered_layers(model)
    if depth is not None:
        chosen, text = set(range(check_depth(depth, len(numbered)))), f"depth={depth}"
    else:
        chosen = set(_check_layers(layers, len(numbered)))
        text = f"layers={sorted(chosen)}"
    return Selection(text, tuple(n for n in names if layer_index_of(n, numbered) in chosen),
                      tuple(n for n in norms if layer_index_of(n, numbered) in chosen))

