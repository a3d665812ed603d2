"""Lesson 4, learning rates per parameter group: who is in each group, the warmup curves, the head multiplier.

* :func:`group_table`: the optimiser's groups (:func:`workbench.param_groups`) with their
  members: tag, tensors, parameters, learning rate, weight decay and the first names;
* :func:`lr_table`: every group's LR and momentum at chosen iterations of a schedule's preview;
* :func:`compare_head_lr`: the same transfer run with the head's LR multiplied by 1 and by 10
  (discriminative learning rates), each with its preview taken before training and the LR
  and momentum it recorded while training, and how far its backbone and head moved.

Example:
    >>> from workbench import build_model, param_groups
    >>> table = group_table(param_groups(build_model(nc=3), 0.01))
    >>> [(row.name, row.weight_decay) for row in table.rows]
    [('weight', 0.0005), ('norm', 0.0), ('bias', 0.0)]
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..layers import numbered_layers
from ..monitor import snapshot, weight_drift
from ..optim import make_optimizer
from ..runs import default_build, default_source, setup_run
from ..schedules import Preview, YoloSchedule
from ..table import Table, TextResult
from ..training import Batches, History, fit
from .recipe import Recipe, Target

HEAD_LR_TARGET = Target(n_per_class=10)
HEAD_LR_RECIPE = Recipe(epochs=4, batch_size=8, optimizer="sgd", lr=0.001)  # schedule None: see compare_head_lr


# ----------------------------------------------------------------------------------------------- the groups
@dataclass(frozen=True)
class GroupRow:
    """One optimiser group: its name and tag, its size, LR, weight decay, and its first members."""

    name: str
    tag: str
    tensors: int
    params: int
    lr: float
    weight_decay: float
    members: tuple[str, ...]  # every parameter name in the group


@dataclass(frozen=True, repr=False)
class GroupTable(TextResult):
    """The groups of an optimiser, one :class:`GroupRow` each; prints the first ``show`` members of each."""

    rows: tuple[GroupRow, ...]
    show: int = 3

    def __getitem__(self, name: str) -> GroupRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no group {name!r}; the groups are {[r.name for r in self.rows]}")

    def __str__(self) -> str:
        header = ("group", "tag", "tensors", "params", "lr", "weight decay", "members")
        rows = [{"group": r.name, "tag": r.tag, "tensors": r.tensors, "params": r.params, "lr": f"{r.lr:g}",
                 "weight decay": f"{r.weight_decay:g}",
                 "members": ", ".join(r.members[:self.show]) + (f", ... (+{len(r.members) - self.show})"
                                                                if len(r.members) > self.show else "")}
                for r in self.rows]
        total = sum(r.params for r in self.rows)
        title = f"{len(self.rows)} groups, {sum(r.tensors for r in self.rows)} tensors, {total:,} parameters"
        return str(Table(header, rows, indent=2, title=title))


def group_table(groups: torch.optim.Optimizer | Iterable[dict], show: int = 3) -> GroupTable:
    """One row per group of an optimiser or of :func:`workbench.param_groups`'s list.

    Groups made elsewhere (no ``names``) list their members as ``#0, #1, ...``.

    Example:
        >>> from workbench import build_model, param_groups
        >>> table = group_table(param_groups(build_model(nc=3), 0.01))
        >>> table["bias"].members[:2]  # BatchNorm's beta is a bias; its gamma is in "norm"
        ('layers.0.bn.bias', 'layers.1.bn.bias')
    """
    groups = list(groups.param_groups if isinstance(groups, torch.optim.Optimizer) else groups)
    if not groups:
        raise ValueError("no groups: pass an optimizer or param_groups(model, lr)")
    rows = []
    for k, g in enumerate(groups):
        names = tuple(g.get("names") or (f"#{i}" for i in range(len(g["params"]))))
        rows.append(GroupRow(g.get("name", str(k)), g.get("tag", "weight"), len(g["params"]),
                             sum(p.numel() for p in g["params"]), float(g.get("initial_lr", g["lr"])),
                             float(g.get("weight_decay", 0.0)), names))
    return GroupTable(tuple(rows), show)


# ----------------------------------------------------------------------------------------------- the curves
@dataclass(frozen=True, repr=False)
class LRTable(TextResult):
    """Every group's LR and momentum at a few iterations of a preview."""

    iterations: tuple[int, ...]
    lr: dict[str, tuple[float, ...]]
    momentum: tuple[float, ...]  # the same for every group
    warmup: int

    def __str__(self) -> str:
        header = ("iteration", *self.lr, "momentum")
        rows = [{"iteration": f"{i}" + (" (warmup ends)" if i == self.warmup else ""),
                 **{g: f"{self.lr[g][k]:.6g}" for g in self.lr}, "momentum": f"{self.momentum[k]:.4f}"}
                for k, i in enumerate(self.iterations)]
        return str(Table(header, rows, indent=2, title=f"warmup: {self.warmup} iterations"))


