"""One readable training loop: ``fit(model, train, val, epochs=...) -> History``.

``fit`` first checks everything it can (its arguments, the device, the data's labels, channels
and task against the model, a resumed run's settings) and changes nothing if a check fails. Then
per batch it calls :func:`~workbench.step.train_step`: forward, loss, backward, monitor, clip,
optimiser step. Same seed, same curve on a CPU; the caller's random state is left as it was.

What a step guarantees: it completes and is recorded, or the model is exactly as before it.
A :class:`~workbench.step.Snapshot` taken before each step holds parameters, buffers,
``requires_grad`` flags, BatchNorm policies and the optimiser's state. A non-finite loss,
gradient or written weight (``status == "non_finite"``), an error raised inside the step
(``status == "failed"``, the error re-raised with a note) or an interrupt
(``status == "interrupted"``) restores it, so the model holds the weights of the last recorded
step, ``history.step``. Weights whose squared norm overflows (entries above about 1e19, as
``lr=1e30`` writes) count as non-finite, so the step that wrote them is the one undone. An
interrupt (Ctrl-C, the notebook's stop button) or a set ``stop`` event is taken between steps;
passing the History back to ``fit`` continues the run exactly where it stopped.

Example:
    >>> from workbench import build_model, data
    >>> train, val = data.split(data.shapes(8, classes=3), 0.25)
    >>> history = fit(build_model(nc=3), train, val, epochs=1, batch_size=8, progress=False)
    >>> history.status, len(history.loss)
    ('completed', 3)
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .batches import Batches, as_batches, data_length, epoch_batches
from .detection import DetectionLoss, is_detector
from .fit_checks import (
    check_count,
    check_data,
    check_inputs,
    check_options,
    check_trainable,
    pick_device,
)
from .fit_options import Freeze, Optim, as_freeze, as_optim
from .freezing import check_optimizer_holds, check_schedule, depth_at, set_freeze_depth
from .i18n import N_, _, ngettext
from .metrics import evaluate
from .monitor import GradientMonitor, NonFinite
from .optim import make_optimizer
from .run_labels import event, metrics_text, status_label
from .run_state import RunState, check_resume
from .schedules import Schedule
from .step import Snapshot, StepFailed, locate_failed_loss, record_failure, record_non_finite, step_time, train_step

__all__ = ["DEFAULT_CLIP", "Batches", "Freeze", "History", "Optim", "RunState", "check_inputs", "fit", "pick_device",
           "step_time", "train_step"]

DEFAULT_CLIP = 10.0  # max gradient L2 norm, as YOLO's trainers
FreezeRule = Callable[[int, int], "int | None"]


@dataclass
class History:
    """What a run did: per-step loss, learning rate and momentum per group, gradient norm; per-epoch validation.

    ``status`` is ``"completed"``, ``"interrupted"`` (stopped by the user), ``"non_finite"`` (the
    loss, a gradient or the written weights blew up; ``events`` says at which step, ``non_finite``
    where) or ``"failed"`` (the step raised an error, which ``fit`` re-raised). Per step also:
    ``layer_grad_norms`` (one gradient L2 norm per entry of ``layer_names``), ``clip_coef`` (what
    clipping scaled the gradients by, 1.0 when it did not) and, with a freeze schedule, ``depth``
    (the freeze depth in force). On an accelerator the layer norms reach the CPU in batches, so
    during a run they may trail ``loss`` by up to 31 steps; when ``fit`` returns they are complete.
    ``run`` holds what resuming needs (a :class:`RunState`); it is not part of the record.
    Epochs are indexed from 0 in the record (``epoch``, ``freeze_depth``'s keys, ``val`` lists), as
    in Python and YOLO's loops; text meant to be read (``events``, the progress bar) counts from 1.
    """

    loss: list[float] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)
    lr: dict[str, list[float]] = field(default_factory=dict)
    momentum: dict[str, list[float]] = field(default_factory=dict)
    grad_norm: list[float] = field(default_factory=list)
    val: dict[str, list[float]] = field(default_factory=dict)
    events: list[tuple[int, str]] = field(default_factory=list)
    freeze_depth: dict[int, int] = field(default_factory=dict)  # epoch -> depth (the last one set in that epoch)
    depth: list[int] = field(default_factory=list)  # per step, with fit(freeze=...)
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
    run: RunState | None = field(default=None, repr=False, compare=False)

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

    def __repr__(self) -> str:
        last = _(", last loss {loss:.4f}").format(loss=self.loss[-1]) if self.loss else ""
        val = metrics_text(self.val, digits=4)
        return _("History({status}: {steps} steps, {epochs}{last}{val})").format(
            status=status_label(self.status), steps=self.step, epochs=self._epochs_text(), last=last,
            val=_(", ") + val if val else "")

    def _epochs_text(self) -> str:
        """``"6 epochs"`` for a finished run; a stopped one names the epoch it stopped in and how many it completed."""
        if self.status in ("new", "completed"):
            return ngettext("{n} epoch", "{n} epochs", self.epochs_done).format(n=self.epochs_done)
        return _("stopped in epoch {epoch} ({n} completed)").format(epoch=self.epochs_done + 1, n=self.epochs_done)


@contextlib.contextmanager
def _interrupts_between_steps():
    """Ctrl-C (the notebook's stop button) sets a flag that ``fit`` reads between steps.

    So an interrupt never leaves a step half done; a second Ctrl-C interrupts at once (inside a
    step, which the snapshot then undoes). Only the main thread can take signals: elsewhere (a
    panel's training thread) use ``fit(stop=...)``.
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


def _caller_rng_kept(device: torch.device):
    """Fork torch's random state (CPU, and the CUDA device in use) so ``fit`` leaves the caller's as it was."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device.index if device.index is not None else torch.cuda.current_device()])




@dataclass
class _Loop:
    """What the loop uses, prepared once by ``fit`` after every check passed."""

    model: nn.Module
    device: torch.device
    amp: bool
    epochs: int
    train: object
    val: object | None
    run: RunState
    loss_fn: Callable
    monitor: GradientMonitor
    snapshot: Snapshot
    clip: float | None
    schedule: Schedule | None
    freeze: FreezeRule | None
    freeze_bn: str
    depth: int | None


def _freeze_rule(model: nn.Module, freeze: Freeze | None) -> FreezeRule | None:
    """A freeze schedule as one rule ``(epoch, step) -> depth``: a callable as is, ``{epoch: depth}`` checked first."""
    if freeze is None or callable(freeze.schedule):
        return None if freeze is None else freeze.schedule
    schedule = check_schedule(model, freeze.schedule, freeze.bn)
    return lambda epoch, step: depth_at(schedule, epoch)


def _check_all(model, train, val, history, o: dict):
    """Every check ``fit`` makes before changing anything; returns the batches and the freeze rule."""
    epochs, batch_size = check_count(o["epochs"], "epochs"), check_count(o["batch_size"], "batch_size")
    check_options(clip=o["clip"])
    optimizer = o["optimizer"]
    train_batches = as_batches(train, batch_size, shuffle=True, seed=o["seed"])
    val_batches = as_batches(val, batch_size, shuffle=False, seed=o["seed"]) if val is not None else None
    check_resume(history.run, optimizer, batch_size, data_length(train), o["seed"])
    check_data(model, train_batches, "train", own_loss=o["loss_fn"] is not None)
    if val_batches is not None:
        check_data(model, val_batches, "val", own_loss=o["loss_fn"] is not None)
    rule = _freeze_rule(model, o["freeze"])
    check_trainable(model, scheduled=rule is not None)
    if rule is not None and isinstance(optimizer, torch.optim.Optimizer):
        check_optimizer_holds(model, optimizer)
    if o["schedule"] is not None:
        o["schedule"].check(len(train_batches), epochs)
    return epochs, batch_size, train_batches, val_batches, rule


def _prepare(model, train, val, history: History, device: torch.device, o: dict) -> _Loop:
    """Check everything (nothing changes if a check fails), then move the model and build the optimiser."""
    epochs, batch_size, train_batches, val_batches, rule = _check_all(model, train, val, history, o)
    amp = (device.type == "cuda") if o["amp"] is None else o["amp"]
    model.to(device)
    if history.run is None:
        asked = optimizer = o["optimizer"]
        if isinstance(asked, Optim):
            optimizer = make_optimizer(model, asked.name, lr=asked.lr, momentum=asked.momentum,
                                       weight_decay=asked.weight_decay, iterations=epochs * len(train_batches),
                                       nc=getattr(model, "nc", 10))
        history.run = RunState(optimizer, torch.amp.GradScaler(device.type, enabled=amp), asked, batch_size,
                               data_length(train), o["seed"])
    run = history.run
    monitor = GradientMonitor(model, log=history.layer_grad_norms)  # frozen parameters (no gradient) are skipped
    history.device, history.status, history.layer_names = str(device), "running", monitor.layer_names
    history.clip = o["clip"] or None
    loss_fn = o["loss_fn"] or (DetectionLoss(model) if is_detector(model) else F.cross_entropy)
    return _Loop(model, device, amp, epochs, train_batches, val_batches, run, loss_fn, monitor,
                 Snapshot(model, run.optimizer, run.scaler), o["clip"], o["schedule"], rule,
                 o["freeze"].bn if o["freeze"] is not None else "eval",
                 history.depth[-1] if history.depth else None)


def _follow_freeze(loop: _Loop, history: History, epoch: int) -> None:
    """Ask the freeze rule for this step's depth and apply it at this step boundary if it changed."""
    if loop.freeze is None:
        return
    wanted = loop.freeze(epoch, history.step)
    if wanted is not None and wanted != loop.depth:
        set_freeze_depth(loop.model, wanted, bn=loop.freeze_bn)
        was = "" if loop.depth is None else event(N_(" (was {depth})"), depth=loop.depth)
        text = event(N_("step {step} (epoch {epoch}): freeze depth {depth}{was}"), step=history.step + 1,
                     epoch=epoch + 1, depth=wanted, was=was)  # steps counted from 1
        history.events.append((history.step, text))
        loop.depth = wanted
    if loop.depth is not None:
        history.freeze_depth[epoch] = loop.depth


def _transaction(loop: _Loop, x: torch.Tensor, y: torch.Tensor):
    """One :func:`train_step` that completes, or leaves the model as the snapshot taken just before it."""
    loop.snapshot.save()
    try:
        return train_step(loop.model, x, y, optimizer=loop.run.optimizer, loss_fn=loop.loss_fn,
                          monitor=loop.monitor, clip=loop.clip, scaler=loop.run.scaler, amp=loop.amp,
                          snapshot=loop.snapshot)
    except StepFailed as failed:
        if failed.kind == "loss":  # name the layer: look again from the restored weights
            failed.layer, failed.parameter = locate_failed_loss(loop.model, x, loop.snapshot, loop.amp)
        else:
            loop.snapshot.restore()
        raise
    except BaseException:
        loop.snapshot.restore()
        raise


def _record(history: History, loop: _Loop, epoch: int, result) -> None:
    history.record_step(result.loss, epoch, result.grad_norm, loop.run.optimizer)
    history.clip_coef.append(result.clip_coef)
    if loop.depth is not None:
        history.depth.append(loop.depth)


def fit(model: nn.Module, train, val=None, *, epochs: int = 3, batch_size: int = 64,
        optimizer: str | Optim | torch.optim.Optimizer = "auto", lr: float | None = None,
        loss_fn: Callable | None = None, clip: float | None = DEFAULT_CLIP, device: str | torch.device | None = "auto",
        amp: bool | None = None, seed: int = 0, progress: bool = True,
        callback: Callable[[History], None] | None = None, stop=None, history: History | None = None,
        schedule: Schedule | None = None, freeze: dict[int, int] | FreezeRule | Freeze | None = None) -> History:
    """Train ``model`` on ``train`` for ``epochs`` and return its :class:`History`.

    Args:
        model: any ``nn.Module`` (ours, torchvision, timm, your own); a detector with the workbench's ``Detect``
            or Ultralytics' (a ``DetectionModel`` from yolov8n.yaml or yolo11n.yaml; segmentation, pose, OBB and
            end-to-end heads are refused with a ``ValueError``).
        train, val: an ``ImageSet`` (batched here, seeded order) or a DataLoader of ``(x, y)``.
        epochs: total epochs; with ``history`` the run continues up to this count.
        optimizer: ``"auto"`` (AdamW for short runs, SGD for long ones, as Ultralytics), ``"sgd"``, ``"adamw"``,
            an :class:`~workbench.fit_options.Optim` (``Optim("sgd", lr=0.01, momentum=0.9)``), or a torch optimiser.
        lr: the learning rate of a named optimiser (``None``: its default); short for ``Optim(name, lr=lr)``.
        loss_fn: ``loss_fn(outputs, targets)``; default cross-entropy, or :class:`~workbench.detection.DetectionLoss`
            for a detector (validation then reports ``mAP50``).
        clip: max gradient L2 norm (``None`` or 0: no clipping; the norm is still recorded).
        device: ``"auto"`` picks CUDA, then MPS, then CPU. ``amp`` defaults to on for CUDA.
        seed: the same seed gives the same data order and the same loss curve on a CPU.
        progress: a tqdm progress bar per epoch.
        callback: ``callback(history)`` after every step and every epoch (live views throttle themselves).
        stop: anything with ``is_set()`` (a ``threading.Event``): checked between steps.
        history: a History returned by an interrupted ``fit``: continue from its last step, with its
            optimiser (``history.run``); a different optimiser, batch size, seed or data length is refused.
        schedule: a :class:`~workbench.schedules.Schedule` (e.g. ``YoloSchedule()``) that sets every group's
            LR and momentum before each step from the global iteration ``epoch * nb + i``.
        freeze: ``{epoch: depth}`` (``{0: 9, 2: 0}``: layers 0..8 frozen for two epochs), a rule
            ``freeze(epoch, step) -> depth | None`` asked before every step (``step`` is ``history.step``;
            ``None`` keeps the depth), or a :class:`~workbench.fit_options.Freeze` adding the BatchNorm policy
            (default ``"eval"``). A new depth is applied at that step boundary by
            :func:`~workbench.freezing.set_freeze_depth`, recorded in ``History.depth`` and ``.freeze_depth``.
    """
    options = dict(locals(), optimizer=as_optim(optimizer, lr), freeze=as_freeze(freeze))
    history = history if history is not None else History()
    dev = pick_device(device)
    with _caller_rng_kept(dev), _interrupts_between_steps() as interrupted:
        loop = _prepare(model, train, val, history, dev, options)  # all checks first: nothing changes if one fails
        torch.manual_seed(seed + history.step)
        started = time.perf_counter()
        try:
            _train(loop, history, lambda: interrupted.is_set() or (stop is not None and stop.is_set()),
                   progress=progress, callback=callback)
        finally:
            loop.monitor.flush()
            history.seconds += time.perf_counter() - started
    return history


def _train(loop: _Loop, history: History, stop_asked: Callable[[], bool], *, progress: bool,
           callback: Callable[[History], None] | None) -> None:
    """The loop: per batch, freeze rule, LR schedule, one transactional step, record; validation per epoch."""
    model, nb, bar = loop.model, len(loop.train), None
    try:
        for epoch in range(history.epochs_done, loop.epochs):
            model.train()
            bar = tqdm(total=nb, disable=not progress, desc=f"epoch {epoch + 1}/{loop.epochs}",
                       initial=history.steps_in_epoch, leave=False)
            for i, (x, y) in enumerate(epoch_batches(loop.train, epoch)):
                if i < history.steps_in_epoch:
                    continue  # resuming: these batches were done before the interruption
                if stop_asked():
                    raise KeyboardInterrupt
                _follow_freeze(loop, history, epoch)
                if loop.schedule is not None:
                    loop.schedule.apply(loop.run.optimizer, epoch * nb + i, nb, loop.epochs)
                result = _transaction(loop, x.to(loop.device, non_blocking=True), y.to(loop.device, non_blocking=True))
                history.steps_in_epoch = i + 1
                _record(history, loop, epoch, result)
                bar.set_postfix_str(f"loss {result.loss:.3f}", refresh=False)
                bar.update()
                if callback is not None:
                    callback(history)
            bar.close()
            if loop.val is not None:
                history.record_epoch(evaluate(model, epoch_batches(loop.val, 0), loop.device))
            history.epochs_done, history.steps_in_epoch = epoch + 1, 0
            if callback is not None:
                callback(history)
        history.status = "completed"
    except KeyboardInterrupt:
        history.status = "interrupted"
        history.events.append((history.step, event(N_("interrupted after step {step}"), step=history.step)))
    except StepFailed as failed:
        record_non_finite(history, failed)
    except Exception as error:
        record_failure(history, model, error)
        raise
    finally:
        if bar is not None:
            bar.close()
