"""Tagged parameter groups for the optimiser, with learning-rate multipliers by stage or layer.

Every parameter lands in exactly one group, found by its tag, never by position:
``"weight"`` (decayed), ``"norm"`` (weights of any ``*Norm*`` module, no decay) and ``"bias"``
(parameters named exactly ``bias``, no decay), as YOLOv5 and Ultralytics split them. With
multipliers several groups share a tag; each group has a unique ``name`` (``"weight"``,
``"weight/head"``, ``"bias/layer9"``) and its ``lr`` already multiplied.

Example:
    >>> from workbench import build_model
    >>> [g["tag"] for g in param_groups(build_model(), lr=0.01, weight_decay=5e-4)]
    ['weight', 'norm', 'bias']
    >>> [g["name"] for g in param_groups(build_model(), 0.01, lr_mult={"head": 10})][3:]
    ['weight/head', 'norm/head', 'bias/head']
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
from torch import nn

from .layers import numbered_layers

TAGS = ("weight", "norm", "bias")


def tag_of(module: nn.Module, param_name: str) -> str:
    """The group tag of one parameter, given the module that owns it and its local name."""
    if param_name == "bias":
        return "bias"
    if "Norm" in type(module).__name__:
        return "norm"
    return "weight"


def _real(value) -> bool:
    """A finite real number (numpy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value, what: str) -> float:
    if not _real(value) or value <= 0:
        raise ValueError(f"{what} must be a number > 0 (got {value!r})")
    return float(value)


def _check_group_args(model, weight_decay, lr_mult) -> float:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    if not _real(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, e.g. 5e-4 (got {weight_decay!r}); "
                         "0 turns decay off")
    if lr_mult is not None and not isinstance(lr_mult, Mapping):
        raise ValueError(f"lr_mult must be a dict of multipliers by stage or layer, e.g. {{'head': 10}} "
                         f"(got {lr_mult!r})")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"model ({type(model).__name__}) has no parameters to optimise")
    return float(weight_decay)


def _slice_lrs(lr: slice, stages: list[str]) -> dict[str, float]:
    """fastai's ``slice`` semantics across the stages in order: ``slice(lo, hi)`` is geometric from
    ``lo`` to ``hi``; ``slice(hi)`` gives ``hi / 10`` to every stage but the last, which gets ``hi``."""
    if lr.step is not None:
        raise ValueError("an lr slice takes no step: use slice(lo, hi) or slice(hi)")
    hi = _positive(lr.stop, "the slice's upper lr")
    n = len(stages)
    if lr.start is None:
        return {s: (hi if k == n - 1 else hi / 10) for k, s in enumerate(stages)}
    lo = _positive(lr.start, "the slice's lower lr")
    if n == 1:
        return {stages[0]: hi}
    step = (hi / lo) ** (1 / (n - 1))
    return {s: lo * step**k for k, s in enumerate(stages)}


def _layer_scales(layers, lr, lr_mult, layer_decay) -> tuple[list[float], list[str]]:
    """Each numbered layer's learning rate and the label that names its groups ("" for the base groups)."""
    stages = list(dict.fromkeys(layer.stage for layer in layers))
    base = _slice_lrs(lr, stages) if isinstance(lr, slice) else dict.fromkeys(stages, _positive(lr, "lr"))
    by_stage, by_layer = {}, {}
    for key, mult in (lr_mult or {}).items():
        _positive(mult, f"the lr multiplier for {key!r}")
        if isinstance(key, str):
            if key not in stages:
                raise ValueError(f"lr_mult names stage {key!r}, but this model's stages are {stages}; "
                                 f"use one of them, or a layer index 0..{len(layers) - 1}")
            by_stage[key] = float(mult)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            if not 0 <= key < len(layers):
                raise ValueError(f"lr_mult names layer {key}, but this model has layers 0..{len(layers) - 1}")
            by_layer[int(key)] = float(mult)
        else:
            raise ValueError(f"lr_mult keys are stage names {stages} or layer indices (got {key!r})")
    if by_stage and by_layer:
        raise ValueError("lr_mult takes stage names or layer indices, not both")
    if layer_decay is not None and not (_real(layer_decay) and 0 < layer_decay <= 1):
        raise ValueError(f"layer_decay must be in (0, 1] (got {layer_decay!r})")
    n = len(layers)
    lrs, labels = [], []
    for layer in layers:
        scale = by_stage.get(layer.stage, 1.0) * by_layer.get(layer.index, 1.0)
        if layer_decay is not None:
            scale *= layer_decay ** (n - 1 - layer.index)  # timm: the last layer keeps the full lr
        lrs.append(base[layer.stage] * scale)
        if layer_decay is not None or layer.index in by_layer:
            labels.append(f"layer{layer.index}")
        elif isinstance(lr, slice) or layer.stage in by_stage:
            labels.append(layer.stage)
        else:
            labels.append("")
    return lrs, labels