def lr_table(preview: Preview, iterations: Iterable[int] | None = None) -> LRTable:
    """LR per group and momentum at ``iterations`` (default: start, middle and end of warmup, and the last).

    Example:
        >>> from workbench import build_model, param_groups
        >>> preview = YoloSchedule().preview(param_groups(build_model(nc=3), 0.01), nb=100, epochs=100)
        >>> lr_table(preview).lr["bias"][:2]  # iteration 0 and 150 of a 300-iteration warmup
        (0.1, 0.0549505)
    """
    n = len(next(iter(preview.momentum.values())))
    if iterations is None:
        iterations = sorted({0, preview.warmup // 2, min(preview.warmup, n - 1), n - 1})
    iterations = tuple(iterations)
    bad = [i for i in iterations if not 0 <= i < n]
    if bad or not iterations:
        raise ValueError(f"iterations must be in 0..{n - 1} (the preview's run); got {list(iterations)}")
    momentum = next(iter(preview.momentum.values()))
    return LRTable(iterations, {g: tuple(round(float(v[i]), 10) for i in iterations) for g, v in preview.lr.items()},
                   tuple(round(float(momentum[i]), 10) for i in iterations), preview.warmup)


# ----------------------------------------------------------------------------------------------- the head multiplier
@dataclass(frozen=True)
class HeadLRRun:
    """One transfer run with the head's LR multiplied by ``head_mult``.

    ``lr_error``/``momentum_error``: the largest difference between what the run recorded
    (``History.lr``, ``History.momentum``) and what the preview predicted before training.
    ``drift``: ``||W - W0|| / ||W0||`` of the backbone (mean over its layers) and of the head.
    """

    head_mult: float
    groups: GroupTable
    preview: Preview = field(repr=False, compare=False)
    history: History = field(repr=False, compare=False)
    lr_error: float
    momentum_error: float
    backbone_drift: float
    head_drift: float

    @property
    def curve(self) -> list[float]:
        """Validation accuracy after each epoch."""
        return list(self.history.val.get("accuracy", []))

    @property
    def accuracy(self) -> float:
        return self.curve[-1]

    @property
    def mean_accuracy(self) -> float:
        """Validation accuracy averaged over the epochs: how fast the run got there, not only where it ended."""
        return statistics.fmean(self.curve)


@dataclass(frozen=True, repr=False)
class HeadLRComparison(TextResult):
    """The same transfer run at several head LR multipliers: one :class:`HeadLRRun` each."""

    setting: str
    runs: tuple[HeadLRRun, ...]

    def __getitem__(self, head_mult: float) -> HeadLRRun:
        for run in self.runs:
            if run.head_mult == head_mult:
                return run
        raise KeyError(f"no run with head_mult={head_mult!r}; the runs have {[r.head_mult for r in self.runs]}")

    def histories(self) -> dict[str, History]:
        """``{"head x10": History, ...}``, for :func:`workbench.plots.compare_runs`."""
        return {f"head x{run.head_mult:g}": run.history for run in self.runs}

    def __str__(self) -> str:
        header = ("run", "head lr", "backbone lr", "per epoch", "mean acc", "final acc", "backbone drift",
                  "head drift", "recorded - preview")
        rows = []
        for r in self.runs:
            lrs = {row.name: row.lr for row in r.groups.rows}
            head = lrs.get("weight/head", lrs.get("weight"))
            rows.append({"run": f"head x{r.head_mult:g}", "head lr": f"{head:g}", "backbone lr": f"{lrs['weight']:g}",
                         "per epoch": " ".join(f"{a:.2f}" for a in r.curve), "mean acc": f"{r.mean_accuracy:.3f}",
                         "final acc": f"{r.accuracy:.3f}", "backbone drift": f"{r.backbone_drift:.4f}",
                         "head drift": f"{r.head_drift:.4f}",
                         "recorded - preview": f"{max(r.lr_error, r.momentum_error):.1e}"})
        return str(Table(header, rows, indent=2, title=self.setting))


def _max_difference(recorded: dict[str, list[float]], predicted: dict[str, np.ndarray]) -> float:
    if set(recorded) != set(predicted):
        raise RuntimeError(f"recorded groups {sorted(recorded)} differ from the preview's {sorted(predicted)}")
    return max(float(np.max(np.abs(np.asarray(v) - predicted[g][:len(v)]))) for g, v in recorded.items())


def _stage_drift(model: nn.Module, start: dict) -> tuple[float, float]:
    drift, layers = weight_drift(model, start), numbered_layers(model)
    backbone = [drift[layer.name] for layer in layers if layer.stage == "backbone" and layer.name in drift]
    head = [drift[layer.name] for layer in layers if layer.stage == "head" and layer.name in drift]
    return (statistics.fmean(backbone) if backbone else 0.0), (statistics.fmean(head) if head else 0.0)


def _head_lr_schedule(recipe: Recipe):
    if recipe.optimizer not in ("sgd", "adamw"):
        raise ValueError(f"recipe.optimizer must be 'sgd' or 'adamw' (got {recipe.optimizer!r})")
    if recipe.lr is None:
        raise ValueError("recipe.lr must be set: the base (backbone) learning rate lr0, e.g. Recipe(lr=0.001)")
    if recipe.schedule is not None:
        return recipe.schedule
    return YoloSchedule("ultralytics", warmup_epochs=1, warmup_bias_lr=0.1 if recipe.optimizer == "sgd" else 0.0)


def _head_lr_run(mult: float, train, val, recipe: Recipe, schedule, seed: int, source, build) -> HeadLRRun:
    model, _ = setup_run("pretrained", source, build, train.nc, depth=0, seed=seed)
    start = snapshot(model)
    opt = make_optimizer(model, recipe.optimizer, lr=recipe.lr, lr_mult=None if mult == 1 else {"head": mult})
    groups, history = group_table(opt), History()
    preview = schedule.preview(opt, nb=len(Batches(train, recipe.batch_size)), epochs=recipe.epochs)
    fit(model, train, val, **{**recipe.fit_options(), "optimizer": opt, "lr": None, "schedule": schedule},
        seed=seed, progress=False, history=history)
    if history.status != "completed":
        raise RuntimeError(f"the head x{mult:g} run did not complete ({history.status}): {history.events}")
    return HeadLRRun(mult, groups, preview, history, _max_difference(history.lr, preview.lr),
                     _max_difference(history.momentum, preview.momentum), *_stage_drift(model, start))


def compare_head_lr(target: Target = HEAD_LR_TARGET, recipe: Recipe = HEAD_LR_RECIPE, *,
                    head_mults: Sequence[float] = (1, 10), seed: int = 0, source: nn.Module | dict | None = None,
                    build: Callable[[int], nn.Module] | None = None) -> HeadLRComparison:
    """Fine-tune the pretrained model on ``target`` once per head multiplier, same recipe, seed and data.

    Each run: a model built under ``seed`` receives the source's matching weights (the class layer
    stays fresh), ``make_optimizer(model, recipe.optimizer, lr=recipe.lr, lr_mult={"head": mult})``,
    the schedule's preview of its groups, then ``fit`` with that schedule.

    Args:
        target: the task's data (lesson 1's four shapes, 10 images per class).
        recipe: ``fit``'s options; ``recipe.lr`` is the base (backbone) learning rate ``lr0``,
            ``recipe.optimizer`` ``"sgd"`` (the bias warmup is SGD's) or ``"adamw"``; ``recipe.schedule``
            ``None`` means ``YoloSchedule("ultralytics", warmup_epochs=1)``, with ``warmup_bias_lr=0``
            for AdamW as Ultralytics sets it.
        head_mults: the head's LR multipliers, one run each (1: one LR for every layer).
        seed: the seed of the data, the new head and the batch order.
        source, build: the pretrained weights (default ``workbench.runs.default_source()``) and
            ``nc -> model`` (default: a workbench model like the source).

    Example:
        >>> from workbench import build_model
        >>> result = compare_head_lr(Target(2, val_per_class=2), HEAD_LR_RECIPE.replace(epochs=2, batch_size=4),
        ...                          source=build_model(nc=10))
        >>> [run.head_mult for run in result.runs], result[10].lr_error
        ([1, 10], 0.0)
    """
    if not head_mults:
        raise ValueError("head_mults needs at least one multiplier, e.g. (1, 10)")
    schedule = _head_lr_schedule(recipe)
    train, val = target.data(seed)
    source = default_source() if source is None else source
    build = build or default_build(source)
    runs = [_head_lr_run(mult, train, val, recipe, schedule, seed, source, build) for mult in head_mults]
    warm = f"warmup {runs[0].preview.warmup} of {runs[0].history.step} iterations"
    gap = f", gap {target.gap:g}" if target.gap else ""
    optimizer = "SGD" if recipe.optimizer == "sgd" else "AdamW"
    setting = (f"{train.nc} classes, {target.n_per_class}/class ({len(train)} images){gap}; {optimizer} lr0 "
               f"{recipe.lr:g}, {type(schedule).__name__}({getattr(schedule, 'profile', '')}), {warm}, "
               f"{recipe.epochs} epochs")
    return HeadLRComparison(setting, tuple(runs))
