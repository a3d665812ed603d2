"""Lesson 1, pretrained weights: what they hold, and when they help a small target task.

* :func:`describe_weights`: a few state_dict entries of a model (parameters *and* BatchNorm
  buffers, ``num_batches_tracked`` included), the counts, and the metadata stored with them;
* :func:`target_data`: the target task, with the two knobs of the lesson (``n_per_class``, the
  target size, and ``gap`` / ``domain``, how far it is from the source);
* :func:`compare`: the same target task fine-tuned from the pretrained weights and from scratch,
  on the same seed and data (through :func:`workbench.runs.paired_runs`, as the panel does);
* :func:`sweep`: :func:`compare` over the knobs;

Every run reports its validation accuracy twice: *as trained* (eval mode, the BatchNorm running
statistics the run ended with, which is what ``fit`` and Ultralytics report) and *BN
re-estimated* (the same weights with the running statistics recomputed on the training images
by ``torch.optim.swa_utils.update_bn``). YOLO's BatchNorm momentum of 0.03 moves the running
statistics 3 % of the way per step, so a short run from scratch still carries its initial
statistics and scores near chance in eval mode; the second number shows what its features learnt.

Example:
    >>> train, val = target_data(4)
    >>> len(train), len(val), train.classes
    (16, 100, ('triangle', 'ring', 'halfdisk', 'tee'))
"""
from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from .. import data
from ..checkpoints import pretrained
from ..freezing import unfreeze
from ..metrics import evaluate
from ..plots.results import sweep_bars
from ..runs import default_build, paired_runs
from ..table import Table, TextResult
from ..training import DEFAULT_CLIP, Batches, History

TARGET_CLASSES = ("triangle", "ring", "halfdisk", "tee")  # two source classes, two the source never saw
DOMAINS = ("shapes", "digits")
VAL_PER_CLASS = 25
STARTS = ("pretrained", "scratch")


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
    model = pretrained("shapes_n") if model is None else model
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
    """One fine-tuning run: its History and its final validation accuracy, as trained and with BN re-estimated."""

    start: str
    history: History
    accuracy: float
    accuracy_bn: float

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

    def epochs_to(self, accuracy: float) -> int | None:
        """The first epoch (1-based) whose validation accuracy reached ``accuracy``, or ``None``."""
        return next((k + 1 for k, a in enumerate(self.curve) if a >= accuracy), None)


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


@dataclass(frozen=True, repr=False)
class Comparison(TextResult):
    """Pretrained against scratch on one target task: the knobs, then one :class:`Run` each."""

    domain: str
    n_per_class: int
    gap: float
    classes: tuple[str, ...]
    n_train: int
    epochs: int
    pretrained: Run
    scratch: Run

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

    def __str__(self) -> str:
        header = ("start", "val acc (as trained)", "val acc (BN re-estimated)", "per epoch", "mean loss",
                  "median grad norm", "clipped steps")
        rows = [{"start": r.start, "val acc (as trained)": f"{r.accuracy:.3f}",
                 "val acc (BN re-estimated)": f"{r.accuracy_bn:.3f}",
                 "per epoch": " ".join(f"{a:.2f}" for a in r.curve),
                 "mean loss": f"{r.mean_loss:.3f}", "median grad norm": f"{r.median_grad_norm:.2f}",
                 "clipped steps": f"{100 * r.clipped:.0f}%"} for r in (self.pretrained, self.scratch)]
        steps = self.pretrained.history.step
        return str(Table(header, rows, indent=2, title=f"{self.knobs()}: {self.epochs} epochs, {steps} steps each",
                         notes=[f"advantage of pretrained: {self.advantage:+.3f} as trained, "
                                f"{self.feature_advantage:+.3f} with BN re-estimated"]))


