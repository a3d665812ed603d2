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

The target task is lesson 1's (:func:`workbench.experiments.pretraining.target_data`): two
shapes the source saw, two it never saw, with a domain-gap knob.

Example:
    >>> from workbench import build_model
    >>> result = compare_freezing(4, epochs=2, unfreeze_at=1, batch_size=8, val_per_class=2,
    ...                           source=build_model(nc=10), timing_steps=1)
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

from ..checkpoints import pretrained
from ..freezing import BN_POLICIES, BNDrift, bn_drift, bn_snapshot, depth_at, set_freeze_depth
from ..layers import numbered_layers
from ..modes import eval_mode
from ..monitor import snapshot, weight_drift
from ..runs import default_build, paired_runs, setup_run
from ..schedules import CosineWarmup, Schedule
from ..table import Table, TextResult
from ..training import DEFAULT_CLIP, History, step_time
from .pretraining import TARGET_CLASSES, VAL_PER_CLASS, target_data

RUNS = ("full", "frozen", "staged")
_PANEL_NAME = {"full": "pretrained", "frozen": "frozen", "staged": "staged"}  # paired_runs' names for them
DEFAULT_SCHEDULE = CosineWarmup(warmup_epochs=0.0)  # the LR falls along a cosine: lower when `staged` unfreezes
BN_REFERENCES = {"eval": "Ultralytics >= 8.3.99, Keras", "train": "YOLOv5", "affine": "fastai (train_bn)",
                 "frozen": "timm (FrozenBatchNorm2d)"}


def _source_and_build(source, build):
    source = pretrained("shapes_n") if source is None else source
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
        stages = [f"from epoch {e}: layers 0-{d - 1} frozen" if d else f"from epoch {e}: all trainable"
                  for e, d in self.freeze]
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


def compare_freezing(n_per_class: int = 40, *, gap: float = 0.3, classes: Sequence[str] = TARGET_CLASSES,
                     val_per_class: int = VAL_PER_CLASS, depth: int = 9, unfreeze_at: int = 2, epochs: int = 6,
                     batch_size: int = 16, optimizer: str = "auto", lr: float | None = None,
                     schedule: Schedule | None = DEFAULT_SCHEDULE, clip: float | None = DEFAULT_CLIP,
                     runs: Sequence[str] = RUNS, seed: int = 0, source: nn.Module | dict | None = None,
                     build: Callable[[int], nn.Module] | None = None, timing_steps: int = 5) -> FreezeComparison:
    """Fine-tune the target task three ways from the same pretrained start, on the same seed and data.

    Args:
        n_per_class, gap, classes, val_per_class: the target task (lesson 1's ``target_data``).
        depth: layers ``0..depth-1`` are frozen in the ``frozen`` run and, until ``unfreeze_at``, the ``staged`` one.
        unfreeze_at: the epoch at which ``staged`` unfreezes everything (1 .. epochs-1).
        epochs, batch_size, optimizer, lr, schedule, clip: ``fit``'s options, the same for every run
            (``optimizer="auto"``: AdamW at Ultralytics' small-run LR; ``schedule``: a cosine decay).
        runs: any of ``"full"``, ``"frozen"``, ``"staged"``.
        seed: the seed of the data, the initialisation of the new head and the batch order.
        source: pretrained weights (a model or a state_dict); default ``workbench.pretrained("shapes_n")``.
        build: ``nc -> model`` (default: a workbench model like the source).
        timing_steps: training steps timed per depth (CPU time), the depths interleaved (the fastest counts).
    """
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        raise ValueError(f"unknown runs {unknown or list(runs)}; choose from {list(RUNS)}")
    if "staged" in runs and (isinstance(unfreeze_at, bool) or not isinstance(unfreeze_at, int)
                             or not 0 < unfreeze_at < epochs):
        raise ValueError(f"unfreeze_at must be an epoch in 1..{epochs - 1} (epochs={epochs}) for the staged run "
                         f"to train both frozen and unfrozen; got {unfreeze_at!r}")
    if isinstance(timing_steps, bool) or not isinstance(timing_steps, int) or timing_steps < 1:
        raise ValueError(f"timing_steps must be an integer >= 1 (got {timing_steps!r})")
    train, val = target_data(n_per_class, gap=gap, classes=classes, val_per_class=val_per_class, seed=seed)
    source, build = _source_and_build(source, build)
    start_model, _ = setup_run("pretrained", source, build, train.nc, depth=depth, seed=seed)
    start = snapshot(start_model)
    models: dict[str, nn.Module] = {}
    histories = paired_runs(train, val, source=source, build=build, runs=[_PANEL_NAME[r] for r in runs],
                            nc=train.nc, depth=depth, unfreeze_at=unfreeze_at, epochs=epochs,
                            batch_size=batch_size, seed=seed, models=models, optimizer=optimizer, lr=lr,
                            schedule=schedule, clip=clip, device="cpu")
    schedules = {"full": {}, "frozen": {0: depth}, "staged": {0: depth, unfreeze_at: 0}}
    x, y = train.x[:batch_size], train.y[:batch_size]
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
    gap_text = f", gap {gap:g}" if gap else ""
    lr_text = f"lr {lr:g}" if lr is not None else "the default lr"
    setting = (f"{train.nc} classes ({', '.join(train.classes)}), {n_per_class}/class ({len(train)} images){gap_text}; "
               f"{epochs} epochs of {nb} steps, optimizer {optimizer}, {lr_text}, "
               f"schedule {type(schedule).__name__ if schedule else 'constant'}; freeze depth {depth}")
    return FreezeComparison(setting, depth, unfreeze_at, tuple(results))


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


