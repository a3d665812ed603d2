"""Lesson 3, freezing: full fine-tuning against frozen and staged runs, and what frozen BatchNorm layers do.

* :func:`compare_freezing`: ``full`` (every layer trains), ``frozen`` (layers ``0..depth-1``
  frozen throughout, YOLOv5's ``--freeze depth``) and ``staged`` (frozen until ``unfreeze_at``,
  then everything trains: ``fit(freeze={0: depth, unfreeze_at: 0})``), all three from the same
  pretrained start on the same seed and data, through :func:`workbench.runs.paired_runs` as
  the compare panel runs them. Each run reports what it trained (parameters), what it cost (a
  measured step time per freeze depth), how far its backbone moved from the pretrained weights,
  and its validation accuracy after every epoch.
* :func:`compare_bn_policies`: the four BatchNorm policies of :func:`workbench.freeze` on a
  frozen backbone: how far the frozen layers' running statistics moved
  (:func:`workbench.bn_drift`), how much the frozen layers' output changed although no frozen
  weight did, and the accuracy.

Both take the target task (:class:`~workbench.experiments.recipe.Target`: lesson 1's two shapes
the source saw and two it never saw, with a domain-gap knob) and the training recipe
(:class:`~workbench.experiments.recipe.Recipe`); :data:`FREEZING_TARGET` and :data:`FREEZING_RECIPE`
are the lesson's.

Example:
    >>> from workbench import build_model
    >>> result = compare_freezing(Target(4, val_per_class=2), FREEZING_RECIPE.replace(epochs=2, batch_size=8),
    ...                           unfreeze_at=1, source=build_model(nc=10), timing_steps=1)
    >>> [run.name for run in result.runs], result["frozen"].trainable < result["full"].trainable
    (['full', 'frozen', 'staged'], True)
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..freezing import BN_POLICIES, BNDrift, bn_drift, bn_snapshot, depth_at, set_freeze_depth
from ..layers import numbered_layers
from ..modes import eval_mode
from ..monitor import snapshot, weight_drift
from ..runs import default_build, default_source, paired_runs, setup_run
from ..schedules import CosineWarmup
from ..table import Table, TextResult
from ..training import History, step_time
from .recipe import Recipe, Target

RUNS = ("full", "frozen", "staged")
_PANEL_NAME = {"full": "pretrained", "frozen": "frozen", "staged": "staged"}  # paired_runs' names for them
DEFAULT_SCHEDULE = CosineWarmup(warmup_epochs=0.0)  # the LR falls along a cosine: lower when `staged` unfreezes
FREEZING_VAL_PER_CLASS = 100  # 400 validation images: a point of accuracy is 4 images, not 1
FREEZING_TARGET = Target(n_per_class=40, gap=0.3, val_per_class=FREEZING_VAL_PER_CLASS)
FREEZING_RECIPE = Recipe(epochs=6, batch_size=16, optimizer="auto", schedule=DEFAULT_SCHEDULE)
BN_TARGET = Target(n_per_class=10, gap=0.3)  # the BatchNorm comparison: 40 images, 25 per class to validate
BN_RECIPE = FREEZING_RECIPE.replace(epochs=2, schedule=None)
BN_REFERENCES = {"eval": "Ultralytics >= 8.3.99, Keras", "train": "YOLOv5", "affine": "fastai (train_bn)",
                 "frozen": "timm (FrozenBatchNorm2d)"}


def _source_and_build(source, build):
    source = default_source() if source is None else source
    return source, build or default_build(source)


# ----------------------------------------------------------------------------------------------- full / frozen / staged
@dataclass(frozen=True)
class FreezeRun:
    """One run: its freeze schedule, what it trained, what it cost, how far it moved, how well it does.

    ``step_ms``: the measured CPU time of one training step at each depth the run used (ms);
    ``train_seconds``: its steps times those step times (the training compute, validation left out);
    ``backbone_drift``: the mean over layers ``0..depth-1`` of ``||W - W0|| / ||W0||`` at the end.
    """

    name: str
    freeze: tuple[tuple[int, int], ...]  # ((epoch, depth), ...); () for full fine-tuning
    trainable: int  # parameters trainable in the first epoch
    total: int
    step_ms: tuple[tuple[int, float], ...]  # ((depth, ms per step), ...)
    train_seconds: float
    backbone_drift: float
    accuracy: float  # validation accuracy at the end (eval mode, as fit reports it)
    history: History = field(repr=False, compare=False)

    @property
    def curve(self) -> list[float]:
        """Validation accuracy (as trained) after each epoch."""
        return list(self.history.val.get("accuracy", []))

    def describe(self) -> str:
        if not self.freeze:
            return "every layer trains"
        stages = [f"from epoch {e + 1}: layers 0-{d - 1} frozen" if d else f"from epoch {e + 1}: all trainable"
                  for e, d in self.freeze]  # the schedule's keys are 0-based, the epochs a reader counts 1-based
        return "; ".join(stages)


@dataclass(frozen=True, repr=False)
class FreezeComparison(TextResult):
    """Full, frozen and staged fine-tuning of one target task: the setting, then one :class:`FreezeRun` each."""

    setting: str
    depth: int
    unfreeze_at: int
    runs: tuple[FreezeRun, ...]

    def __getitem__(self, name: str) -> FreezeRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run {name!r}; the runs are {[r.name for r in self.runs]}")

    @property
    def best(self) -> str:
        """The run with the highest final validation accuracy; the first listed wins a tie."""
        return max(self.runs, key=lambda r: r.accuracy).name

    def histories(self) -> dict[str, History]:
        """``{run: History}``, for :func:`workbench.plots.compare_runs`."""
        return {run.name: run.history for run in self.runs}

    def __str__(self) -> str:
        header = ("run", "trainable params", "CPU ms/step", "CPU train s", "backbone drift", "val acc", "per epoch")
        rows = [{"run": r.name, "trainable params": f"{r.trainable:,} ({100 * r.trainable / r.total:.0f}%)",
                 "CPU ms/step": "/".join(f"{ms:.0f}" for _, ms in r.step_ms), "CPU train s": f"{r.train_seconds:.2f}",
                 "backbone drift": f"{r.backbone_drift:.4f}", "val acc": f"{r.accuracy:.3f}",
                 "per epoch": " ".join(f"{a:.2f}" for a in r.curve)} for r in self.runs]
        notes = [f"  {r.name}: {r.describe()}" for r in self.runs]
        return str(Table(header, rows, indent=2, title=self.setting, notes=[*notes, f"best as trained: {self.best}"]))


def _trainable(model: nn.Module, depth: int) -> int:
    frozen = sum(p.numel() for layer in numbered_layers(model)[:depth] for p in layer.module.parameters())
    return sum(p.numel() for p in model.parameters()) - frozen


def _step_ms(model: nn.Module, depths: set[int], x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[int, float]:
    """CPU milliseconds per training step of a copy of ``model`` at each freeze depth: the fastest of ``steps``
    rounds after one untimed step per depth, the depths interleaved. CPU time (``time.process_time``, all
    threads) rather than wall time: other programs on a busy machine slow the clock, not the work."""
    twin = copy.deepcopy(model).cpu()
    times: dict[int, list[float]] = {depth: [] for depth in sorted(depths)}
    for round_ in range(steps + 1):
        for depth, measured in times.items():
            set_freeze_depth(twin, depth)
            started = time.process_time()
            step_time(twin, x, y, steps=1)
            if round_:  # the first round warms up
                measured.append(1000 * (time.process_time() - started))
    return {depth: min(measured) for depth, measured in times.items()}


def _mean_drift(model: nn.Module, start: dict, depth: int) -> float:
    drift = weight_drift(model, start)
    names = [layer.name for layer in numbered_layers(model)[:depth]]
    return statistics.fmean(drift[n] for n in names) if names else 0.0


def _check_freezing_options(runs: Sequence[str], unfreeze_at, epochs: int, timing_steps) -> None:
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        raise ValueError(f"unknown runs {unknown or list(runs)}; choose from {list(RUNS)}")
    if "staged" in runs and (isinstance(unfreeze_at, bool) or not isinstance(unfreeze_at, int)
                             or not 0 < unfreeze_at < epochs):
        raise ValueError(f"unfreeze_at must be an epoch in 1..{epochs - 1} (epochs={epochs}) for the staged run "
                         f"to train both frozen and unfrozen; got {unfreeze_at!r}")
    if isinstance(timing_steps, bool) or not isinstance(timing_steps, int) or timing_steps < 1:
        raise ValueError(f"timing_steps must be an integer >= 1 (got {timing_steps!r})")


def _setting(target: Target, recipe: Recipe, train, nb: int, depth: int) -> str:
    gap = f", gap {target.gap:g}" if target.gap else ""
    lr = f"lr {recipe.lr:g}" if recipe.lr is not None else "the default lr"
    schedule = type(recipe.schedule).__name__ if recipe.schedule else "constant"
    return (f"{train.nc} classes ({', '.join(train.classes)}), {target.n_per_class}/class ({len(train)} images{gap}), "
            f"{target.val_per_class}/class to validate; {recipe.epochs} epochs of {nb} steps, optimizer "
            f"{recipe.optimizer}, {lr}, schedule {schedule}; freeze depth {depth}")


def compare_freezing(target: Target = FREEZING_TARGET, recipe: Recipe = FREEZING_RECIPE, *, depth: int = 9,
                     unfreeze_at: int = 2, runs: Sequence[str] = RUNS, seed: int = 0,
                     source: nn.Module | dict | None = None, build: Callable[[int], nn.Module] | None = None,
                     timing_steps: int = 5) -> FreezeComparison:
    """Fine-tune ``target`` three ways from the same pretrained start, with the same ``recipe``, seed and data.

    Args:
        target, recipe: the task's data and ``fit``'s options, the same for every run (the lesson's:
            ``optimizer="auto"``, AdamW at Ultralytics' small-run LR, and a cosine decay).
        depth: layers ``0..depth-1`` are frozen in the ``frozen`` run and, until ``unfreeze_at``, the ``staged`` one.
        unfreeze_at: the epoch index (0-based, as ``fit``'s ``freeze`` keys) at which ``staged`` unfreezes
            everything (1 .. epochs-1): 2 means frozen for the first two epochs.
        runs: any of ``"full"``, ``"frozen"``, ``"staged"``.
        seed: the seed of the data, the initialisation of the new head and the batch order.
        source: pretrained weights (a model or a state_dict); default ``workbench.runs.default_source()``.
        build: ``nc -> model`` (default: a workbench model like the source).
        timing_steps: training steps timed per depth (CPU time), the depths interleaved (the fastest counts).
    """
    epochs = recipe.epochs
    _check_freezing_options(runs, unfreeze_at, epochs, timing_steps)
    train, val = target.data(seed)
    source, build = _source_and_build(source, build)
    start_model, _ = setup_run("pretrained", source, build, train.nc, depth=depth, seed=seed)
    start, models = snapshot(start_model), {}
    histories = paired_runs(train, val, source=source, build=build, runs=[_PANEL_NAME[r] for r in runs],
                            nc=train.nc, depth=depth, unfreeze_at=unfreeze_at, seed=seed, models=models,
                            **recipe.fit_options())
    schedules = {"full": {}, "frozen": {0: depth}, "staged": {0: depth, unfreeze_at: 0}}
    x, y = train.x[:recipe.batch_size], train.y[:recipe.batch_size]
    times = _step_ms(start_model, {d for r in runs for d in schedules[r].values()} | {0}, x, y, timing_steps)
    nb = len(histories[_PANEL_NAME[runs[0]]].loss) // epochs
    results = []
    for name in runs:
        history, model, plan = histories[_PANEL_NAME[name]], models[_PANEL_NAME[name]], schedules[name]
        if history.status != "completed":
            raise RuntimeError(f"the {name} run did not complete ({history.status}): {history.events}")
        used = sorted(set(plan.values()) or {0})
        seconds = sum(nb * times[depth_at(plan, e) or 0] / 1000 for e in range(epochs))
        results.append(FreezeRun(name, tuple(plan.items()), _trainable(start_model, plan.get(0, 0)),
                                 sum(p.numel() for p in model.parameters()), tuple((d, times[d]) for d in used),
                                 seconds, _mean_drift(model, start, depth), history.val["accuracy"][-1], history))
    return FreezeComparison(_setting(target, recipe, train, nb, depth), depth, unfreeze_at, tuple(results))


# ----------------------------------------------------------------------------------------------- BatchNorm policies
@dataclass(frozen=True)
class BNPolicyRow:
    """One BatchNorm policy on a frozen backbone, after training the rest.

    ``moved``: how many of the ``norms`` BatchNorm layers inside the frozen layers had their
    running statistics changed; ``mean_shift``: the largest of their mean shifts (in starting
    standard deviations, :func:`workbench.bn_drift`); ``feature_change``: ``||f - f0|| / ||f0||``
    of the last frozen layer's output on the validation images, in eval mode.
    """

    policy: str
    reference: str
    trainable: int
    norms: int
    moved: int
    mean_shift: float
    feature_change: float
    accuracy: float


@dataclass(frozen=True, repr=False)
class BNPolicyComparison(TextResult):
    """The four BatchNorm policies on the same frozen run: one :class:`BNPolicyRow` each, and the drift tables."""

    setting: str
    rows: tuple[BNPolicyRow, ...]
    drift: dict[str, BNDrift] = field(repr=False, compare=False)  # policy -> bn_drift of the frozen layers
    histories: dict[str, History] = field(repr=False, compare=False)

    def __getitem__(self, policy: str) -> BNPolicyRow:
        for row in self.rows:
            if row.policy == policy:
                return row
        raise KeyError(f"no policy {policy!r}; the policies are {[r.policy for r in self.rows]}")

    def __str__(self) -> str:
        header = ("bn policy", "as in", "trainable", "frozen BNs whose stats moved", "max mean shift",
                  "frozen output change", "val acc")
        rows = [{"bn policy": r.policy, "as in": r.reference, "trainable": r.trainable,
                 "frozen BNs whose stats moved": f"{r.moved}/{r.norms}", "max mean shift": f"{r.mean_shift:.4f}",
                 "frozen output change": f"{r.feature_change:.4f}", "val acc": f"{r.accuracy:.3f}"} for r in self.rows]
        return str(Table(header, rows, indent=2, title=self.setting))


@torch.no_grad()
def layer_output(model: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
    """The output of numbered layer ``index`` for input ``x``, the model in eval mode (its mode is restored after).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> layer_output(model, 0, torch.zeros(1, 2)).shape
        torch.Size([1, 3])
    """
    layers = numbered_layers(model)
    if not 0 <= index < len(layers):
        raise ValueError(f"layer index {index} is outside 0..{len(layers) - 1}")
    found = []
    handle = layers[index].module.register_forward_hook(lambda module, args, out: found.append(out.detach()))
    try:
        with eval_mode(model):
            model(x)
    finally:
        handle.remove()
    return found[0]


def _policy_row(policy: str, model: nn.Module, history: History, stats0, features0, val, depth: int):
    drift = BNDrift(r for r in bn_drift(model, stats0) if r.layer is not None and r.layer < depth)
    features = layer_output(model, depth - 1, val.x)
    change = ((features - features0).norm() / features0.norm()).item()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return BNPolicyRow(policy, BN_REFERENCES[policy], trainable, len(drift), len(drift.moved()),
                       max((r.mean_shift for r in drift), default=0.0), change, history.val["accuracy"][-1]), drift


def compare_bn_policies(target: Target = BN_TARGET, recipe: Recipe = BN_RECIPE, *, depth: int = 9,
                        policies: Sequence[str] = BN_POLICIES, seed: int = 0, source: nn.Module | dict | None = None,
                        build: Callable[[int], nn.Module] | None = None) -> BNPolicyComparison:
    """The frozen run once per BatchNorm policy: what moved inside layers ``0..depth-1`` although they are frozen.

    Every run starts from the same pretrained model and trains with ``fit(freeze=Freeze({0: depth},
    bn=policy))`` and ``recipe``; the target's domain gap gives its batches other statistics than the source's.

    Example:
        >>> from workbench import build_model
        >>> result = compare_bn_policies(Target(2, val_per_class=2), Recipe(epochs=1, batch_size=4),
        ...                              source=build_model(nc=10))
        >>> [(r.policy, r.moved > 0) for r in result.rows]
        [('eval', False), ('train', True), ('affine', True), ('frozen', False)]
    """
    unknown = [p for p in policies if p not in BN_POLICIES]
    if unknown or not policies:
        raise ValueError(f"unknown BatchNorm policies {unknown or list(policies)}; choose from {list(BN_POLICIES)}")
    train, val = target.data(seed)
    source, build = _source_and_build(source, build)
    start_model, _ = setup_run("pretrained", source, build, train.nc, depth=depth, seed=seed)
    if not 0 < depth < len(numbered_layers(start_model)):
        raise ValueError(f"depth must be in 1..{len(numbered_layers(start_model)) - 1}: at least one layer frozen "
                         f"and one left to train (got {depth!r})")
    stats0, features0 = bn_snapshot(start_model), layer_output(start_model, depth - 1, val.x)
    rows, drifts, histories = [], {}, {}
    for policy in policies:
        models: dict[str, nn.Module] = {}
        histories[policy] = paired_runs(train, val, source=source, build=build, runs=["frozen"], nc=train.nc,
                                        depth=depth, bn=policy, seed=seed, models=models,
                                        **recipe.fit_options())["frozen"]
        row, drifts[policy] = _policy_row(policy, models["frozen"], histories[policy], stats0, features0, val, depth)
        rows.append(row)
    gap = f", gap {target.gap:g}" if target.gap else ""
    setting = (f"layers 0-{depth - 1} frozen, the rest trained {recipe.epochs} epochs on {len(train)} images "
               f"({target.n_per_class}/class{gap})")
    return BNPolicyComparison(setting, tuple(rows), drifts, histories)
