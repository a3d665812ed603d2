"""Helpers for the bad-input catalogue: one case per bad input, and proof that nothing the user owns changed.

A case is a ``pytest.param`` whose id starts with its kind: ``error`` (a clear error), ``warn``
(a warning, the call still returns) or ``ok`` (an input refused before that must now be
accepted, and gives the right result). ``check_case`` runs one against an environment (a dict
of the user's models, data, optimizers, tensors and folders), asserts the error or warning type
and that its message names the argument, then that every object in the environment is as it was.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench import data

KINDS = ("error", "warn", "ok")


def case(kind: str, area: str, name: str, call, expected=None, names=()):
    """One catalogue entry; ``call(env)`` makes the bad call, ``names`` must all appear in the message."""
    assert kind in KINDS and (expected is not None) == (kind != "ok")
    names = (names,) if isinstance(names, str) else tuple(names)
    return pytest.param(call, kind, expected, names, id=f"{kind}-{area}-{name}")


def run_case(env: dict, call, kind: str, expected, names: tuple[str, ...]):
    before = snapshot(env)
    if kind == "error":
        with pytest.raises(expected) as info:
            call(env)
        message = str(info.value)
    elif kind == "warn":
        with pytest.warns(expected) as record:
            call(env)
        message = " ".join(str(w.message) for w in record if issubclass(w.category, expected))
    else:
        call(env)
        return
    for name in names:
        assert name in message, f"the message does not name {name!r}: {message}"
    assert_unchanged(env, before)


# ----------------------------------------------------------------------------------------- snapshots
def model_state(model: nn.Module) -> dict:
    """What a call could change in a model: tensors, requires_grad, grads, modes, freeze marks, patched methods."""
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grad": {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "marks": {k: {a: copy.copy(v) for a, v in vars(m).items() if a.startswith("_workbench") or a in
                      ("train", "forward")} for k, m in model.named_modules()},
    }


def files_state(folder: Path) -> dict:
    """Bytes and modification time of every file under ``folder`` (and so which files exist)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def optimizer_state(optimizer: torch.optim.Optimizer) -> list[dict]:
    return [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


def snapshot(env: dict) -> dict:
    out = {}
    for key, value in env.items():
        if isinstance(value, nn.Module):
            out[key] = model_state(value)
        elif isinstance(value, data.ImageSet):
            out[key] = (value.x.clone(), value.y.clone(), value.classes)
        elif isinstance(value, torch.Tensor):
            out[key] = value.clone()
        elif isinstance(value, Path) and value.is_dir():
            out[key] = files_state(value)
        elif isinstance(value, torch.optim.Optimizer):
            out[key] = optimizer_state(value)
        elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            out[key] = {k: v.clone() for k, v in value.items()}
        elif isinstance(value, list) and all(isinstance(g, dict) for g in value):  # parameter groups
            out[key] = [{k: v for k, v in g.items() if k != "params"} for g in value]
    return out


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if callable(a) and hasattr(a, "func"):  # functools.partial: compare what it calls
        return a.func is b.func and [type(x) for x in a.args] == [type(x) for x in b.args]
    return a == b


def assert_unchanged(env: dict, before: dict) -> None:
    after = snapshot(env)
    for key in before:
        assert same(before[key], after[key]), f"{key} changed"
