"""One readable training loop: ``fit(model, train, val, epochs=...) -> History``.

Per batch: forward, loss, backward, clip, optimiser step, record. Same seed, same curve on a
CPU. A non-finite loss stops the run and restores the last finite weights; an interrupt
(``KeyboardInterrupt``, the notebook's stop button) or a set ``stop`` event returns the
History so far with the model as it was after the last completed step, and passing that
History back to ``fit`` continues the run exactly where it stopped.

Example:
    >>> from workbench import build_model, data
    >>> train, val = data.split(data.shapes(8, classes=3), 0.25)
    >>> history = fit(build_model(nc=3), train, val, epochs=1, batch_size=8, progress=False)
    >>> history.status, len(history.loss)
    ('completed', 3)
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .detection import DetectionLoss, is_detector
from .freezing import check_schedule, depth_at, set_freeze_depth
from .metrics import evaluate
from .monitor import GradientMonitor, NonFinite, clip_coefficient, locate_non_finite
from .optim import make_optimizer
from .schedules import Schedule

DEFAULT_CLIP = 10.0  # max gradient L2 norm, as YOLO's trainers


@dataclass
class History:
    """What a run did: per-step loss, learning rate and momentum per group, gradient norm; per-epoch validation.

    ``status`` is ``"completed"``, ``"interrupted"`` (stopped by the user) or ``"non_finite"``
    (the loss or a gradient blew up; ``events`` says at which step, ``non_finite`` where).
    Per step also: ``layer_grad_norms`` (one gradient L2 norm per entry of ``layer_names``) and
    ``clip_coef`` (what clipping scaled the gradients by, 1.0 when it did not). On an accelerator
    the layer norms reach the CPU in batches, so during a run they may trail ``loss`` by up to
    31 steps; when ``fit`` returns they are complete.
    """

    loss: list[float] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    lr: dict[str, list[float]] = field(default_factory=dict)
    momentum: dict[str, list[float]] = field(default_factory=dict)
    grad_norm: list[float] = field(default_factory=list)
    val: dict[str, list[float]] = field(default_factory=dict)
    events: list[tuple[int, str]] = field(default_factory=list)
    freeze_depth: dict[int, int] = field(default_factory=dict)  # epoch -> depth, with fit(freeze=...)
    depth: list[int] = field(default_factory=list)  # the freeze depth in effect at each step, with fit(freeze=...)
    layer_names: list[str] = field(default_factory=list)
    layer_grad_norms: list[list[float]] = field(default_factory=list)
    clip_coef: list[float] = field(default_factory=list)
    clip: float | None = None  # the max gradient norm fit clipped at (None: no clipping)
    non_finite: NonFinite | None = None
    status: str = "new"
    seconds: float = 0.0
    device: str = ""
    epochs_done: int = 0
    steps_in_epoch: int = 0
    _resume: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def step(self) -> int:
        """Number of optimiser steps taken so far."""
        return len(self.loss)

    def record_step(self, loss: float, epoch: int, grad_norm: float, optimizer: torch.optim.Optimizer) -> None:
        self.loss.append(loss)
        self.epoch.append(epoch)
        self.grad_norm.append(grad_norm)
        for k, group in enumerate(optimizer.param_groups):
            name = group.get("name", str(k))
            self.lr.setdefault(name, []).append(group["lr"])
            self.momentum.setdefault(name, []).append(group.get("momentum", group.get("betas", (0.0,))[0]))

    def record_epoch(self, metrics: dict) -> None:
        for key, value in metrics.items():
            self.val.setdefault(key, []).append(value)

    def record_freeze(self, epoch: int, depth: int) -> None:
        """The freeze depth of ``epoch``; per step it is ``[freeze_depth[e] for e in history.epoch]``."""
        previous = self.freeze_depth.get(epoch - 1)
        if self.freeze_depth.get(epoch) != depth and previous != depth:
            was = "" if previous is None else f" (was {previous})"
            self.events.append((self.step, f"epoch {epoch}: freeze depth {depth}{was}"))
        self.freeze_depth[epoch] = depth

    def __repr__(self) -> str:
        last = f", last loss {self.loss[-1]:.4f}" if self.loss else ""
        val = ", ".join(f"val {k} {v[-1]:.4f}" for k, v in self.val.items() if v)
        return f"History({self.status}: {self.step} steps, {self.epochs_done} epochs{last}{', ' + val if val else ''})"


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``: CUDA if available, then Apple MPS, then the CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Batches:
    """Mini-batches of an in-memory data set; the order is a pure function of ``(seed, epoch)``."""

    def __init__(self, data, batch_size: int, shuffle: bool = True, seed: int = 0):
        if not hasattr(data, "x") or not hasattr(data, "y"):
            raise TypeError("Batches needs a data set with x and y tensors (an ImageSet)")
        if len(data) == 0:
            raise ValueError("the data set is empty: generate at least one image per class")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed

    def __len__(self) -> int:
        return len(self._starts())

    def _starts(self) -> list[int]:
        """Batch start offsets; a last batch of one image joins the one before (BatchNorm needs two)."""
        starts = list(range(0, len(self.data), self.batch_size))
        if len(starts) > 1 and len(self.data) - starts[-1] == 1:
            starts.pop()
        return starts

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
                 if self.shuffle else torch.arange(n))
        starts = self._starts()
        for start, end in zip(starts, starts[1:] + [n]):
            rows = order[start:end]
            yield self.data.x[rows], self.data.y[rows]

    def __iter__(self):
        return iter(self.epoch(0))


def _as_batches(data, batch_size: int, shuffle: bool, seed: int):
    """An in-memory data set becomes seeded ``Batches``; a DataLoader (or any iterable of batches) is used as is."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return Batches(data, batch_size, shuffle, seed)
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        if len(data) == 0:
            raise ValueError("the data set is empty")
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g)
    return data


