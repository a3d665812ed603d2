"""Lesson 5, training from scratch: what the initialisation does, a run that explodes, and its remedies.

Three seeded experiments, each a function returning a small frozen result that prints as a table:

* :func:`init_signal`: the std of every layer's output right after each initialisation, with and
  without BatchNorm (:func:`~workbench.stability.signal_propagation`), summed up per scheme;
* :func:`remedies`: the fragile run (SGD at a high LR, no BatchNorm, no clipping, no warmup), then
  the same run with one remedy at a time, then with all of them (:func:`remedy_setup`);
* :func:`scratch_vs_pretrained`: the same target task from scratch and from the shipped pretrained
  weights, with the gradient norms that ``fit`` records per layer.

Example:
    >>> train, val = lesson_data()
    >>> len(train), len(val), train.classes
    (72, 24, ('circle', 'square', 'triangle'))
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import data
from ..models import INIT_SCHEMES, build_model
from ..runs import Run, default_source, run_all
from ..stability import (  # LOWER_LR, REMEDIES, remedy_setup: the lesson reads them from here
    HIGH_LR,
    LOWER_LR,  # noqa: F401
    REMEDIES,
    SignalRow,
    remedy_setup,
    signal_propagation,
)
from ..table import Table, TableResult, find_row
from ..training import History
from ..transfer import transfer
from .recipe import Recipe

CLASSES = ("circle", "square", "triangle")
# the fragile run: SGD at HIGH_LR, no clipping, no schedule (remedy_setup adds one remedy at a time)
REMEDY_RECIPE = Recipe(epochs=6, batch_size=16, optimizer="sgd", lr=HIGH_LR, clip=None)
COMPARISON_RECIPE = Recipe(epochs=4, batch_size=16)  # fit's defaults: "auto" optimiser, clipping at 10


def lesson_data(n_per_class: int = 32, *, seed: int = 0) -> tuple[data.ImageSet, data.ImageSet]:
    """The lesson's small target task: three shapes, 32x32, split 75/25 (72 training images for 32 per class)."""
    return data.split(data.shapes(n_per_class, CLASSES, seed=seed), 0.25, seed=seed)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _shown(header: Sequence[str], rows: Sequence[dict], caption: str) -> Table:
    """The lesson's tables: "-" for a value that does not apply, yes/no, three significant digits."""
    return Table(header, [{k: _fmt(v) for k, v in row.items()} for row in rows], caption=caption)


# ---------------------------------------------------------------- initialisation


@dataclass(frozen=True, repr=False)
class SignalSummary(TableResult):
    """Per initialisation scheme, with and without BatchNorm: the output std of the first layer, of the
    last layer before the head, and of the head (the last layer).

    The head's std is not always the signal's: PyTorch's default initialisation gives the head's
    linear layer a random bias, which sets the output's std when no signal reaches it. ``rows``
    are the full :class:`~workbench.stability.SignalRow` list (one per layer call), ready for
    :func:`workbench.plots.signal_plot`.
    """

    rows: tuple[SignalRow, ...]

    HEADER = ("init", "BatchNorm", "std first layer", "std before the head", "std head (last layer)")

    def std(self, scheme: str, batchnorm: bool, index: int = -1) -> float:
        """The output std of the layer at position ``index`` (-1: the last) for one scheme and setting."""
        mine = [r for r in self.rows if r.scheme == scheme and r.batchnorm == batchnorm]
        if not mine:
            raise ValueError(f"no rows for scheme={scheme!r}, batchnorm={batchnorm}; the summary has "
                             f"{sorted({(r.scheme, r.batchnorm) for r in self.rows})}")
        return mine[index].std

    @property
    def table(self) -> list[tuple[str, bool, float, float, float]]:
        """``(scheme, batchnorm, std first layer, std last layer, std before the head)`` per scheme and setting."""
        keys = list(dict.fromkeys((r.scheme, r.batchnorm) for r in self.rows))
        return [(scheme, bn, self.std(scheme, bn, 0), self.std(scheme, bn, -1), self.std(scheme, bn, -2))
                for scheme, bn in keys]

    def as_table(self) -> Table:
        rows = [{"init": scheme, "BatchNorm": bn, "std first layer": first, "std before the head": before,
                 "std head (last layer)": last} for scheme, bn, first, last, before in self.table]
        return _shown(self.HEADER, rows, "Signal propagation at initialisation")


