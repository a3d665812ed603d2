"""Lesson 6, your own model: the workbench's primitives on a network it did not define.

The model is :class:`~workbench.experiments.tiny_resnet.TinyResNet` (plain PyTorch, torchvision's
names); the workbench reads it as its top-level children, numbered in order, the last one with
parameters (``fc``) being the head. Its "pretrained" weights come from its own source task, six
shapes (:func:`pretrain_own`); the target task is three other shapes with few images
(:func:`target_task`). :func:`fine_tune` trains it with the lesson's :data:`OWN_RECIPE` from
scratch, from the source weights, and from them with the first layers frozen, on the same data
and seed. :func:`library_model` builds the
same kind of model from torchvision, timm or Ultralytics when one of them is installed.

Example:
    >>> from workbench import numbered_layers
    >>> model = build(3)
    >>> [layer.name for layer in numbered_layers(model)][-2:]
    ['avgpool', 'fc']
"""
from __future__ import annotations

import importlib
import importlib.util
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import data
from ..freezing import freeze
from ..metrics import evaluate
from ..optim import make_optimizer
from ..schedules import YoloSchedule
from ..table import Table, TableResult, find_row
from ..training import History, fit
from ..transfer import transfer
from .recipe import Recipe
from .tiny_resnet import TinyResNet

SOURCE_CLASSES = ("circle", "square", "triangle", "ring", "plus", "diamond")
TARGET_CLASSES = ("hbar", "vbar", "cross")
LIBRARIES = ("torchvision", "timm", "ultralytics")
WIDTH = 8  # channels of the first stage: small enough for a CPU lesson
LR, HEAD_MULT, WARMUP_EPOCHS = 0.01, 5.0, 1.0  # AdamW for a small model from its own start (see fit_options)
RUNS = ("scratch", "pretrained", "frozen")
# the lesson's recipe: AdamW at LR, YOLO's warmup over one epoch with the bias warmup from 0 (as Ultralytics for AdamW)
OWN_RECIPE = Recipe(epochs=6, batch_size=10, optimizer="adamw", lr=LR,
                    schedule=YoloSchedule("ultralytics", warmup_epochs=WARMUP_EPOCHS, warmup_bias_lr=0.0))
SOURCE_RECIPE = OWN_RECIPE.replace(epochs=12, batch_size=30)  # how the model's own "pretrained" weights are made


def build(nc: int) -> TinyResNet:
    """The lesson's model for ``nc`` classes: ``TinyResNet(num_classes=nc, width=8)``."""
    return TinyResNet(num_classes=nc, width=WIDTH)


def source_task(n_per_class: int = 40, *, seed: int = 0) -> tuple[data.ImageSet, data.ImageSet]:
    """Six shapes, 32x32, split 75/25: the task the model's "pretrained" weights come from."""
    return data.split(data.shapes(n_per_class, SOURCE_CLASSES, seed=seed), 0.25, seed=seed)


def target_task(n_per_class: int = 20, *, seed: int = 1) -> tuple[data.ImageSet, data.ImageSet]:
    """Three shapes the source never saw (hbar, vbar, cross), split 50/50: 30 training images for 20 per class."""
    return data.split(data.shapes(n_per_class, TARGET_CLASSES, seed=seed), 0.5, seed=seed)


def fit_options(model: nn.Module, recipe: Recipe = OWN_RECIPE, *, head_mult: float = HEAD_MULT) -> dict:
    """``fit``'s options for ``model`` under ``recipe``: its optimiser over tagged groups, the head at ``head_mult`` x.

    ``fit``'s ``optimizer="auto"`` picks Ultralytics' learning rate for YOLO models (about 0.0007
    for 10 classes), far too low for a small ResNet to learn in a few dozen steps; so the optimiser
    is built here with :func:`~workbench.optim.make_optimizer` from ``recipe.optimizer`` and ``recipe.lr``.

    Example:
        >>> options = fit_options(build(3))
        >>> [group["name"] for group in options["optimizer"].param_groups], options["epochs"]
        (['weight', 'norm', 'bias', 'weight/head', 'bias/head'], 6)
    """
    options = recipe.fit_options()
    options["optimizer"] = make_optimizer(model, options["optimizer"], lr=options.pop("lr"),
                                          lr_mult={"head": head_mult})
    return options


