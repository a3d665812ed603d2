"""Tagged parameter groups for the optimiser.

Every trainable parameter lands in exactly one group, found by its tag, never by position:
``"weight"`` (decayed), ``"norm"`` (weights of any ``*Norm*`` module, no decay) and ``"bias"``
(parameters named exactly ``bias``, no decay), as YOLOv5 and Ultralytics split them.

Example:
    >>> from workbench import build_model
    >>> [g["tag"] for g in param_groups(build_model(), lr=0.01, weight_decay=5e-4)]
    ['weight', 'norm', 'bias']
"""
from __future__ import annotations

import torch
from torch import nn

TAGS = ("weight", "norm", "bias")


def tag_of(module: nn.Module, param_name: str) -> str:
    """The group tag of one parameter, given the module that owns it and its local name."""
    if param_name == "bias":
        return "bias"
    if "Norm" in type(module).__name__:
        return "norm"
    return "weight"


def param_groups(model: nn.Module, lr: float, weight_decay: float = 5e-4) -> list[dict]:
    """Optimiser groups tagged ``weight``, ``norm`` and ``bias``, with parameter names kept.

    Frozen parameters are included too (they get no gradient, so the optimiser leaves them
    alone), so that unfreezing later needs no new optimiser.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0 (got {lr})")
    groups = {tag: {"tag": tag, "name": tag, "params": [], "names": [], "lr": lr,
                    "weight_decay": weight_decay if tag == "weight" else 0.0} for tag in TAGS}
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            group = groups[tag_of(module, name)]
            group["params"].append(p)
            group["names"].append(f"{module_name}.{name}" if module_name else name)
    found = sum(len(g["params"]) for g in groups.values())
    assert found == len(list(model.parameters())), "every parameter must land in exactly one group"
    return [g for g in groups.values() if g["params"]]


OPTIMIZERS = ("auto", "sgd", "adamw")


def auto_lr(nc: int) -> float:
    """Ultralytics' AdamW learning rate for short runs: ``round(0.002 * 5 / (4 + nc), 6)``."""
    return round(0.002 * 5 / (4 + nc), 6)


def make_optimizer(model: nn.Module, name: str = "auto", *, lr: float | None = None, momentum: float = 0.937,
                   weight_decay: float = 5e-4, iterations: int = 0, nc: int = 10) -> torch.optim.Optimizer:
    """An optimiser over :func:`param_groups`, chosen as Ultralytics' ``optimizer="auto"`` does.

    ``"auto"``: SGD (lr 0.01, momentum 0.9) for runs longer than 10,000 iterations, otherwise
    AdamW with lr :func:`auto_lr` and beta1 0.9. ``"sgd"``: Nesterov SGD (lr 0.01 by default).
    ``"adamw"``: AdamW (lr 0.001 by default), beta1 = ``momentum``.

    Example:
        >>> from workbench import build_model
        >>> type(make_optimizer(build_model(), "auto", iterations=100)).__name__
        'AdamW'
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)} or pass a torch optimizer")
    if name == "auto":
        name, auto, momentum = ("sgd", 0.01, 0.9) if iterations > 10_000 else ("adamw", auto_lr(nc), 0.9)
        lr = lr if lr is not None else auto
    if name == "sgd":
        lr = 0.01 if lr is None else lr
        return torch.optim.SGD(param_groups(model, lr, weight_decay), lr=lr, momentum=momentum, nesterov=True)
    lr = 0.001 if lr is None else lr
    return torch.optim.AdamW(param_groups(model, lr, weight_decay), lr=lr, betas=(momentum, 0.999))