def init_signal(x: torch.Tensor, model: nn.Module | Callable[[], nn.Module] | None = None, *,
                schemes: Sequence[str] = INIT_SCHEMES, seed: int = 0) -> SignalSummary:
    """Signal propagation on ``x`` for every scheme, with and without BatchNorm.

    ``model`` defaults to the lesson's ``build_model(nc=3)``; it is copied, never changed.

    Example:
        >>> summary = init_signal(torch.rand(4, 3, 32, 32), schemes=["kaiming", "zero"])
        >>> summary.std("zero", batchnorm=False)
        0.0
    """
    model = model if model is not None else build_model(nc=3)
    return SignalSummary(tuple(signal_propagation(model, x, list(schemes), (True, False), seed=seed)))


# ---------------------------------------------------------------- the fragile run and its remedies


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _epoch_values(history: History, values: Sequence[float], which: int) -> list[float]:
    """The values of the first (``which=0``) or last (``-1``) epoch the run took steps in."""
    if not history.epoch:
        return []
    epoch = history.epoch[which]
    return [v for v, e in zip(values, history.epoch) if e == epoch]


@dataclass(frozen=True)
class RemedyRow:
    """One variant of the fragile run: how it ended, where it blew up, its loss and its largest gradient norm."""

    remedy: str
    status: str
    steps: int
    stopped_at: int | None
    layer: str | None
    first_loss: float | None
    last_loss: float | None
    max_grad_norm: float | None


@dataclass(frozen=True, repr=False)
class RemedyTable(TableResult):
    """The fragile run and its remedies, one row each; ``histories`` keeps every run's :class:`History`."""

    rows: tuple[RemedyRow, ...]
    histories: dict[str, History] = field(default_factory=dict, compare=False, repr=False)

    HEADER = ("remedy", "status", "steps", "blew up at step", "in layer", "loss 1st epoch", "loss last epoch",
              "max |g|")

    def row(self, remedy: str) -> RemedyRow:
        return find_row(self.rows, "remedy", remedy)

    def as_table(self) -> Table:
        rows = [{"remedy": r.remedy, "status": r.status, "steps": r.steps, "blew up at step": r.stopped_at,
                 "in layer": r.layer, "loss 1st epoch": r.first_loss, "loss last epoch": r.last_loss,
                 "max |g|": r.max_grad_norm} for r in self.rows]
        return _shown(self.HEADER, rows, "The fragile run, one remedy at a time")


def _remedy_row(remedy: str, history: History) -> RemedyRow:
    bad = history.non_finite
    return RemedyRow(remedy, history.status, history.step, bad.step if bad else None, bad.layer if bad else None,
                     _mean(_epoch_values(history, history.loss, 0)), _mean(_epoch_values(history, history.loss, -1)),
                     max(history.grad_norm) if history.grad_norm else None)


def remedies(train, val=None, recipe: Recipe = REMEDY_RECIPE, *, which: Sequence[str] = REMEDIES,
             seed: int = 0) -> RemedyTable:
    """Train the fragile run and each remedy in ``which`` on the same data and seed (:func:`remedy_setup`).

    ``recipe`` gives the epochs, batch size, device and the fragile learning rate (``recipe.lr``);
    each remedy sets its own optimiser, lr, clipping and schedule on top of it.

    Example:
        >>> train, _ = lesson_data(4)
        >>> table = remedies(train, recipe=REMEDY_RECIPE.replace(epochs=1, batch_size=6), which=["all"])
        >>> table.row("all").status
        'completed'
    """
    unknown = [name for name in which if name not in REMEDIES]
    if unknown:
        raise ValueError(f"unknown remedy {unknown[0]!r}; choose from {list(REMEDIES)}")
    runs = [_remedy_run(name, train.nc, recipe.lr, seed) for name in which]
    histories = run_all(runs, train, val, seed=seed, **recipe.fit_options())
    return RemedyTable(tuple(_remedy_row(n, h) for n, h in histories.items()), histories)


def _remedy_run(remedy: str, nc: int, lr: float, seed: int) -> Run:
    """:func:`remedy_setup` as a :class:`~workbench.runs.Run`: its model built at the start, its options on top."""
    _, options = remedy_setup(remedy, nc=nc, lr=lr, seed=seed)
    return Run(remedy, lambda: remedy_setup(remedy, nc=nc, lr=lr, seed=seed)[0], options)


# ---------------------------------------------------------------- scratch against pretrained