def _epoch_batches(batches, epoch: int):
    return batches.epoch(epoch) if isinstance(batches, Batches) else iter(batches)


def check_inputs(model: nn.Module, data) -> None:
    """Raise a ``ValueError`` naming the fix when images or labels cannot fit the model."""
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    x = getattr(data, "x", None)
    if x is None or first_conv is None:
        return
    if x.ndim != 4:
        raise ValueError(f"images must be (batch, channels, height, width); got shape {tuple(x.shape)}")
    if x.shape[1] != first_conv.in_channels:
        raise ValueError(f"images have {x.shape[1]} channels but the model's first conv expects "
                         f"{first_conv.in_channels}: build the model with ch={x.shape[1]}, or make the "
                         f"data with {first_conv.in_channels} channels (e.g. data.digits(channels="
                         f"{first_conv.in_channels}))")
    nc, y = getattr(model, "nc", None), getattr(data, "y", None)
    if y is not None and y.ndim == 3:  # detection targets (N, max_objects, 5): class first, -1 in empty slots
        y = y[..., 0][y[..., 0] >= 0]
    if nc is not None and y is not None and len(y) and int(y.max()) >= nc:
        raise ValueError(f"labels go up to {int(y.max())} but the model has nc={nc} classes: "
                         f"build the model with nc={int(y.max()) + 1} (or more)")


class _LastGood:
    """A copy of the model's buffers (and optionally parameters) to roll back to.

    ``fit`` checks the loss and the gradients *before* the optimiser step, so a step that blows
    up never touches the parameters; only the BatchNorm statistics its forward pass changed need
    restoring, and copying those few small buffers each step is cheap.
    """

    def __init__(self, model: nn.Module, parameters: bool = False):
        state = model.state_dict(keep_vars=True)
        names = set(state) if parameters else {name for name, _ in model.named_buffers()}
        self.tensors = [t for name, t in state.items() if name in names]
        with torch.no_grad():
            self.copies = [t.detach().clone() for t in self.tensors]

    @torch.no_grad()
    def save(self) -> None:
        if self.tensors:
            torch._foreach_copy_(self.copies, [t.detach() for t in self.tensors])

    @torch.no_grad()
    def restore(self) -> None:
        if self.tensors:
            torch._foreach_copy_([t.detach() for t in self.tensors], self.copies)


