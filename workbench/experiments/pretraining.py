"""Lesson 1, pretrained weights: what they hold, and when they help a small target task.

* :func:`describe_weights`: a few state_dict entries of a model (parameters *and* BatchNorm
  buffers, ``num_batches_tracked`` included), the counts, and the metadata stored with them;
* :func:`target_data`: the target task, with the two knobs of the lesson (``n_per_class``, the
  target size, and ``gap`` / ``domain``, how far it is from the source);
* :func:`compare`: the same target task (a :class:`~.recipe.Target`) fine-tuned from the
  pretrained weights and from scratch with the same :class:`~.recipe.Recipe`, on the same seed
  and data (through :func:`workbench.runs.paired_runs`, as the panel does);
* :func:`sweep`: :func:`compare` over several targets.

Every run reports its validation accuracy twice: *as trained* (eval mode, the BatchNorm running
statistics the run ended with, which is what ``fit`` and Ultralytics report) and *BN
re-estimated* (the same weights with the running statistics recomputed on the training images
by ``torch.optim.swa_utils.update_bn``). YOLO's BatchNorm momentum of 0.03 moves the running
statistics 3 % of the way per step, so a short run from scratch still carries its initial
statistics and scores near chance in eval mode; the second number shows what its features learnt.
Both are recorded after every epoch (:attr:`Run.curve`, :attr:`Run.curve_bn`).

Example:
    >>> train, val = target_data(4)
    >>> len(train), len(val), train.classes
    (16, 100, ('triangle', 'ring', 'halfdisk', 'tee'))
"""
from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import product

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from .. import data
from ..freezing import unfreeze
from ..metrics import evaluate
from ..plots.results import accuracy_curves, sweep_bars
from ..runs import default_build, default_source, paired_runs
from ..table import Table, TextResult
from ..training import Batches, History
from .recipe import LESSON, TARGET_CLASSES, VAL_PER_CLASS, Recipe, Target

DOMAINS = ("shapes", "digits")
STARTS = ("pretrained", "scratch")
PRETRAINING_RECIPE = LESSON  # fit's defaults: 6 epochs of batch 16, optimizer "auto", on the CPU
SMALL_TARGET = Target(10)  # 10 images per class of the four target shapes, no gap


# ----------------------------------------------------------------------------------------------- the weights
@dataclass(frozen=True)
class Entry:
    """One state_dict entry: name, parameter or buffer, shape, dtype and its first values."""

    name: str
    kind: str
    shape: tuple
    dtype: str
    values: tuple


@dataclass(frozen=True, repr=False)
class WeightsSummary(TextResult):
    """What a set of pretrained weights is: a few entries, the counts, and the metadata stored beside them."""

    entries: tuple[Entry, ...]
    n_parameters: int
    n_buffers: int
    n_num_batches_tracked: int
    parameter_values: int
    buffer_values: int
    metadata: dict

    @property
    def n_items(self) -> int:
        """State_dict entries, as Ultralytics counts "items": parameters and buffers."""
        return self.n_parameters + self.n_buffers

    def __str__(self) -> str:
        lines = [f"{self.n_items} state_dict entries: {self.n_parameters} parameters ({self.parameter_values:,} "
                 f"values) + {self.n_buffers} buffers ({self.buffer_values:,} values, "
                 f"{self.n_num_batches_tracked} of them num_batches_tracked)", ""]
        entries = [{"name": e.name, "kind": e.kind, "shape": str(e.shape), "dtype": e.dtype,
                    "first values": "[" + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in e.values)
                    + (", ...]" if len(e.values) > 1 else "]")} for e in self.entries]
        lines += list(Table(("name", "kind", "shape", "dtype", "first values"), entries, indent=2).lines())
        if self.metadata:
            lines += ["", "metadata stored with the weights:"]
            lines += [f"  {k}: {_short(v)}" for k, v in self.metadata.items()]
        return "\n".join(lines)