@dataclass(frozen=True)
class RunRow:
    """One run of the comparison: losses, validation accuracy, gradient norms and how often clipping acted."""

    run: str
    epochs: int
    steps: int
    first_loss: float | None
    last_loss: float | None
    first_val_accuracy: float | None
    best_val_accuracy: float | None
    early_grad_norm: float | None  # median total gradient norm over the first epoch
    late_grad_norm: float | None  # ... over the last epoch
    clipped: float  # fraction of steps that clipping scaled down


@dataclass(frozen=True, repr=False)
class Comparison(TableResult):
    """Scratch against pretrained on the same data and seed; ``histories`` keeps every run's :class:`History`."""

    rows: tuple[RunRow, ...]
    histories: dict[str, History] = field(default_factory=dict, compare=False, repr=False)

    HEADER = ("run", "epochs", "steps", "loss 1st epoch", "loss last epoch", "val acc 1st epoch", "best val acc",
              "median |g| 1st epoch", "median |g| last epoch", "clipped steps")

    def row(self, run: str) -> RunRow:
        return find_row(self.rows, "run", run)

    def as_table(self) -> Table:
        rows = [{"run": r.run, "epochs": r.epochs, "steps": r.steps, "loss 1st epoch": r.first_loss,
                 "loss last epoch": r.last_loss, "val acc 1st epoch": r.first_val_accuracy,
                 "best val acc": r.best_val_accuracy, "median |g| 1st epoch": r.early_grad_norm,
                 "median |g| last epoch": r.late_grad_norm, "clipped steps": f"{100 * r.clipped:.0f}%"}
                for r in self.rows]
        return _shown(self.HEADER, rows, "Scratch against pretrained, same data and seed")


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _run_row(run: str, epochs: int, history: History) -> RunRow:
    accuracy = history.val.get("accuracy", [])
    clipped = sum(c < 1.0 for c in history.clip_coef) / len(history.clip_coef) if history.clip_coef else 0.0
    return RunRow(run, epochs, history.step, _mean(_epoch_values(history, history.loss, 0)),
                  _mean(_epoch_values(history, history.loss, -1)), accuracy[0] if accuracy else None,
                  max(accuracy) if accuracy else None, _median(_epoch_values(history, history.grad_norm, 0)),
                  _median(_epoch_values(history, history.grad_norm, -1)), clipped)


def scratch_vs_pretrained(train, val, recipe: Recipe = COMPARISON_RECIPE, *, seed: int = 0,
                          source: nn.Module | dict | None = None, build: Callable[[int], nn.Module] | None = None,
                          longer: int = 0) -> Comparison:
    """Fine-tune from ``source`` and train from scratch with the same ``recipe``, on the same data and seed.

    Args:
        train, val: the target task (``ImageSet``; the class count is read from ``train``).
        recipe: how both runs train (default :data:`COMPARISON_RECIPE`: 4 epochs, ``fit``'s defaults).
        source: the pretrained model or state_dict (default :func:`workbench.runs.default_source`),
            copied into the target with :func:`~workbench.transfer` (the head's class layer stays fresh).
        build: ``nc -> model`` for the target (default ``build_model(nc=nc)``).
        longer: with ``longer > 1`` a third run trains from scratch ``longer`` times as many epochs.

    Example:
        >>> train, val = lesson_data(4)
        >>> result = scratch_vs_pretrained(train, val, Recipe(epochs=1, batch_size=6))
        >>> [row.run for row in result.rows]
        ['pretrained', 'scratch']
    """
    if not isinstance(longer, int) or longer < 0:
        raise ValueError(f"longer must be an integer >= 0 (0 or 1: no longer run; got {longer!r})")
    build = build or (lambda nc: build_model(nc=nc))
    source = default_source() if source is None else source

    def start(pretrained: bool) -> Callable[[], nn.Module]:
        def model() -> nn.Module:
            built = build(train.nc)
            if pretrained:
                transfer(source, built)
            return built
        return model

    epochs = {"pretrained": recipe.epochs, "scratch": recipe.epochs}
    if longer > 1:
        epochs[f"scratch x{longer}"] = recipe.epochs * longer
    runs = [Run(name, start(name == "pretrained"), {"epochs": n}) for name, n in epochs.items()]
    histories = run_all(runs, train, val, seed=seed, **recipe.fit_options())
    return Comparison(tuple(_run_row(name, epochs[name], h) for name, h in histories.items()), histories)