@dataclass(frozen=True)
class OwnPretrained:
    """The model trained on its source task, the classes it knows and its source validation accuracy."""

    model: nn.Module = field(compare=False, repr=False)
    classes: tuple[str, ...]
    val_accuracy: float
    steps: int

    def __str__(self) -> str:
        return (f"{type(self.model).__name__} pretrained on {len(self.classes)} shapes ({', '.join(self.classes)}): "
                f"{self.steps} steps, source validation accuracy {self.val_accuracy:.3f}")

    __repr__ = __str__


def pretrain_own(recipe: Recipe = SOURCE_RECIPE, *, n_per_class: int = 40, seed: int = 0,
                 build: Callable[[int], nn.Module] = build) -> OwnPretrained:
    """Train ``build(6)`` on the six source shapes with ``recipe``, seeded; it becomes the source of a transfer.

    Example:
        >>> source = pretrain_own(SOURCE_RECIPE.replace(epochs=1, batch_size=6), n_per_class=3)
        >>> source.classes[:2], source.model.fc.out_features
        (('circle', 'square'), 6)
    """
    train, val = source_task(n_per_class, seed=seed)
    torch.manual_seed(seed)
    model = build(train.nc)
    history = fit(model, train, None, seed=seed, progress=False, **fit_options(model, recipe))
    accuracy = evaluate(model, [(val.x, val.y)])["accuracy"]
    return OwnPretrained(model, train.classes, accuracy, history.step)


@dataclass(frozen=True)
class OwnRunRow:
    """One run on the target task: what trained, for how long, and its validation accuracy per epoch."""

    run: str
    trainable: int
    steps: int
    first_val_accuracy: float
    best_val_accuracy: float
    last_val_accuracy: float
    mean_val_accuracy: float


@dataclass(frozen=True, repr=False)
class OwnComparison(TableResult):
    """Scratch, pretrained and frozen runs of your model; ``histories`` and ``models`` keep each run."""

    rows: tuple[OwnRunRow, ...]
    histories: dict[str, History] = field(default_factory=dict, compare=False, repr=False)
    models: dict[str, nn.Module] = field(default_factory=dict, compare=False, repr=False)

    HEADER = ("run", "trainable params", "steps", "val acc 1st epoch", "best val acc", "last val acc",
              "mean val acc")

    def row(self, run: str) -> OwnRunRow:
        return find_row(self.rows, "run", run)

    def as_table(self) -> Table:
        rows = [{"run": r.run, "trainable params": r.trainable, "steps": r.steps,
                 "val acc 1st epoch": r.first_val_accuracy, "best val acc": r.best_val_accuracy,
                 "last val acc": r.last_val_accuracy, "mean val acc": r.mean_val_accuracy} for r in self.rows]
        return Table(self.HEADER, rows, caption="Your model on the target task, same data and seed")


def start_model(run: str, source: nn.Module | dict, nc: int, *, build: Callable[[int], nn.Module] = build,
                depth: int = 5, bn: str = "eval", seed: int = 0) -> nn.Module:
    """One run's starting model: fresh (``"scratch"``), with the source's weights (``"pretrained"``),
    or with them and layers ``0..depth-1`` frozen under BatchNorm policy ``bn`` (``"frozen"``)."""
    if run not in RUNS:
        raise ValueError(f"unknown run {run!r}; choose one of {list(RUNS)}")
    torch.manual_seed(seed)
    model = build(nc)
    if run != "scratch":
        transfer(source.model if isinstance(source, OwnPretrained) else source, model)
    if run == "frozen":
        freeze(model, depth=depth, bn=bn)
    return model