def _short(value, limit: int = 100) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe_weights(model: nn.Module | None = None, *, entries: Sequence[str] | None = None, values: int = 4,
                     metadata: dict | None = None) -> WeightsSummary:
    """A few state_dict entries of ``model`` (default: the shipped ``shapes_n`` weights) with their counts.

    Args:
        model: any ``nn.Module``; ``None`` loads :func:`workbench.pretrained`.
        entries: names to show; default the first layer's six entries (conv weight, BatchNorm
            weight and bias, running mean and variance, ``num_batches_tracked``).
        values: how many leading values of each entry to show.
        metadata: shown under the entries; default ``model.pretrained_info`` when it has one.

    Example:
        >>> summary = describe_weights(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)))
        >>> summary.n_parameters, summary.n_buffers, summary.n_num_batches_tracked
        (4, 3, 1)
    """
    model = default_source() if model is None else model
    state = model.state_dict()
    params = {name for name, _ in model.named_parameters()}
    if entries is None:
        entries = list(state)[:6]
    unknown = [name for name in entries if name not in state]
    if unknown:
        raise ValueError(f"no state_dict entries named {unknown}; the first are {list(state)[:8]}")
    shown = tuple(Entry(name, "parameter" if name in params else "buffer", tuple(state[name].shape),
                        str(state[name].dtype).replace("torch.", ""),
                        tuple(state[name].detach().flatten()[:values].tolist())) for name in entries)
    buffers = [name for name in state if name not in params]
    return WeightsSummary(shown, len(state) - len(buffers), len(buffers),
                          sum(name.endswith("num_batches_tracked") for name in buffers),
                          sum(state[n].numel() for n in state if n in params),
                          sum(state[n].numel() for n in buffers),
                          dict(getattr(model, "pretrained_info", {}) if metadata is None else metadata))


