"""Training from scratch: signal propagation per initialisation, and a run that explodes made stable.

:func:`signal_propagation` re-initialises a copy of a model with each scheme of
:func:`~workbench.models.init_weights` (and, with ``as_is=``, keeps one copy's own weights) and
records the mean and std of every numbered layer's output on one batch, with and without
BatchNorm (:func:`without_batchnorm`): the data of a signal-propagation plot.
:func:`scratch_setup` builds the lesson's two runs from the same seed: the fragile one (high LR,
no BatchNorm, no clipping, no warmup) and the stable one (the same LR with BatchNorm, clipping
and YOLO's warmup).

Example:
    >>> import torch
    >>> from workbench import build_model
    >>> rows = signal_propagation(build_model(nc=3), torch.randn(8, 3, 32, 32), "zero", batchnorm=False)
    >>> rows[0].std
    0.0
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .models import INIT_SCHEMES, build_model, init_weights
from .monitor import ActivationStats
from .schedules import YoloSchedule
from .training import History, fit

HIGH_LR = 1.0  # SGD: a hundred times YOLO's lr0 of 0.01
STABLE_CLIP = 0.25  # gradient norms here start near 30: clipping at 0.25 bounds every step to about lr * 0.25
WARMUP_EPOCHS = 3.0
REMEDIES = ("none", "clip", "batchnorm", "lower_lr", "warmup", "all")
LOWER_LR = 0.01  # YOLO's lr0 for SGD: a hundred times below the fragile run's


def without_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm layer replaced by ``nn.Identity`` (the model is unchanged).

    Example:
        >>> from workbench import build_model
        >>> plain = without_batchnorm(build_model())
        >>> any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
        False
    """
    plain = copy.deepcopy(model)
    for module in list(plain.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, name, nn.Identity())
    return plain


@dataclass(frozen=True)
class SignalRow:
    """One numbered layer's output right after initialisation: scheme, BatchNorm or not, mean and std."""

    scheme: str
    batchnorm: bool
    index: int
    name: str
    type: str
    mean: float
    std: float


def _as_list(value, kind) -> list:
    return [value] if isinstance(value, kind) else list(value)


def signal_propagation(model: nn.Module | Callable[[], nn.Module], x: torch.Tensor,
                       scheme: str | Sequence[str] = INIT_SCHEMES, batchnorm: bool | Sequence[bool] = (True, False),
                       *, seed: int = 0, as_is: str | None = None) -> list[SignalRow]:
    """Mean and std of every numbered layer's output on ``x``, right after each initialisation scheme.

    Args:
        model: a model (copied, never changed) or a function that builds one.
        x: one batch of inputs.
        scheme: one of ``"default"``, ``"kaiming"``, ``"xavier"``, ``"normal"``, ``"zero"``, several, or none (``()``).
        batchnorm: ``True`` (as built), ``False`` (:func:`without_batchnorm`), or both.
        seed: seeds each initialisation, so every scheme starts from the same random state.
        as_is: also measure the model's own weights, not re-initialised (pretrained weights, say), and
            label their rows with this name (``as_is="pretrained"``); ``None``: not measured.

    The forward pass runs in training mode, as the first step of training would, so BatchNorm
    normalises with the batch's own statistics.

    Example:
        >>> import torch
        >>> from workbench import build_model
        >>> rows = signal_propagation(build_model(nc=3), torch.randn(8, 3, 32, 32), "kaiming", batchnorm=True)
        >>> [row.name for row in rows][:2]
        ['layers.0', 'layers.1']
        >>> {row.scheme for row in signal_propagation(build_model(nc=3), torch.randn(8, 3, 32, 32), (), as_is="mine")}
        {'mine'}
    """
    schemes, norms = _as_list(scheme, str), _as_list(batchnorm, bool)
    unknown = [s for s in schemes if s not in INIT_SCHEMES]
    if unknown:
        raise ValueError(f"unknown init scheme {unknown[0]!r}; choose from {list(INIT_SCHEMES)}")
    if as_is is not None and as_is in INIT_SCHEMES:
        raise ValueError(f"as_is={as_is!r} is the name of an init scheme: label the model's own weights otherwise "
                         f"(as_is='pretrained')")
    rows = []
    for bn in norms:
        for name in schemes + ([as_is] if as_is is not None else []):
            built = model() if callable(model) and not isinstance(model, nn.Module) else copy.deepcopy(model)
            probe = built if bn else without_batchnorm(built)
            torch.manual_seed(seed)
            if name != as_is:
                init_weights(probe, name)
            rows += [SignalRow(name, bn, *row) for row in _forward_stats(probe, x)]
    return rows


