"""Where a studio run starts: shipped weights, a checkpoint, a model, a state_dict, or scratch.

Example:
    >>> from workbench import data
    >>> start = starting_model(None, data.shapes(2, classes=3), seed=0)
    >>> start.report is None, start.model.nc, start.describe
    (True, 3, 'scratch (random initialisation, seed 0)')
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import PRETRAINED, pretrained
from ..i18n import _
from ..models import build_model
from ..transfer import TransferReport, source_state, transfer


@dataclass(frozen=True)
class Start:
    """The model a studio trains, the transfer ledger that filled it (``None``: nothing transferred), and a line."""

    model: nn.Module
    report: TransferReport | None
    describe: str


def _channels(train) -> int:
    x = getattr(train, "x", None)
    return int(x.shape[1]) if x is not None and x.ndim == 4 else 3


def _classes(train) -> tuple[str, ...] | None:
    return tuple(train.classes) if getattr(train, "classes", None) else None


def _build_like(source, train) -> Callable[[int], nn.Module]:
    """``nc -> model``: a workbench model of the source's scale, task and channels (or scale n for a file)."""
    if all(hasattr(source, a) for a in ("scale", "task", "ch")):
        return lambda nc: build_model(source.scale, source.task, nc=nc, ch=source.ch)
    return lambda nc: build_model("n", "classify", nc=nc, ch=_channels(train))


def _resolve_source(source) -> tuple[object, str]:
    """The source as a model or a state_dict, and how to describe it."""
    if isinstance(source, str) and source in PRETRAINED:
        return pretrained(source), _("shipped weights {name!r}").format(name=source)
    if isinstance(source, (str, Path)):
        if not Path(source).exists():
            raise ValueError(f"source={str(source)!r} is neither shipped weights ({sorted(PRETRAINED)}) nor an "
                             f"existing checkpoint file: pass one of those, a model, a state_dict, or None (scratch)")
        return source_state(source), _("checkpoint {name}").format(name=Path(source).name)
    if isinstance(source, nn.Module):
        return source, _("{cls} weights").format(cls=type(source).__name__)
    if isinstance(source, dict):
        return source, _("a state_dict")
    raise ValueError(f"source must be shipped weights ({sorted(PRETRAINED)}), a checkpoint path, an nn.Module, a "
                     f"state_dict or None (scratch); got {type(source).__name__}")


def starting_model(source, train, *, model: nn.Module | None = None,
                   build: Callable[[int], nn.Module] | None = None, seed: int = 0) -> Start:
    """The model to fine-tune on ``train`` and what it received from ``source``.

    ``model`` (yours, any ``nn.Module``) is trained in place; otherwise ``build(nc)`` (default: a
    workbench model like the source, ``nc`` from the data) makes it under ``seed``. A source's
    entries whose names and shapes match are copied (:func:`~workbench.transfer`), class rows by
    name when both sides name their classes. With ``source=None`` nothing is copied and the
    report is ``None``; so too with a foreign module as source and no ``model``: it is trained as it is.
    """
    if source is None or (isinstance(source, nn.Module) and model is None and build is None
                          and not hasattr(source, "scale")):
        target = model if model is not None else source if source is not None else None
        if target is None:
            torch.manual_seed(seed)
            target = (build or _build_like(None, train))(getattr(train, "nc", 10))
        what = _("scratch (random initialisation, seed {seed})").format(seed=seed) if source is None and model is None \
            else _("your {cls} as it is").format(cls=type(target).__name__)
        return Start(target, None, what)
    weights, what = _resolve_source(source)
    if model is None:
        torch.manual_seed(seed)
        model = (build or _build_like(weights, train))(getattr(train, "nc", 10))
    names = getattr(weights, "pretrained_info", {}).get("classes")
    options = {"class_names": (names, list(_classes(train)))} if names and _classes(train) else {}
    report = transfer(weights, model, **options)
    return Start(model, report, _("{source}: {headline}").format(source=what, headline=report.headline))