# ----------------------------------------------------------------------------------------------- the data
def target_data(n_per_class: int = 10, *, domain: str = "shapes", gap: float = 0.0,
                classes: Sequence[str] = TARGET_CLASSES, val_per_class: int = VAL_PER_CLASS,
                seed: int = 0) -> tuple[data.ImageSet, data.ImageSet]:
    """The target task's (train, val): ``n_per_class`` training images per class, a fixed validation set.

    Args:
        n_per_class: the target-size knob.
        domain: ``"shapes"`` (the source's kind of images; ``classes`` picks the shapes) or
            ``"digits"`` (real handwritten digits, ten classes: far from the source).
        gap: the domain-gap knob of :func:`workbench.data.shapes` (textured, brighter backgrounds,
            another palette, noise), in [0, 1].
        val_per_class: validation images per class; the same images for every ``n_per_class``.
        seed: shapes draw training images with ``seed + 1`` and validation images with ``seed + 2``;
            digits split one seeded draw of real images, so the two never share an image.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {list(DOMAINS)}")
    if domain == "shapes":
        train = data.shapes(n_per_class, list(classes), gap=gap, seed=seed + 1)
        return train, data.shapes(val_per_class, list(classes), gap=gap, seed=seed + 2)
    pool = data.digits(n_per_class + val_per_class, gap=gap, seed=seed)
    per_class = n_per_class + val_per_class  # digits() keeps each class's images together, in a seeded order
    val = torch.cat([torch.arange(k * per_class, k * per_class + val_per_class) for k in range(pool.nc)])
    train = torch.cat([torch.arange(k * per_class + val_per_class, (k + 1) * per_class) for k in range(pool.nc)])
    return pool.subset(train), pool.subset(val)


# ----------------------------------------------------------------------------------------------- the runs
@dataclass(frozen=True)
class Run:
    """One fine-tuning run: its History; final validation accuracy as trained and BN re-estimated; ``curve_bn``
    the re-estimated accuracy after each epoch (beside :attr:`curve`, as trained)."""

    start: str
    history: History
    accuracy: float
    accuracy_bn: float
    curve_bn: tuple[float, ...] = ()

    @property
    def curve(self) -> list[float]:
        """Validation accuracy (as trained) after each epoch."""
        return list(self.history.val.get("accuracy", []))

    @property
    def mean_loss(self) -> float:
        return statistics.fmean(self.history.loss) if self.history.loss else float("nan")

    @property
    def median_grad_norm(self) -> float:
        return statistics.median(self.history.grad_norm) if self.history.grad_norm else float("nan")

    @property
    def clipped(self) -> float:
        """Share of the steps whose gradient norm was above the clip threshold (clipping had to act)."""
        coefs = self.history.clip_coef
        return sum(c < 1 for c in coefs) / len(coefs) if coefs else 0.0

    def epochs_to(self, accuracy: float, *, bn_reestimated: bool = False) -> int | None:
        """The first epoch (1-based) whose validation accuracy reached ``accuracy``, or ``None``."""
        curve = self.curve_bn if bn_reestimated else self.curve
        return next((k + 1 for k, a in enumerate(curve) if a >= accuracy), None)


def bn_reestimated_accuracy(model: nn.Module, train, val, batch_size: int = 16) -> float:
    """Validation accuracy of a copy of ``model`` whose BatchNorm running statistics were recomputed on ``train``.

    ``torch.optim.swa_utils.update_bn`` resets the statistics and averages them over the training
    batches; the weights stay as they are, and ``model`` itself is not changed. The copy is
    unfrozen first: a BatchNorm pinned to eval mode by ``freeze`` would gather no statistics.
    """
    twin = copy.deepcopy(model)
    unfreeze(twin)
    update_bn(Batches(train, batch_size, shuffle=False), twin, device=next(twin.parameters()).device)
    return evaluate(twin, [(val.x, val.y)], device=next(twin.parameters()).device)["accuracy"]


def bn_tracker(models: dict[str, nn.Module], train, val, batch_size: int = 16):
    """A ``run_all`` callback that records each run's BN-re-estimated accuracy after every epoch.

    Returns ``(callback, curves)``: ``curves[run]`` grows by one value each time the run's
    History gains a validation accuracy; the model itself is not changed (see
    :func:`bn_reestimated_accuracy`).

    Example:
        >>> callback, curves = bn_tracker({}, None, None)
        >>> callback("scratch", History()); curves
        {}
    """
    curves: dict[str, list[float]] = {}

    def callback(name: str, history: History) -> None:
        done = len(history.val.get("accuracy", []))
        if done > len(curves.get(name, [])):
            curves.setdefault(name, []).append(bn_reestimated_accuracy(models[name], train, val, batch_size))

    return callback, curves


def checked_build(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    """``build`` wrapped so that a wrong one fails with a message naming ``build=`` and what it must be."""
    if not callable(build):
        raise TypeError(f"build= must be a function nc -> a fresh model (e.g. lambda nc: MyNet(num_classes=nc)); "
                        f"got {build!r}")

    def build_target(nc: int) -> nn.Module:
        try:
            model = build(nc)
        except TypeError as err:
            raise TypeError(f"build= is called as build(nc) with nc={nc}, the number of target classes, and must "
                            f"return a fresh model; calling it raised: {err}") from err
        if not isinstance(model, nn.Module):
            raise TypeError(f"build({nc}) must return an nn.Module; it returned {type(model).__name__}")
        return model

    return build_target


@dataclass(frozen=True, repr=False)
class Comparison(TextResult):
    """Pretrained against scratch on one target task: the target, then one :class:`Run` each."""

    target: Target
    classes: tuple[str, ...]
    n_train: int
    epochs: int
    pretrained: Run
    scratch: Run

    domain = property(lambda self: self.target.domain)
    n_per_class = property(lambda self: self.target.n_per_class)
    gap = property(lambda self: self.target.gap)

    @property
    def advantage(self) -> float:
        """Pretrained minus scratch validation accuracy, as trained."""
        return self.pretrained.accuracy - self.scratch.accuracy

    @property
    def feature_advantage(self) -> float:
        """Pretrained minus scratch validation accuracy with BN statistics re-estimated: what the features add."""
        return self.pretrained.accuracy_bn - self.scratch.accuracy_bn

    def histories(self) -> dict[str, History]:
        """``{"pretrained": History, "scratch": History}``, for :func:`workbench.plots.compare_runs`."""
        return {"pretrained": self.pretrained.history, "scratch": self.scratch.history}

    def knobs(self) -> str:
        gap = f", gap {self.gap:g}" if self.gap else ""
        return f"{self.domain} x{len(self.classes)} classes, {self.n_per_class}/class ({self.n_train} images){gap}"

    def figure(self, title: str | None = None):
        """Loss per step, accuracy per epoch as trained and BN re-estimated (``plots.results.accuracy_curves``)."""
        runs, title = {run.start: run for run in (self.pretrained, self.scratch)}, title or self.knobs()
        return accuracy_curves(runs, chance=1 / len(self.classes), title=title)

    def __str__(self) -> str:
        header = ("start", "val acc (as trained)", "val acc (BN re-estimated)", "per epoch (as trained)",
                  "per epoch (BN re-est.)", "mean loss", "median grad norm", "clipped steps")
        rows = [{"start": r.start, "val acc (as trained)": f"{r.accuracy:.3f}",
                 "val acc (BN re-estimated)": f"{r.accuracy_bn:.3f}",
                 "per epoch (as trained)": " ".join(f"{a:.2f}" for a in r.curve),
                 "per epoch (BN re-est.)": " ".join(f"{a:.2f}" for a in r.curve_bn),
                 "mean loss": f"{r.mean_loss:.3f}", "median grad norm": f"{r.median_grad_norm:.2f}",
                 "clipped steps": f"{100 * r.clipped:.0f}%"} for r in (self.pretrained, self.scratch)]
        steps = self.pretrained.history.step
        title = f"{self.knobs()}: {self.epochs} epochs, {steps} steps per run ({steps // self.epochs} per epoch)"
        return str(Table(header, rows, indent=2, title=title,
                         notes=[f"advantage of pretrained: {self.advantage:+.3f} as trained, "
                                f"{self.feature_advantage:+.3f} with BN re-estimated"]))


def compare(target: Target = SMALL_TARGET, recipe: Recipe = PRETRAINING_RECIPE, *, seed: int = 0,
            source: nn.Module | dict | None = None, build: Callable[[int], nn.Module] | None = None) -> Comparison:
    """Fine-tune ``target`` from ``source`` and from scratch, same seed, same data, same ``recipe``.

    Both models are built under ``seed`` by ``build(nc)``; the pretrained one then receives every
    source entry whose name and shape match (:func:`workbench.transfer`: the class layer stays
    fresh). Then :func:`workbench.fit` trains each with ``recipe``'s options (the CPU by default, so
    that a seed gives the same numbers everywhere). After every epoch each run is scored twice: as
    trained and with BatchNorm re-estimated (:func:`bn_reestimated_accuracy`).

    Args:
        target, recipe: the target task and how both runs train (:class:`~.recipe.Target`, :class:`~.recipe.Recipe`).
        seed: the seed of the data, the initialisation and the batch order.
        source: pretrained weights (a model or a state_dict); default ``workbench.pretrained("shapes_n")``.
        build: ``nc -> model`` (default: a workbench model like the source).

    Example:
        >>> from workbench import build_model
        >>> result = compare(Target(2), Recipe(epochs=1, batch_size=4), source=build_model(nc=10))
        >>> result.pretrained.history.step, len(result.scratch.curve_bn)
        (2, 1)
    """
    train, val = target.data(seed)
    source = default_source() if source is None else source
    build = checked_build(build) if build is not None else default_build(source)
    models: dict[str, nn.Module] = {}
    callback, curves_bn = bn_tracker(models, train, val, recipe.batch_size)
    histories = paired_runs(train, val, source=source, build=build, runs=STARTS, depth=0, seed=seed, models=models,
                            callback=callback, **recipe.fit_options())
    runs = {}
    for start in STARTS:
        history = histories[start]
        if history.status != "completed":
            raise RuntimeError(f"the {start} run did not complete ({history.status}): {history.events}")
        curve_bn = tuple(curves_bn[start])
        runs[start] = Run(start, history, history.val["accuracy"][-1], curve_bn[-1], curve_bn)
    return Comparison(target, tuple(train.classes), len(train), recipe.epochs, runs["pretrained"], runs["scratch"])


@dataclass(frozen=True, repr=False)
class Sweep(TextResult):
    """:func:`compare` over several targets: one :class:`Comparison` per target."""

    results: tuple[Comparison, ...]

    def find(self, *, domain: str | None = None, n_per_class: int | None = None,
             gap: float | None = None) -> Comparison:
        """The one result with these knobs (``ValueError`` listing the settings when none or several match)."""
        found = [r for r in self.results if (domain is None or r.domain == domain)
                 and (n_per_class is None or r.n_per_class == n_per_class) and (gap is None or r.gap == gap)]
        if len(found) != 1:
            raise ValueError(f"{len(found)} results match; the settings are {[r.knobs() for r in self.results]}")
        return found[0]

    def __str__(self) -> str:
        header = ("target", "epochs", "pretrained", "scratch", "advantage", "pretrained (BN re-est.)",
                  "scratch (BN re-est.)", "advantage (BN re-est.)")
        rows = [{"target": r.knobs(), "epochs": r.epochs, "pretrained": f"{r.pretrained.accuracy:.3f}",
                 "scratch": f"{r.scratch.accuracy:.3f}", "advantage": f"{r.advantage:+.3f}",
                 "pretrained (BN re-est.)": f"{r.pretrained.accuracy_bn:.3f}",
                 "scratch (BN re-est.)": f"{r.scratch.accuracy_bn:.3f}",
                 "advantage (BN re-est.)": f"{r.feature_advantage:+.3f}"} for r in self.results]
        return str(Table(header, rows, indent=2, title="validation accuracy at the end of each run"))

    def figure(self, title: str | None = None):
        """Final validation accuracy per setting (:func:`workbench.plots.sweep_bars`; its title by default)."""
        return sweep_bars(self.results, STARTS, title=title)


def sweep(targets: Iterable[Target], recipe: Recipe = PRETRAINING_RECIPE, **options) -> Sweep:
    """:func:`compare` once per target with the same ``recipe``; ``options`` (seed, source, build) as compare's.

    Example:
        >>> from workbench import build_model
        >>> result = sweep([Target(2), Target(3)], Recipe(epochs=1, batch_size=4), source=build_model(nc=10))
        >>> [r.n_train for r in result.results]
        [8, 12]
    """
    results = tuple(compare(target, recipe, **options) for target in targets)
    if not results:
        raise ValueError("sweep needs at least one target, e.g. [Target(10), Target(10, domain='digits')]")
    return Sweep(results)


def grid(n_per_class: Iterable[int] = (10,), gap: Iterable[float] = (0.0,), domain: Iterable[str] = ("shapes",)
         ) -> list[Target]:
    """Every combination of the knobs as :func:`sweep` targets.

    Example:
        >>> [(t.n_per_class, t.gap) for t in grid((10, 50), gap=(0.0, 0.5))]
        [(10, 0.0), (10, 0.5), (50, 0.0), (50, 0.5)]
    """
    return [Target(n, domain=d, gap=g) for d, n, g in product(domain, n_per_class, gap)]