@contextlib.contextmanager
def _interrupts_between_steps():
    """Ctrl-C (the notebook's stop button) sets a flag that ``fit`` reads between steps.

    So an interrupt never leaves a step half done; a second Ctrl-C interrupts at once. Only the
    main thread can take signals: elsewhere (a panel's training thread) use ``fit(stop=...)``.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def on_interrupt(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    epochs: int = 3,
    batch_size: int = 64,
    optimizer: str | torch.optim.Optimizer = "auto",
    lr: float | None = None,
    momentum: float = 0.937,
    weight_decay: float = 5e-4,
    loss_fn: Callable | None = None,
    clip: float | None = DEFAULT_CLIP,
    device: str | torch.device | None = "auto",
    amp: bool | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[History], None] | None = None,
    stop=None,
    history: History | None = None,
    schedule: Schedule | None = None,
    freeze: dict[int, int] | Callable[[int, int], int | None] | None = None,
    freeze_bn: str = "eval",
) -> History:
    """Train ``model`` on ``train`` for ``epochs`` and return its :class:`History`.

    Args:
        model: any ``nn.Module`` (ours, torchvision, timm, your own).
        train, val: an ``ImageSet`` (batched here, seeded order) or a DataLoader of ``(x, y)``.
        epochs: total epochs; with ``history`` the run continues up to this count.
        optimizer: ``"auto"`` (Ultralytics' rule: AdamW for short runs, SGD for long ones),
            ``"sgd"``, ``"adamw"`` (see :func:`make_optimizer`), or your own torch optimiser.
        lr, momentum, weight_decay: for a named optimiser (``lr=None``: its default).
        loss_fn: ``loss_fn(outputs, targets)``; default cross-entropy, or :class:`~workbench.detection.DetectionLoss`
            for a detector (validation then reports ``mAP50``).
        clip: max gradient L2 norm (``None`` or 0: no clipping; the norm is still recorded).
        device: ``"auto"`` picks CUDA, then MPS, then CPU. ``amp`` defaults to on for CUDA.
        seed: the same seed gives the same data order and the same loss curve on a CPU.
        progress: a tqdm progress bar per epoch.
        callback: ``callback(history)`` after every step and every epoch (live views throttle themselves).
        stop: anything with ``is_set()`` (a ``threading.Event``): checked between steps.
        history: a History returned by an interrupted ``fit``: continue from its last step.
        schedule: a :class:`~workbench.schedules.Schedule` (e.g. ``YoloSchedule()``) that sets every group's
            LR and momentum before each step from the global iteration ``epoch * nb + i``.
        freeze: staged unfreezing, ``{epoch: depth}`` (``{0: 9, 2: 0}``: layers 0..8 frozen for two
            epochs, then all trainable), applied at epoch starts by :func:`~workbench.freezing.set_freeze_depth`
            with BatchNorm policy ``freeze_bn``; recorded in ``History.freeze_depth``. Or a callable
            ``freeze(epoch, step) -> depth or None`` asked before every step (a live slider): a depth
            other than the current one is applied at that step boundary. ``History.depth`` holds the
            depth of every step.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1 (got {epochs!r})")
    check_inputs(model, train)
    if val is not None:
        check_inputs(model, val)
    train_batches = _as_batches(train, batch_size, shuffle=True, seed=seed)
    if schedule is not None:
        schedule.check(len(train_batches), epochs)
    val_batches = _as_batches(val, batch_size, shuffle=False, seed=seed) if val is not None else None
    dev = pick_device(device)
    amp = (dev.type == "cuda") if amp is None else amp
    history = history if history is not None else History()
    resume = history._resume
    torch.manual_seed(seed + history.step)
    model.to(dev)
    if "optimizer" in resume:
        optimizer = resume["optimizer"]
    elif isinstance(optimizer, str):
        optimizer = make_optimizer(model, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                   iterations=epochs * len(train_batches), nc=getattr(model, "nc", 10))
    live_depth = freeze if callable(freeze) else None
    if live_depth is not None:
        check_schedule(model, {0: 0}, freeze_bn, optimizer)  # the optimiser must hold what a depth may unfreeze
        freeze = None
    elif freeze is not None:
        freeze = check_schedule(model, freeze, freeze_bn, optimizer)
    current_depth = history.depth[-1] if history.depth else None
    scaler = resume.get("scaler") or torch.amp.GradScaler(dev.type, enabled=amp)
    loss_fn = loss_fn or (DetectionLoss(model) if is_detector(model) else F.cross_entropy)
    monitor = GradientMonitor(model, log=history.layer_grad_norms)  # frozen parameters (no gradient) are skipped
    last_good = _LastGood(model)
    history.device, history.status, history.layer_names = str(dev), "running", monitor.layer_names
    history.clip = clip or None
    history._resume = {"optimizer": optimizer, "scaler": scaler}
    started = time.perf_counter()
    try:
        with _interrupts_between_steps() as interrupted:
            for epoch in range(history.epochs_done, epochs):
                depth = depth_at(freeze, epoch) if freeze is not None else None
                if depth is not None:  # staged unfreezing, at epoch boundaries
                    set_freeze_depth(model, depth, bn=freeze_bn)
                    history.record_freeze(epoch, depth)
                    current_depth = depth
                model.train()
                bar = tqdm(total=len(train_batches), disable=not progress, desc=f"epoch {epoch + 1}/{epochs}",
                           initial=history.steps_in_epoch, leave=False)
                for i, (x, y) in enumerate(_epoch_batches(train_batches, epoch)):
                    if i < history.steps_in_epoch:
                        continue  # resuming: these batches were done before the interruption
                    if interrupted.is_set() or (stop is not None and stop.is_set()):
                        raise KeyboardInterrupt
                    if live_depth is not None:
                        current_depth = _steer_depth(model, history, live_depth, epoch, current_depth, freeze_bn)
                    if schedule is not None:
                        schedule.apply(optimizer, epoch * len(train_batches) + i, len(train_batches), epochs)
                    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                    with torch.autocast(dev.type, enabled=amp):
                        loss = loss_fn(model(x), y)
                    if not torch.isfinite(loss):
                        bar.close()
                        last_good.restore()  # the bad forward pass changed BatchNorm statistics: look again from here
                        with torch.autocast(dev.type, enabled=amp):
                            layer, parameter = locate_non_finite(model, x)
                        return _stop_non_finite(history, last_good, NonFinite(history.step, "loss", loss.item(),
                                                                              layer, parameter))
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    total = monitor.measure()  # per-layer gradient norms and their total, from one _foreach_norm
                    grad_norm = total.item()
                    if not math.isfinite(grad_norm) and not scaler.is_enabled():  # with AMP the scaler skips the step
                        bar.close()
                        layer, parameter = monitor.first_non_finite() or (None, None)
                        monitor.drop_last()  # this step is not taken; history.non_finite says where it blew up
                        return _stop_non_finite(history, last_good, NonFinite(history.step, "gradient", grad_norm,
                                                                              layer, parameter))
                    clip_coef = clip_coefficient(grad_norm, clip)
                    if clip_coef < 1:  # as clip_grad_norm_, reusing the total (scaling by 1 would change nothing)
                        monitor.clip(clip, total)
                    scaler.step(optimizer)
                    scaler.update()
                    last_good.save()
                    history.steps_in_epoch = i + 1
                    history.record_step(loss.item(), epoch, grad_norm, optimizer)
                    history.clip_coef.append(clip_coef)
                    if current_depth is not None:
                        history.depth.append(current_depth)
                    bar.set_postfix_str(f"loss {history.loss[-1]:.3f}", refresh=False)
                    bar.update()
                    if callback is not None:
                        callback(history)
                bar.close()
                if val_batches is not None:
                    history.record_epoch(evaluate(model, _epoch_batches(val_batches, 0), dev))
                history.epochs_done, history.steps_in_epoch = epoch + 1, 0
                if callback is not None:
                    callback(history)
            history.status = "completed"
    except KeyboardInterrupt:
        bar.close()
        last_good.restore()
        history.status = "interrupted"
        history.events.append((history.step, f"interrupted after step {history.step}"))
    finally:
        monitor.flush()
        history.seconds += time.perf_counter() - started
    return history


def _steer_depth(model: nn.Module, history: History, wanted: Callable, epoch: int, current: int | None,
                 bn: str) -> int | None:
    """Ask ``wanted(epoch, step)`` for the depth of the next step; apply it at this step boundary if it changed."""
    depth = wanted(epoch, history.step)
    if depth is None or depth == current:
        return current
    set_freeze_depth(model, depth, bn=bn)
    was = "" if current is None else f" (was {current})"
    history.events.append((history.step, f"step {history.step}: freeze depth {depth}{was}"))
    history.freeze_depth[epoch] = depth
    return depth


def _stop_non_finite(history: History, last_good: _LastGood, found: NonFinite) -> History:
    """Restore the weights of the last completed step and record where the run blew up."""
    last_good.restore()
    history.non_finite = found
    history.events.append((found.step, found.message))
    history.status = "non_finite"
    return history


def step_time(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 2, warmup: int = 0,
              loss_fn: Callable | None = None) -> float:
    """Seconds one training step (forward, loss, backward, SGD step) takes on ``(x, y)``: the fastest of ``steps``.

    Frozen parameters get no gradient and the frozen layers at the start need no backward pass,
    so the time falls with the freeze depth. ``warmup`` untimed steps run first. The model is
    left exactly as it was: parameters, buffers (BatchNorm statistics), gradients and mode.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> before = model[0].weight.clone()
        >>> step_time(model, torch.randn(8, 4), torch.zeros(8, dtype=torch.long)) > 0
        True
        >>> torch.equal(model[0].weight, before)
        True
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (got {steps!r})")
    loss_fn = loss_fn or F.cross_entropy
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("every parameter is frozen: there is no training step to time")
    saved, grads, mode = _LastGood(model, parameters=True), [p.grad for p in model.parameters()], model.training
    optimizer = torch.optim.SGD(params, lr=0.0)
    model.train()
    times = []
    try:
        for k in range(warmup + steps):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            if k >= warmup:
                times.append(time.perf_counter() - started)
    finally:
        saved.restore()
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        model.train(mode)
    return min(times)
