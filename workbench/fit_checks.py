"""Everything ``fit`` checks before the first forward pass, each failure a ``ValueError`` naming the fix.

Nothing here changes the model or the data: labels, channels and the task are read from the
first batch (a DataLoader's generator is put back as it was), and the model's output width is
read from a no-gradient, eval-mode forward pass on one image whose train/eval flags are then
restored.

Example:
    >>> check_count(3, "epochs")
    3
    >>> check_count(0, "epochs")
    Traceback (most recent call last):
    ...
    ValueError: epochs must be an integer >= 1 (got 0)
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .batches import as_batches, first_batch
from .detection import detect_head, is_detector
from .freezing import frozen_by_workbench
from .numbers import whole_number


def check_count(value, name: str) -> int:
    """An integer >= 1 (a NumPy integer is accepted, a bool or a float is not)."""
    return whole_number(value, name)


def _check_number(value, name: str, *, positive: bool, fix: str, upper: float = math.inf) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0) or value >= upper:
        bound = "> 0" if positive else ">= 0"
        bound += f" and < {upper:g}" if upper != math.inf else ""
        raise ValueError(f"{name} must be a finite number {bound} (got {value!r}): {fix}")


def check_options(*, lr=None, momentum=0.937, weight_decay=5e-4, clip=None) -> None:
    """Refuse settings that would train silently wrong (a negative clip is gradient ascent)."""
    if lr is not None and not isinstance(lr, slice):
        _check_number(lr, "lr", positive=True, fix="e.g. lr=0.01, or lr=None for the optimizer's default")
    _check_number(momentum, "momentum", positive=False, upper=1.0, fix="e.g. momentum=0.937 (YOLO's default)")
    _check_number(weight_decay, "weight_decay", positive=False, fix="e.g. weight_decay=5e-4, or 0 for none")
    if clip is not None:
        _check_number(clip, "clip", positive=False, fix="the max gradient norm, e.g. clip=10.0; None or 0: no clipping")


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``: CUDA if available, then Apple MPS, then the CPU; a named device must be usable here."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device torch knows ({error}): use 'auto', 'cpu', "
                         f"'cuda' or 'mps'") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": mps}
    if not available.get(chosen.type, True):
        raise ValueError(f"device={device!r}, but torch on this machine cannot use {chosen.type.upper()}: "
                         f"pass device='auto' (CUDA, then MPS, then CPU) or device='cpu'")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA device(s): "
                         f"use device='cuda' or device='auto'")
    return chosen


def check_trainable(model: nn.Module, scheduled: bool) -> None:
    """Refuse a model with nothing to train (a freeze schedule may still unfreeze what the workbench froze)."""
    usable = [n for n, p in model.named_parameters()
              if p.requires_grad or (scheduled and frozen_by_workbench(model, n))]
    if not usable:
        raise ValueError("every parameter of the model is frozen (requires_grad=False), so there is nothing to "
                         "train: unfreeze some layers first, e.g. workbench.unfreeze(model) or freeze(model, depth=N) "
                         "with a smaller N")


def _output_width(model: nn.Module, x: torch.Tensor) -> int | None:
    """The width of the model's output on one image, read without changing the model (``None`` if not 2-D)."""
    modes = [(m, m.training) for m in model.modules()]
    device = next((p.device for p in model.parameters()), x.device)
    try:
        model.eval()
        with torch.no_grad():
            out = model(x[:1].to(device))
    finally:
        for m, mode in modes:
            m.training = mode
    return out.shape[1] if torch.is_tensor(out) and out.ndim == 2 else None


def _check_channels(model: nn.Module, x: torch.Tensor, name: str) -> None:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        return
    if x.ndim != 4:
        raise ValueError(f"{name}: images must be (batch, channels, height, width); got shape {tuple(x.shape)}")
    if x.shape[1] != first_conv.in_channels:
        raise ValueError(f"{name}: images have {x.shape[1]} channels but the model's first conv expects "
                         f"{first_conv.in_channels}: build the model with ch={x.shape[1]}, or make the data with "
                         f"{first_conv.in_channels} channels (e.g. data.digits(channels={first_conv.in_channels}))")


def _check_task(model: nn.Module, y: torch.Tensor, name: str) -> bool:
    """Whether ``y`` holds detection targets; raises when the targets do not suit the model's task.

    A detector's head must be one the detection loss trains (:func:`~workbench.detection.detect_head`
    names what is supported when it is not, e.g. an Ultralytics segmentation or end-to-end head).
    """
    detection = y.ndim == 3
    if is_detector(model):
        detect_head(model)
    if is_detector(model) and not detection:
        raise ValueError(f"{name} holds class labels (shape {tuple(y.shape)}) but the model is a detector: "
                         f"train it on detection data (e.g. scenes.shape_scenes), or build a classifier with "
                         f"build_model(task='classify')")
    if detection and not is_detector(model):
        raise ValueError(f"{name} holds detection targets (shape {tuple(y.shape)}) but the model is a classifier: "
                         f"build a detector with build_model(task='detect'), or use class labels")
    return detection


def _check_labels(y: torch.Tensor, nc: int | None, name: str, negative_ok: bool) -> None:
    if y.numel() == 0 or y.is_floating_point() or y.ndim != 1:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 and not negative_ok:
        raise ValueError(f"{name} has label {low}: labels are class indices 0..nc-1 (fit's cross-entropy has no "
                         f"'ignore' label); drop those samples, or pass your own loss_fn that handles them")
    if nc is not None and high >= nc:
        raise ValueError(f"{name} has labels up to {high} but the model has nc={nc} classes: build the model with "
                         f"nc={high + 1} (or more), or relabel the data to 0..{nc - 1}")


def check_data(model: nn.Module, batches, name: str, own_loss: bool = False) -> None:
    """Check one data set's first batch against the model: channels, task, labels in ``0..nc-1``.

    An in-memory data set's labels are checked in full; a DataLoader's in its first batch (a later
    batch with a bad label fails its step, which then rolls back).
    """
    batch = first_batch(batches)
    if batch is None:
        return
    x, y = batch[0], batch[1]
    full_y = getattr(getattr(batches, "data", None), "y", y)
    _check_channels(model, x, name)
    if not torch.is_tensor(y):
        return
    if _check_task(model, y, name):
        classes = full_y[..., 0][full_y[..., 0] >= 0]
        return _check_labels(classes.long(), detect_head(model).nc, name, negative_ok=False)
    nc = getattr(model, "nc", None)
    nc = nc if isinstance(nc, int) else _output_width(model, x)
    _check_labels(full_y, nc, name, negative_ok=own_loss)


def check_inputs(model: nn.Module, data, name: str = "train") -> None:
    """Raise a ``ValueError`` naming the fix when ``data`` (an ImageSet or DataLoader) cannot fit the model."""
    check_data(model, as_batches(data, 64, shuffle=False, seed=0), name)