def _forward_stats(probe: nn.Module, x: torch.Tensor) -> list[tuple]:
    """``(index, name, type, mean, std)`` of every numbered layer's output, in training mode (as a first step)."""
    probe.train()
    with torch.no_grad(), ActivationStats(probe) as stats:
        probe(x)
    return [(r.index, r.name, r.type, r.mean, r.std) for r in stats.rows]


def scratch_setup(stable: bool, *, nc: int = 3, lr: float = HIGH_LR, scheme: str = "kaiming",
                  seed: int = 0) -> tuple[nn.Module, dict]:
    """The lesson's run from scratch: a freshly initialised model and the ``fit`` keyword arguments.

    ``stable=False``: no BatchNorm, no clipping, no warmup, and the run goes non-finite within a
    few dozen steps. ``stable=True``: BatchNorm, clipping at :data:`STABLE_CLIP` and YOLO's warmup
    (``YoloSchedule("ultralytics")``), and it learns. The same as ``remedy_setup("none" | "all")``.

    Example:
        >>> model, options = scratch_setup(stable=False)
        >>> options["clip"], options["schedule"]
        (None, None)
    """
    return remedy_setup("all" if stable else "none", nc=nc, lr=lr, scheme=scheme, seed=seed)


def remedy_setup(remedy: str = "none", *, nc: int = 3, lr: float = HIGH_LR, scheme: str = "kaiming",
                 seed: int = 0) -> tuple[nn.Module, dict]:
    """The fragile run with one remedy: a freshly initialised model and the ``fit`` keyword arguments.

    Every variant starts from the same seed and the same conv weights and trains with SGD.
    ``"none"``: ``lr`` (1.0) without BatchNorm, clipping or warmup. ``"clip"``: clip the gradient
    norm at :data:`STABLE_CLIP`. ``"batchnorm"``: keep the BatchNorm layers.
    ``"lower_lr"``: :data:`LOWER_LR` instead of ``lr``. ``"warmup"``: YOLO's warmup
    (``YoloSchedule("ultralytics")``). ``"all"``: BatchNorm, clipping and warmup at ``lr``.
    The options hold no ``seed``: pass it to ``fit`` (or to a panel) yourself.

    Example:
        >>> model, options = remedy_setup("clip")
        >>> options["clip"], options["lr"]
        (0.25, 1.0)
    """
    if remedy not in REMEDIES:
        raise ValueError(f"unknown remedy {remedy!r}; choose one of {list(REMEDIES)}")
    torch.manual_seed(seed)
    model = init_weights(build_model(nc=nc), scheme)
    if remedy not in ("batchnorm", "all"):
        model = without_batchnorm(model)
    warmup = remedy in ("warmup", "all")
    options = {"optimizer": "sgd", "lr": LOWER_LR if remedy == "lower_lr" else lr,
               "clip": STABLE_CLIP if remedy in ("clip", "all") else None,
               "schedule": YoloSchedule("ultralytics", warmup_epochs=WARMUP_EPOCHS) if warmup else None}
    return model, options


def scratch_run(stable: bool, train, val=None, *, epochs: int = 10, batch_size: int = 16, seed: int = 0,
                nc: int | None = None, **fit_options) -> tuple[nn.Module, History]:
    """Build :func:`scratch_setup` and train it; returns the model and its History.

    ``nc`` defaults to the class count of ``train`` (an ``ImageSet``); other ``fit`` options pass through.

    Example:
        >>> from workbench import data
        >>> train = data.shapes(4, classes=3)
        >>> model, history = scratch_run(True, train, epochs=4, batch_size=6, progress=False)
        >>> history.status
        'completed'
    """
    if nc is None and not hasattr(train, "nc"):
        raise ValueError("pass nc=<number of classes>: train has no class list to count")
    model, options = scratch_setup(stable, nc=nc or train.nc, seed=seed)
    options.update(fit_options)
    return model, fit(model, train, val, epochs=epochs, batch_size=batch_size, seed=seed, **options)
