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

Staged unfreezing: :func:`set_freeze_depth` moves the frozen prefix to another depth, and a
schedule ``{epoch: depth}`` is checked by :func:`check_schedule` and read by :func:`depth_at`.
What a call selects and the checks on its arguments live in :mod:`workbench.freeze_selection`,
the report in :mod:`workbench.freeze_report`, BatchNorm drift (:func:`bn_drift`) in
:mod:`workbench.bn_stats`; their public names are importable from here too.

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

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .batchnorm import BN_POLICIES, bn_policy, pin, release
from .bn_stats import BNDrift, BNDriftRow, bn_drift, bn_snapshot
from .freeze_report import FreezeReport, FreezeRow, build_report
from .freeze_selection import check_depth, check_model, check_policy, join_name, matches, selection_of
from .layers import layer_index_of, numbered_layers

__all__ = [
    "BN_POLICIES",
    "BNDrift",
    "BNDriftRow",
    "FreezeReport",
    "FreezeRow",
    "bn_drift",
    "bn_policy",
    "bn_snapshot",
    "check_optimizer_holds",
    "check_schedule",
    "depth_at",
    "freeze",
    "frozen_by_workbench",
    "matches",
    "set_freeze_depth",
    "unfreeze",
]

_FROZEN = "_workbench_frozen"  # on a module: the local names of its parameters that freeze() turned off


# ---------------------------------------------------------------- what the workbench froze

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
    check_model(model)
    check_policy(bn)
    selection = selection_of(model, depth, layers, patterns)
    params = dict(model.named_parameters())
    norms = {n: model.get_submodule(n) for n in selection.norms}
    clashes = [n for n, m in norms.items() if bn_policy(m) not in (None, bn)]
    if clashes:
        old = bn_policy(norms[clashes[0]])
        raise ValueError(f"{clashes[0]} (and {len(clashes) - 1} more) is already frozen with bn={old!r}: pass "
                         f"bn={old!r}, or unfreeze those layers first")
    keep = {join_name(n, t) for n, m in norms.items() for t, _ in m.named_parameters(recurse=False)} if bn == "affine" \
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
    chosen = range(depth) if depth is not None else layers if layers is not None else ()
    return build_report(model, "freeze", selection.text, bn, to_freeze, untouched, new_norms, chosen)


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
    check_model(model)
    selection = selection_of(model, depth, layers, patterns, everything_if_none=True)
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
    return build_report(model, "unfreeze", selection.text, None, released, untouched, norms)


# ---------------------------------------------------------------- staged unfreezing

def _trainable_at(model: nn.Module, depth: int, bn: str) -> int:
    """Parameters left trainable by :func:`set_freeze_depth` ``(model, depth, bn)``, computed without changing it."""
    numbered = numbered_layers(model)
    bn_params = {join_name(m_name, t) for m_name, m in model.named_modules() if isinstance(m, _BatchNorm)
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
    check_model(model)
    check_policy(bn)
    numbered = numbered_layers(model)
    depth = check_depth(depth, len(numbered))
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
    return build_report(model, "set depth", f"depth={depth}", bn, changed, [], [])


def check_optimizer_holds(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """With a freeze schedule the optimiser must hold every parameter a depth could unfreeze."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [n for n, p in model.named_parameters()
               if id(p) not in held and (p.requires_grad or frozen_by_workbench(model, n))]
    if missing:
        raise ValueError(f"the optimizer does not hold {len(missing)} parameters the freeze schedule may unfreeze "
                         f"(e.g. {missing[0]}): build it over all parameters, e.g. with "
                         f"workbench.optim.param_groups(model, lr), which includes frozen ones")


def check_schedule(model: nn.Module, schedule: Mapping[int, int], bn: str = "eval",
                   optimizer: torch.optim.Optimizer | None = None) -> dict[int, int]:
    """Validate a staged schedule ``{epoch: depth}`` (e.g. ``{0: 9, 2: 0}``) and return it sorted by epoch.

    With an ``optimizer``, every parameter the schedule may unfreeze must be in it (the
    workbench's :func:`~workbench.optim.param_groups` includes frozen parameters for this).
    """
    check_policy(bn)
    if not isinstance(schedule, Mapping) or not schedule:
        raise ValueError(f"a freeze schedule is a non-empty dict {{epoch: depth}}, e.g. {{0: 9, 2: 0}}; "
                         f"got {schedule!r}")
    for epoch, depth in schedule.items():
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"freeze schedule epochs must be integers >= 0 (0 is the first epoch), got {epoch!r}")
        check_depth(depth, len(numbered_layers(model)))
        if _trainable_at(model, depth, bn) == 0:
            raise ValueError(f"freeze schedule depth {depth} (from epoch index {epoch}) would leave no trainable "
                             "parameter")
    if optimizer is not None:
        check_optimizer_holds(model, optimizer)
    return dict(sorted(schedule.items()))


def depth_at(schedule: Mapping[int, int], epoch: int) -> int | None:
    """The depth in force at ``epoch``: that of the latest scheduled epoch <= ``epoch`` (``None`` before the first)."""
    started = [e for e in schedule if e <= epoch]
    return schedule[max(started)] if started else None
