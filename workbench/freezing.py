"""Freezing: ``freeze(model, depth=N)`` as YOLOv5's ``--freeze N``, an explicit BatchNorm policy, staged unfreezing.

``freeze`` sets ``requires_grad=False`` on the selected parameters (and drops their ``.grad``)
and returns a :class:`FreezeReport` of what changed. ``unfreeze`` undoes it, but only for what
the workbench froze: each module remembers the names of its own parameters that ``freeze``
turned off (a plain attribute, so ``copy.deepcopy`` keeps it and the ``state_dict`` does not
change), and a parameter you froze by hand is never re-enabled.

BatchNorm policy (``bn=``), for the BatchNorm modules inside what is frozen:

- ``"eval"``: running statistics fixed; the module stays in eval mode whatever ``model.train()``
  asks, as Ultralytics >= 8.3.99 and Keras do.
- ``"train"``: the module follows the model's mode, so its statistics keep drifting (YOLOv5).
- ``"affine"``: gamma and beta stay trainable, statistics drift (fastai's ``train_bn``).
- ``"frozen"``: statistics and gamma/beta fixed whatever the mode: its ``forward`` normalises
  with the running statistics even in training mode (timm's ``FrozenBatchNorm2d``), while
  ``module.training`` still follows the model.

The policy is visible: the module's class becomes a subclass that carries it
(:mod:`workbench.batchnorm`; ``BatchNorm2d`` under ``"eval"`` prints as
``EvalBatchNorm2d(..., policy='eval')``), the same module object with the same parameters and
buffers. ``unfreeze`` gives it its class back.

Example:
    >>> from workbench import build_model
    >>> model = build_model(nc=3)
    >>> report = freeze(model, depth=9)
    >>> report.trainable == sum(p.numel() for p in model.layers[9].parameters())
    True
    >>> _ = model.train(); model.layers[0].bn.training
    False
    >>> bn = model.layers[0].bn; type(bn).__name__, repr(bn).endswith("policy='eval')")
    ('EvalBatchNorm2d', True)
    >>> unfreeze(model).tensors == report.tensors
    True
"""
from __future__ import annotations

import fnmatch
import functools
import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .batchnorm import BN_POLICIES, bn_policy, pin, release
from .layers import layer_index_of, numbered_layers
from .table import Table, TableResult

_FROZEN = "_workbench_frozen"  # on a module: the local names of its parameters that freeze() turned off


# ---------------------------------------------------------------- selection

@dataclass(frozen=True)
class _Selection:
    text: str  # how the user selected, for the report ("depth=9")
    params: tuple[str, ...]  # parameter names (as model.named_parameters() gives them)
    norms: tuple[str, ...]  # BatchNorm module names


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_model(model) -> None:
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


def _check_policy(bn: str) -> None:
    if not isinstance(bn, str) or bn not in BN_POLICIES:
        raise ValueError(f"unknown BatchNorm policy bn={bn!r}; choose one of {list(BN_POLICIES)}")


def _check_depth(depth, n_layers: int) -> int:
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


def _by_patterns(model: nn.Module, patterns: Iterable[str] | str) -> _Selection:
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
        matches(p, _join(m_name, t)) for t, _ in [*m.named_parameters(), *m.named_buffers()] for p in patterns))
    return _Selection(f"patterns={patterns}", chosen, norms)


def _select(model: nn.Module, depth, layers, patterns, everything_if_none: bool = False) -> _Selection:
    given = [k for k, v in (("depth", depth), ("layers", layers), ("patterns", patterns)) if v is not None]
    if len(given) > 1 or (not given and not everything_if_none):
        raise ValueError(f"pass exactly one of depth=, layers= or patterns= (got {', '.join(given) or 'none'})")
    if patterns is not None:
        return _by_patterns(model, patterns)
    norms = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    names = [n for n, _ in model.named_parameters()]
    if not given:
        return _Selection("everything", tuple(names), tuple(norms))
    numbered = numbered_layers(model)
    if depth is not None:
        chosen, text = set(range(_check_depth(depth, len(numbered)))), f"depth={depth}"
    else:
        chosen = set(_check_layers(layers, len(numbered)))
        text = f"layers={sorted(chosen)}"
    return _Selection(text, tuple(n for n in names if layer_index_of(n, numbered) in chosen),
                      tuple(n for n in norms if layer_index_of(n, numbered) in chosen))