def compare(n_per_class: int = 10, *, domain: str = "shapes", gap: float = 0.0,
            classes: Sequence[str] = TARGET_CLASSES, epochs: int = 6, batch_size: int = 16,
            optimizer: str = "auto", lr: float | None = None, clip: float | None = DEFAULT_CLIP, seed: int = 0,
            source: nn.Module | dict | None = None, build: Callable[[int], nn.Module] | None = None,
            device: str = "cpu") -> Comparison:
    """Fine-tune the target task from ``source`` and from scratch, same seed, same data, same recipe.

    Both models are built under ``seed`` by ``build(nc)``; the pretrained one then receives every
    source entry whose name and shape match (:func:`workbench.transfer`: the class layer stays
    fresh). Then :func:`workbench.fit` trains each with the same options.

    Args:
        n_per_class, domain, gap, classes: the target task (:func:`target_data`).
        epochs, batch_size, optimizer, lr, clip: ``fit``'s options, the same for both runs.
        seed: the seed of the data, the initialisation and the batch order.
        source: pretrained weights (a model or a state_dict); default ``workbench.pretrained("shapes_n")``.
        build: ``nc -> model`` (default: a workbench model like the source).
        device: where to train; the CPU by default, so that a seed gives the same numbers everywhere
            (an accelerator, with its own kernels and mixed precision, gives slightly different ones).

    Example:
        >>> from workbench import build_model
        >>> result = compare(2, epochs=1, batch_size=4, source=build_model(nc=10))
        >>> result.pretrained.history.step, result.scratch.history.step
        (2, 2)
    """
    train, val = target_data(n_per_class, domain=domain, gap=gap, classes=classes, seed=seed)
    source = pretrained("shapes_n") if source is None else source
    build = build or default_build(source)
    models: dict[str, nn.Module] = {}
    histories = paired_runs(train, val, source=source, build=build, runs=STARTS, depth=0, epochs=epochs,
                            batch_size=batch_size, seed=seed, models=models, optimizer=optimizer, lr=lr, clip=clip,
                            device=device)
    runs = {}
    for start in STARTS:
        history, model = histories[start], models[start]
        if history.status != "completed":
            raise RuntimeError(f"the {start} run did not complete ({history.status}): {history.events}")
        runs[start] = Run(start, history, history.val["accuracy"][-1],
                          bn_reestimated_accuracy(model, train, val, batch_size))
    return Comparison(domain, n_per_class, gap, tuple(train.classes), len(train), epochs, runs["pretrained"],
                      runs["scratch"])


@dataclass(frozen=True, repr=False)
class Sweep(TextResult):
    """:func:`compare` over the knobs: one :class:`Comparison` per setting."""

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
        header = ("target", "pretrained", "scratch", "advantage", "pretrained (BN re-est.)", "scratch (BN re-est.)",
                  "advantage (BN re-est.)")
        rows = [{"target": r.knobs(), "pretrained": f"{r.pretrained.accuracy:.3f}",
                 "scratch": f"{r.scratch.accuracy:.3f}", "advantage": f"{r.advantage:+.3f}",
                 "pretrained (BN re-est.)": f"{r.pretrained.accuracy_bn:.3f}",
                 "scratch (BN re-est.)": f"{r.scratch.accuracy_bn:.3f}",
                 "advantage (BN re-est.)": f"{r.feature_advantage:+.3f}"} for r in self.results]
        return str(Table(header, rows, indent=2, title="validation accuracy at the end of each run"))

    def figure(self, title: str = "Pretrained against scratch over the knobs"):
        """Final validation accuracy per setting (:func:`workbench.plots.sweep_bars`)."""
        return sweep_bars(self.results, STARTS, title=title)


def sweep(settings: Iterable[Mapping], **common) -> Sweep:
    """:func:`compare` once per setting: each a dict of its knobs, ``common`` the options they share.

    Example:
        >>> from workbench import build_model
        >>> result = sweep([{"n_per_class": 2}, {"n_per_class": 3}], epochs=1, batch_size=4,
        ...                source=build_model(nc=10))
        >>> [r.n_train for r in result.results]
        [8, 12]
    """
    results = tuple(compare(**{**common, **setting}) for setting in settings)
    if not results:
        raise ValueError("sweep needs at least one setting, e.g. [{'n_per_class': 10}, {'domain': 'digits'}]")
    return Sweep(results)


def grid(n_per_class: Iterable[int] = (10,), gap: Iterable[float] = (0.0,), domain: Iterable[str] = ("shapes",)
         ) -> list[dict]:
    """Every combination of the knobs as :func:`sweep` settings.

    Example:
        >>> grid((10, 50), gap=(0.0, 0.5))[1]
        {'domain': 'shapes', 'n_per_class': 10, 'gap': 0.5}
    """
    return [{"domain": d, "n_per_class": n, "gap": g} for d, n, g in product(domain, n_per_class, gap)]