def fine_tune(source: OwnPretrained | nn.Module | dict, train, val, recipe: Recipe = OWN_RECIPE, *, seed: int = 0,
              build: Callable[[int], nn.Module] = build, runs: Sequence[str] = RUNS, depth: int = 5,
              bn: str = "eval", head_mult: float = HEAD_MULT) -> OwnComparison:
    """Train every run of ``runs`` (:func:`start_model`) on ``train`` with ``recipe`` (:func:`fit_options`).

    Each run builds its own optimiser over its own model, so the runs are trained here one after
    another rather than by :func:`workbench.runs.run_all`, whose options are fixed before a model exists.

    Example:
        >>> source = pretrain_own(SOURCE_RECIPE.replace(epochs=1, batch_size=6), n_per_class=3)
        >>> train, val = target_task(4)
        >>> result = fine_tune(source, train, val, OWN_RECIPE.replace(epochs=1, batch_size=3), runs=["frozen"])
        >>> [row.run for row in result.rows], result.models["frozen"].layer2.conv1.weight.requires_grad
        (['frozen'], False)
    """
    unknown = [run for run in runs if run not in RUNS]
    if unknown:
        raise ValueError(f"unknown run {unknown[0]!r}; choose from {list(RUNS)}")
    rows, histories, models = [], {}, {}
    for run in runs:
        model = start_model(run, source, train.nc, build=build, depth=depth, bn=bn, seed=seed)
        history = fit(model, train, val, seed=seed, progress=False, **fit_options(model, recipe, head_mult=head_mult))
        accuracy = history.val["accuracy"]
        rows.append(OwnRunRow(run, sum(p.numel() for p in model.parameters() if p.requires_grad), history.step,
                              accuracy[0], max(accuracy), accuracy[-1], statistics.fmean(accuracy)))
        histories[run], models[run] = history, model
    return OwnComparison(tuple(rows), histories, models)


def library_problem(name: str) -> str:
    """Why ``name`` cannot build its model here ("" when it can): not installed, or installed but not loadable."""
    if importlib.util.find_spec(name) is None:
        return f"{name} is not installed: `pip install {name}` to build its model here"
    module = {"torchvision": "torchvision.models", "timm": "timm", "ultralytics": "ultralytics.nn.tasks"}[name]
    try:
        importlib.import_module(module)
    except Exception as err:  # a build for another torch fails with RuntimeError or OSError, not ImportError
        return (f"{name} is installed but does not load beside torch {torch.__version__} ({err}): install the "
                f"{name} release built for this torch (`pip install {name}` in a fresh environment picks a match)")
    return ""


def library_available(name: str) -> bool:
    """Whether ``name`` (``"torchvision"``, ``"timm"``, ``"ultralytics"``) is installed and loads beside this torch.

    Example:
        >>> model = library_model("torchvision") if library_available("torchvision") else None
        >>> library_problem("torchvision") == "" or "pip install torchvision" in library_problem("torchvision")
        True
    """
    return not library_problem(name)


def library_model(name: str, nc: int = 3) -> nn.Module:
    """A ResNet-18 from torchvision or timm, or YOLOv8n-cls from Ultralytics, built from its definition (no download).

    Raises ``ValueError`` naming ``pip install`` when the library is missing or installed but not
    loadable beside this torch (check first with :func:`library_available`), and for a library this
    lesson does not know.

    Example:
        >>> not library_available("torchvision") or isinstance(library_model("torchvision"), nn.Module)
        True
    """
    if name not in LIBRARIES:
        raise ValueError(f"unknown library {name!r}; choose one of {list(LIBRARIES)}")
    problem = library_problem(name)
    if problem:
        raise ValueError(problem)
    if name == "torchvision":
        return importlib.import_module("torchvision.models").resnet18(weights=None, num_classes=nc)
    if name == "timm":
        return importlib.import_module("timm").create_model("resnet18", pretrained=False, num_classes=nc)
    tasks = importlib.import_module("ultralytics.nn.tasks")
    return tasks.ClassificationModel("yolov8n-cls.yaml", nc=nc, verbose=False)