def compare_bn_policies(n_per_class: int = 10, *, gap: float = 0.3, classes: Sequence[str] = TARGET_CLASSES,
                        val_per_class: int = VAL_PER_CLASS, depth: int = 9, epochs: int = 2, batch_size: int = 16,
                        policies: Sequence[str] = BN_POLICIES, optimizer: str = "auto", lr: float | None = None,
                        seed: int = 0, source: nn.Module | dict | None = None,
                        build: Callable[[int], nn.Module] | None = None) -> BNPolicyComparison:
    """The frozen run once per BatchNorm policy: what moved inside layers ``0..depth-1`` although they are frozen.

    Every run starts from the same pretrained model and trains with ``fit(freeze=Freeze({0: depth},
    bn=policy))``; the target's domain gap gives its batches other statistics than the source's.

    Example:
        >>> from workbench import build_model
        >>> result = compare_bn_policies(2, epochs=1, batch_size=4, val_per_class=2, source=build_model(nc=10))
        >>> [(r.policy, r.moved > 0) for r in result.rows]
        [('eval', False), ('train', True), ('affine', True), ('frozen', False)]
    """
    unknown = [p for p in policies if p not in BN_POLICIES]
    if unknown or not policies:
        raise ValueError(f"unknown BatchNorm policies {unknown or list(policies)}; choose from {list(BN_POLICIES)}")
    train, val = target_data(n_per_class, gap=gap, classes=classes, val_per_class=val_per_class, seed=seed)
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
                                        depth=depth, epochs=epochs, batch_size=batch_size, seed=seed, models=models,
                                        optimizer=optimizer, lr=lr, bn=policy,
                                        device="cpu")["frozen"]
        model = models["frozen"]
        drift = BNDrift(r for r in bn_drift(model, stats0) if r.layer is not None and r.layer < depth)
        features = layer_output(model, depth - 1, val.x)
        change = ((features - features0).norm() / features0.norm()).item()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append(BNPolicyRow(policy, BN_REFERENCES[policy], trainable, len(drift), len(drift.moved()),
                                max((r.mean_shift for r in drift), default=0.0), change,
                                histories[policy].val["accuracy"][-1]))
        drifts[policy] = drift
    setting = (f"layers 0-{depth - 1} frozen, the rest trained {epochs} epochs on {len(train)} images "
               f"({n_per_class}/class{f', gap {gap:g}' if gap else ''})")
    return BNPolicyComparison(setting, tuple(rows), drifts, histories)