def param_groups(model: nn.Module, lr: float | slice, weight_decay: float = 5e-4, *,
                 lr_mult: Mapping[str | int, float] | None = None,
                 layer_decay: float | None = None) -> list[dict]:
    """Optimiser groups tagged ``weight``, ``norm`` and ``bias``, with parameter names kept.

    Frozen parameters are included too (they get no gradient, so the optimiser leaves them
    alone), so that unfreezing later needs no new optimiser.

    Args:
        model: any ``nn.Module``; its layers and stages are read by :func:`numbered_layers`.
        lr: the base learning rate, or fastai's ``slice(lo, hi)``: geometric from ``lo`` (first
            stage) to ``hi`` (last stage); ``slice(hi)``: ``hi / 10`` for all stages but the head.
        weight_decay: for the ``weight`` groups (``norm`` and ``bias`` get none).
        lr_mult: multipliers by stage (``{"head": 10}``) or by layer index (``{9: 10}``).
        layer_decay: timm's layer-wise decay, layer ``i`` of ``L`` gets ``layer_decay ** (L - 1 - i)``.

    Each group holds ``params``, ``names``, ``tag``, a unique ``name``, ``lr``, ``lr_mult``
    (its lr over the base lr) and ``weight_decay``.

    Example:
        >>> from workbench import build_model
        >>> groups = param_groups(build_model(), 0.01, lr_mult={"head": 10})
        >>> {g["name"]: g["lr"] for g in groups if g["tag"] == "weight"}
        {'weight': 0.01, 'weight/head': 0.1}
    """
    weight_decay = _check_group_args(model, weight_decay, lr_mult)
    layers = numbered_layers(model)
    lrs, labels = _layer_scales(layers, lr, lr_mult, layer_decay)
    base_lr = float(lr.stop if isinstance(lr, slice) else lr)
    prefixes = [(layer.name + ".", k) for k, layer in enumerate(layers) if layer.name]
    groups: dict[tuple[str, str], dict] = {}
    for module, name, full, p in _unique_parameters(model):
        k = next((k for prefix, k in prefixes if full.startswith(prefix)), None if prefixes else 0)
        label, group_lr = (labels[k], lrs[k]) if k is not None else ("", base_lr)
        tag = tag_of(module, name)
        if (label, tag) not in groups:
            groups[(label, tag)] = _new_group(tag, label, group_lr, base_lr, weight_decay)
        groups[(label, tag)]["params"].append(p)
        groups[(label, tag)]["names"].append(full)
    ordered = sorted(groups.values(), key=lambda g: (_label_order(g, labels), TAGS.index(g["tag"])))
    placed = [id(p) for g in ordered for p in g["params"]]
    assert len(placed) == len(set(placed)) and set(placed) == {id(p) for p in model.parameters()}, \
        "every parameter must land in exactly one group"
    return ordered


def _unique_parameters(model: nn.Module):
    """``(owning module, local name, full name, parameter)`` once per parameter, in ``named_modules`` order.

    A shared (tied) parameter is given once, with its first owner, so it lands in that owner's group.
    """
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield module, name, (f"{module_name}.{name}" if module_name else name), p


def _new_group(tag: str, label: str, lr: float, base_lr: float, weight_decay: float) -> dict:
    """An empty group of one tag for the layers named by ``label`` ("" for the base groups)."""
    return {"params": [], "names": [], "tag": tag, "name": f"{tag}/{label}" if label else tag,
            "lr": lr, "lr_mult": lr / base_lr, "weight_decay": weight_decay if tag == "weight" else 0.0}


def _label_order(group: dict, labels: list[str]) -> int:
    label = group["name"].partition("/")[2]
    return -1 if not label else labels.index(label)


OPTIMIZERS = ("auto", "sgd", "adamw")


def auto_lr(nc: int) -> float:
    """Ultralytics' AdamW learning rate for short runs: ``round(0.002 * 5 / (4 + nc), 6)``."""
    return round(0.002 * 5 / (4 + nc), 6)


def _check_settings(momentum, weight_decay, iterations) -> None:
    """Refuse settings torch would accept and then train silently wrong with (NaN, negative decay)."""
    def finite(value):
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not finite(momentum) or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a number in [0, 1) (got {momentum!r}), e.g. 0.937")
    if not finite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0 (got {weight_decay!r}), e.g. 5e-4, or 0 for none")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0 (got {iterations!r})")


def make_optimizer(model: nn.Module, name: str = "auto", *, lr: float | slice | None = None, momentum: float = 0.937,
                   weight_decay: float = 5e-4, iterations: int = 0, nc: int = 10,
                   lr_mult: Mapping[str | int, float] | None = None,
                   layer_decay: float | None = None) -> torch.optim.Optimizer:
    """An optimiser over :func:`param_groups`, chosen as Ultralytics' ``optimizer="auto"`` does.

    ``"auto"``: SGD (lr 0.01, momentum 0.9) for runs longer than 10,000 iterations, otherwise
    AdamW with lr :func:`auto_lr` and beta1 0.9. ``"sgd"``: Nesterov SGD (lr 0.01 by default).
    ``"adamw"``: AdamW (lr 0.001 by default), beta1 = ``momentum``. ``lr_mult`` and
    ``layer_decay`` go to :func:`param_groups`.

    Example:
        >>> from workbench import build_model
        >>> type(make_optimizer(build_model(), "auto", iterations=100)).__name__
        'AdamW'
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)} or pass a torch optimizer")
    _check_settings(momentum, weight_decay, iterations)
    if name == "auto":
        name, auto, momentum = ("sgd", 0.01, 0.9) if iterations > 10_000 else ("adamw", auto_lr(nc), 0.9)
        lr = lr if lr is not None else auto
    lr = (0.01 if name == "sgd" else 0.001) if lr is None else lr
    groups = param_groups(model, lr, weight_decay, lr_mult=lr_mult, layer_decay=layer_decay)
    default_lr = groups[0]["lr"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=default_lr, momentum=momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=default_lr, betas=(momentum, 0.999))