# ---------------------------------------------------------------- bookkeeping and BatchNorm mechanics

def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, local = name.rpartition(".")
    return model.get_submodule(module_name), local


def frozen_by_workbench(model: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` of ``model`` was frozen by :func:`freeze` (and not since unfrozen)."""
    owner, local = _owner(model, name)
    return local in getattr(owner, _FROZEN, ())


def _mark(model: nn.Module, name: str, frozen: bool) -> None:
    owner, local = _owner(model, name)
    record = set(getattr(owner, _FROZEN, ()))
    if frozen:
        record.add(local)
    else:
        record.discard(local)
    setattr(owner, _FROZEN, record)


# ---------------------------------------------------------------- report

@dataclass(frozen=True)
class FreezeRow:
    """One numbered layer: what this call changed in it, and how much of it is frozen now."""

    index: int
    name: str
    stage: str
    type: str
    tensors: int  # parameter tensors whose requires_grad this call changed
    params: int  # their element count
    frozen: int  # elements frozen in this layer now (by anyone)
    total: int  # elements in this layer
    bn: int  # BatchNorm modules given (freeze) or released from (unfreeze) a policy by this call


@dataclass(frozen=True, repr=False)
class FreezeReport(TableResult):
    """What a :func:`freeze` or :func:`unfreeze` call changed, per layer; prints as text and as HTML."""

    action: str  # "freeze", "unfreeze" or "set depth"
    selection: str
    bn: str | None
    rows: tuple[FreezeRow, ...]
    changed: tuple[str, ...]  # parameter names whose requires_grad this call changed
    untouched: tuple[str, ...]  # selected parameters frozen outside the workbench, left as they are

    @property
    def tensors(self) -> int:
        return len(self.changed)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.rows)

    @property
    def trainable(self) -> int:
        return self.total - sum(r.frozen for r in self.rows)

    def summary(self) -> str:
        verb = {"freeze": "froze", "unfreeze": "unfroze", "set depth": "changed"}[self.action]
        policy = f", bn={self.bn!r}" if self.bn else ""
        share = 100 * self.trainable / self.total if self.total else 0.0
        text = (f"{self.action} {self.selection}{policy}: {verb} {self.tensors} tensors ({self.params:,} parameters) "
                f"in {sum(r.tensors > 0 for r in self.rows)} layers; trainable {self.trainable:,} of "
                f"{self.total:,} ({share:.1f}%)")
        if self.untouched:
            text += (f"; left alone {len(self.untouched)} tensors frozen outside the workbench "
                     f"(e.g. {self.untouched[0]})")
        return text

    HEADER = ("index", "name", "stage", "type", "changed", "changed params", "frozen", "params", "bn")

    def as_table(self) -> Table:
        rows = [{"index": r.index, "name": r.name, "stage": r.stage, "type": r.type, "changed": r.tensors,
                 "changed params": r.params, "frozen": r.frozen, "params": r.total, "bn": r.bn} for r in self.rows]
        return Table(self.HEADER, rows, title=self.summary())


def _report(model, action, selection, bn, changed, untouched, norms) -> FreezeReport:
    numbered, changed = numbered_layers(model), list(changed)
    counts: dict[int | None, Counter] = {}  # layer index -> FreezeRow's counts by field name
    changed_set = set(changed)
    for name, p in model.named_parameters():
        count = counts.setdefault(layer_index_of(name, numbered), Counter())
        count["tensors"] += name in changed_set
        count["params"] += p.numel() if name in changed_set else 0
        count["frozen"] += 0 if p.requires_grad else p.numel()
        count["total"] += p.numel()
    for name in norms:
        counts.setdefault(layer_index_of(name, numbered), Counter())["bn"] += 1

    def tally(index: int | None) -> dict[str, int]:
        count = counts.get(index, Counter())
        return {field: count[field] for field in ("tensors", "params", "frozen", "total", "bn")}

    rows = [FreezeRow(index=layer.index, name=layer.name, stage=layer.stage, type=layer.type, **tally(layer.index))
            for layer in numbered]
    if None in counts:
        rows.append(FreezeRow(index=-1, name="(outside the numbered layers)", stage="", type="", **tally(None)))
    return FreezeReport(action, selection, bn, tuple(rows), tuple(changed), tuple(untouched))


# ---------------------------------------------------------------- freeze / unfreeze

def freeze(model: nn.Module, depth: int | None = None, *, layers: Iterable[int] | None = None,
           patterns: Iterable[str] | str | None = None, bn: str = "eval") -> FreezeReport:
    """Freeze layers ``0..depth-1`` (YOLOv5 ``--freeze N``), given layer indices, or parameters matching patterns.

    Layers are :func:`~workbench.layers.numbered_layers` (a module without numbered layers is
    read as its top-level children, in order). ``patterns`` match parameter names: a pattern with
    ``*``, ``?`` or ``[`` is an fnmatch glob over the whole name, any other is a substring. ``bn``
    is the policy for the BatchNorm modules inside the selection (see the module docstring).

    Raises ``ValueError`` (model unchanged) for a bad selection or policy, for a BatchNorm already
    frozen under another policy, and when nothing would be left to train.

    Example:
        >>> from workbench import build_model
        >>> model = build_model(nc=3)
        >>> freeze(model, patterns="layers.0.*").tensors  # conv weight, bn weight, bn bias
        3
    """
    _check_model(model)
    _check_policy(bn)
    selection = _select(model, depth, layers, patterns)
    params = dict(model.named_parameters())
    norms = {n: model.get_submodule(n) for n in selection.norms}
    clashes = [n for n, m in norms.items() if bn_policy(m) not in (None, bn)]
    if clashes:
        old = bn_policy(norms[clashes[0]])
        raise ValueError(f"{clashes[0]} (and {len(clashes) - 1} more) is already frozen with bn={old!r}: pass "
                         f"bn={old!r}, or unfreeze those layers first")
    keep = {_join(n, t) for n, m in norms.items() for t, _ in m.named_parameters(recurse=False)} if bn == "affine" \
        else set()
    to_freeze = [n for n in selection.params if params[n].requires_grad and n not in keep]
    untouched = [n for n in selection.params if not params[n].requires_grad and not frozen_by_workbench(model, n)]
    left = sum(p.numel() for n, p in params.items() if p.requires_grad) - sum(params[n].numel() for n in to_freeze)
    if left == 0 and to_freeze:
        raise ValueError(f"freeze({selection.text}) would leave no trainable parameter: keep the head trainable "
                         f"(depth <= {len(numbered_layers(model)) - 1}), or use bn='affine' to train BatchNorm only")
    for n in to_freeze:
        params[n].requires_grad_(False)
        params[n].grad = None  # a stale gradient would still be applied (weight decay, momentum)
        _mark(model, n, True)
    new_norms = [n for n, m in norms.items() if bn_policy(m) is None]
    for n in new_norms:
        pin(norms[n], bn)
    return _report(model, "freeze", selection.text, bn, to_freeze, untouched, new_norms)


def unfreeze(model: nn.Module, depth: int | None = None, *, layers: Iterable[int] | None = None,
             patterns: Iterable[str] | str | None = None) -> FreezeReport:
    """Undo :func:`freeze` for everything (no selection), layers ``0..depth-1``, given layers or name patterns.

    Only what the workbench froze is re-enabled: parameters frozen by hand stay frozen and are
    listed in ``report.untouched``. BatchNorm modules in the selection lose their policy and
    follow ``model``'s mode again.

    Example:
        >>> from workbench import build_model
        >>> model = build_model(nc=3)
        >>> _ = model.layers[9].linear.bias.requires_grad_(False)  # frozen by hand
        >>> _ = freeze(model, depth=2); report = unfreeze(model)
        >>> report.untouched, model.layers[0].conv.weight.requires_grad
        (('layers.9.linear.bias',), True)
    """
    _check_model(model)
    selection = _select(model, depth, layers, patterns, everything_if_none=True)
    params = dict(model.named_parameters())
    released, untouched = [], []
    for n in selection.params:
        if frozen_by_workbench(model, n):
            _mark(model, n, False)
            if not params[n].requires_grad:
                released.append(n)
                params[n].requires_grad_(True)
        elif not params[n].requires_grad:
            untouched.append(n)
    norms = [n for n in selection.norms if bn_policy(model.get_submodule(n)) is not None]
    for n in norms:
        release(model.get_submodule(n), model.training)
    return _report(model, "unfreeze", selection.text, None, released, untouched, norms)


# ---------------------------------------------------------------- staged unfreezing

def _trainable_at(model: nn.Module, depth: int, bn: str) -> int:
    """Parameters left trainable by :func:`set_freeze_depth` ``(model, depth, bn)``, computed without changing it."""
    numbered = numbered_layers(model)
    bn_params = {_join(m_name, t) for m_name, m in model.named_modules() if isinstance(m, _BatchNorm)
                 for t, _ in m.named_parameters(recurse=False)}
    total = 0
    for n, p in model.named_parameters():
        usable = p.requires_grad or frozen_by_workbench(model, n)
        index = layer_index_of(n, numbered)
        prefix = index is not None and index < depth
        total += p.numel() if usable and (not prefix or (bn == "affine" and n in bn_params)) else 0
    return total


def set_freeze_depth(model: nn.Module, depth: int, bn: str = "eval") -> FreezeReport:
    """Make layers ``0..depth-1`` frozen and unfreeze what the workbench froze beyond them: one step of a schedule.

    Example:
        >>> from workbench import build_model
        >>> model = build_model(nc=3)
        >>> _ = set_freeze_depth(model, 9)
        >>> set_freeze_depth(model, 0).tensors == set_freeze_depth(model, 9).tensors
        True
    """
    _check_model(model)
    _check_policy(bn)
    numbered = numbered_layers(model)
    depth = _check_depth(depth, len(numbered))
    if _trainable_at(model, depth, bn) == 0:
        raise ValueError(f"freeze depth {depth} would leave no trainable parameter: use a depth <= "
                         f"{len(numbered) - 1}")
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    norm_names = {n for n, m in model.named_modules() if isinstance(m, _BatchNorm)}
    clashing = {layer_index_of(n, numbered) for n in norm_names if bn_policy(model.get_submodule(n)) not in (None, bn)}
    release = sorted({i for i in range(len(numbered)) if i >= depth or i in clashing})
    if release:
        unfreeze(model, layers=release)
    if depth:
        freeze(model, depth=depth, bn=bn)
    changed = [n for n, p in model.named_parameters() if p.requires_grad != before[n]]
    return _report(model, "set depth", f"depth={depth}", bn, changed, [], [])


def check_schedule(model: nn.Module, schedule: Mapping[int, int], bn: str = "eval",
                   optimizer: torch.optim.Optimizer | None = None) -> dict[int, int]:
    """Validate a staged schedule ``{epoch: depth}`` (e.g. ``{0: 9, 2: 0}``) and return it sorted by epoch.

    With an ``optimizer``, every parameter the schedule may unfreeze must be in it (the
    workbench's :func:`~workbench.optim.param_groups` includes frozen parameters for this).
    """
    _check_policy(bn)
    if not isinstance(schedule, Mapping) or not schedule:
        raise ValueError(f"a freeze schedule is a non-empty dict {{epoch: depth}}, e.g. {{0: 9, 2: 0}}; "
                         f"got {schedule!r}")
    for epoch, depth in schedule.items():
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"freeze schedule epochs must be integers >= 0 (0 is the first epoch), got {epoch!r}")
        _check_depth(depth, len(numbered_layers(model)))
        if _trainable_at(model, depth, bn) == 0:
            raise ValueError(f"freeze schedule depth {depth} (epoch {epoch}) would leave no trainable parameter")
    if optimizer is not None:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in model.named_parameters()
                   if id(p) not in held and (p.requires_grad or frozen_by_workbench(model, n))]
        if missing:
            raise ValueError(f"the optimizer does not hold {len(missing)} parameters the schedule may unfreeze "
                             f"(e.g. {missing[0]}): build it over all parameters, e.g. with "
                             f"workbench.optim.param_groups(model, lr), which includes frozen ones")
    return dict(sorted(schedule.items()))


def depth_at(schedule: Mapping[int, int], epoch: int) -> int | None:
    """The depth in force at ``epoch``: that of the latest scheduled epoch <= ``epoch`` (``None`` before the first)."""
    started = [e for e in schedule if e <= epoch]
    return schedule[max(started)] if started else None


# ---------------------------------------------------------------- BatchNorm drift

@dataclass(frozen=True)
class BNDriftRow:
    """How far one BatchNorm's running statistics moved from a start.

    ``mean_shift``: RMS change of the running mean over the RMS starting standard deviation
    ``sqrt(var0 + eps)`` (0.5: the means moved by half a standard deviation). ``var_change``:
    ``||var - var0|| / ||var0||``. ``updates``: batches counted by ``num_batches_tracked`` since
    the start (``None`` if the module does not count them).
    """

    name: str
    layer: int | None
    mean_shift: float
    var_change: float
    updates: int | None


class BNDrift(TableResult, list):
    """Rows of :class:`BNDriftRow`, one per BatchNorm with running statistics; prints as text and HTML."""

    HEADER = ("layer", "name", "mean shift (std0)", "var change", "updates")

    def as_table(self) -> Table:
        return Table(self.HEADER, [{"layer": r.layer, "name": r.name, "mean shift (std0)": f"{r.mean_shift:.4g}",
                                    "var change": f"{r.var_change:.4g}", "updates": r.updates} for r in self])

    def moved(self) -> list[str]:
        """Names of the BatchNorm modules whose running statistics changed at all."""
        return [r.name for r in self if r.mean_shift > 0 or r.var_change > 0]


def bn_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm buffer (running stats and batch count): the start for :func:`bn_drift`."""
    return {_join(m_name, t): b.detach().clone() for m_name, m in model.named_modules() if isinstance(m, _BatchNorm)
            for t, b in m.named_buffers(recurse=False) if b is not None}


@torch.no_grad()
def bn_drift(model: nn.Module, start: Mapping[str, torch.Tensor] | nn.Module) -> BNDrift:
    """Per BatchNorm module, how far its running mean and variance moved from ``start``.

    ``start`` is :func:`bn_snapshot` ``(model)``, a ``state_dict`` taken before training, or a
    model of the same architecture.

    Example:
        >>> model = nn.Sequential(nn.BatchNorm1d(2))
        >>> start = bn_snapshot(model)
        >>> _ = model(torch.randn(8, 2) + 3)
        >>> row = bn_drift(model, start)[0]
        >>> row.mean_shift > 0, row.updates
        (True, 1)
    """
    start = start.state_dict() if isinstance(start, nn.Module) else start
    numbered, rows = numbered_layers(model), BNDrift()
    for m_name, m in model.named_modules():
        if not isinstance(m, _BatchNorm) or m.running_mean is None:
            continue
        keys = [_join(m_name, k) for k in ("running_mean", "running_var")]
        if any(k not in start for k in keys):
            raise ValueError(f"start has no {keys[0]}: take it with bn_snapshot(model) (or the state_dict) "
                             f"before training, from a model of the same architecture")
        mean0, var0 = (start[k].to(m.running_mean.device, torch.float32) for k in keys)
        mean, var = m.running_mean.float(), m.running_var.float()
        shift = ((mean - mean0).square().mean() / (var0 + m.eps).mean()).sqrt().item()
        change = ((var - var0).norm() / var0.norm().clamp_min(1e-12)).item()
        count0 = start.get(_join(m_name, "num_batches_tracked"))
        updates = None if count0 is None or m.num_batches_tracked is None else int(m.num_batches_tracked - count0)
        rows.append(BNDriftRow(name=m_name, layer=layer_index_of(m_name, numbered), mean_shift=shift,
                               var_change=change, updates=updates))
    return rows
