"""One training step, as a transaction: it completes, or the model is as it was before it.

:func:`train_step` does forward, loss, backward, monitor, clip and the optimiser step, and
checks three things on the way: the loss, the gradients, and the weights the optimiser wrote
(one fused ``torch._foreach_norm`` over the written parameters; a norm that is not finite means
a NaN or inf weight, or weights so large, above about 1e19, that their squares overflow, as
``lr=1e30`` gives). Any of them non-finite raises :class:`StepFailed`.

A :class:`Snapshot`, kept in preallocated copies, holds what a step can change: buffers
(BatchNorm statistics), ``requires_grad`` flags, BatchNorm policies and the AMP scaler's state,
taken before the step; the parameters the optimiser is about to write and their optimiser
state, taken just before it writes. If the step raises anything (``StepFailed``, an
error in your model or loss, a second Ctrl-C), ``fit`` restores it, so the weights are those
of the last completed step.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 2)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=float("inf"))
    >>> snapshot = Snapshot(model, optimizer)
    >>> before = model.weight.clone()
    >>> try:
    ...     train_step(model, torch.ones(4, 2), torch.zeros(4, dtype=torch.long), optimizer=optimizer,
    ...                snapshot=snapshot)
    ... except StepFailed as failed:
    ...     snapshot.restore()
    ...     print(failed.kind, torch.equal(model.weight, before))
    weights True
"""
from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .i18n import N_
from .layers import layer_index_of, numbered_layers
from .monitor import GradientMonitor, NonFinite, clip_coefficient, locate_non_finite
from .run_labels import event

NON_FINITE_KINDS = {"loss": N_("loss"), "gradient": N_("gradient"), "weights": N_("weights")}  # StepFailed.kind


class StepFailed(Exception):
    """A step produced a non-finite loss, gradient or weight; ``fit`` rolls the model back."""

    def __init__(self, kind: str, value: float, layer: str | None = None, parameter: str | None = None):
        super().__init__(f"non-finite {kind} {value}")
        self.kind, self.value, self.layer, self.parameter = kind, value, layer, parameter


@dataclass(frozen=True)
class StepResult:
    """What one completed step measured: the loss, the total gradient norm, the clip coefficient."""

    loss: float
    grad_norm: float
    clip_coef: float


class Snapshot:
    """The model and optimiser as they were before a step, kept in copies allocated once.

    :meth:`save`, before the step, keeps buffers (BatchNorm statistics), ``requires_grad`` flags,
    BatchNorm policies and the AMP scaler; :meth:`save_update`, just before the optimiser writes,
    keeps the parameters it is about to write and their optimiser state. So a frozen layer (no
    gradient, nothing written) costs nothing, and a step that fails before its update copies
    no parameter.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, scaler=None):
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.params = list(model.parameters())
        self.buffers = list({id(b): b for b in model.buffers()}.values())
        with torch.no_grad():
            self.buffer_copies = [b.clone() for b in self.buffers]
            self.param_copies = {p: p.detach().clone() for p in self.params}
        self.norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        self._state_tensors: list[torch.Tensor] = []
        self._state_copies: list[torch.Tensor] = []
        self.save()

    @torch.no_grad()
    def save(self) -> None:
        """Keep what any step may change: buffers, flags, BatchNorm policies and modes, the scaler."""
        if self.buffers:
            torch._foreach_copy_(self.buffer_copies, self.buffers)
        self.flags = [p.requires_grad for p in self.params]
        self.classes = [type(m) for m in self.norms]  # a BatchNorm's policy is its class (workbench.batchnorm)
        self.modes = [m.training for m in self.norms]
        self.scaler_state = self.scaler.state_dict() if self.scaler is not None and self.scaler.is_enabled() else None
        self.written: list[nn.Parameter] | None = None  # no update kept yet in this step

    @torch.no_grad()
    def save_update(self, params: list[nn.Parameter]) -> None:
        """Keep ``params``, which the optimiser is about to write, and their optimiser state."""
        self.written = list(params)
        if self.written:
            torch._foreach_copy_([self.param_copies[p] for p in self.written], self.written)
        if self.optimizer is not None:
            self.state = {p: dict(s) for p, s in self.optimizer.state.items()}
            tensors = [v for p in self.written for v in self.state.get(p, {}).values() if torch.is_tensor(v)]
            same = len(tensors) == len(self._state_tensors) and all(map(operator.is_, tensors, self._state_tensors))
            if same and tensors:
                torch._foreach_copy_(self._state_copies, tensors)
            elif not same:
                self._state_tensors, self._state_copies = tensors, [t.detach().clone() for t in tensors]

    @torch.no_grad()
    def restore(self) -> None:
        """Put back buffers, written parameters and their optimiser state, flags, policies, scaler; drop gradients."""
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.buffer_copies)
        if self.written:
            torch._foreach_copy_(self.written, [self.param_copies[p] for p in self.written])
        if self.written is not None and self.optimizer is not None:
            self.optimizer.state.clear()
            self.optimizer.state.update({p: dict(s) for p, s in self.state.items()})
            if self._state_tensors:
                torch._foreach_copy_(self._state_tensors, self._state_copies)
        for p, flag in zip(self.params, self.flags):
            p.requires_grad_(flag)
            p.grad = None
        for module, cls, mode in zip(self.norms, self.classes, self.modes):
            module.__class__, module.training = cls, mode
        if self.scaler_state is not None:
            self.scaler.load_state_dict(self.scaler_state)


def _where(model: nn.Module, names: list[str], index: int) -> tuple[str | None, str]:
    """``(layer, parameter)`` for the parameter at ``index`` of ``names``."""
    layers = numbered_layers(model)
    k = layer_index_of(names[index], layers)
    return (None if k is None else layers[k].name or type(model).__name__), names[index]


@torch.no_grad()
def _check_written(model: nn.Module, monitor: GradientMonitor) -> None:
    """Raise :class:`StepFailed` when the weights the optimiser wrote are not finite (one fused norm)."""
    written = monitor.measured
    if not written:
        return
    norms = torch.stack(torch._foreach_norm(written))
    total = float(norms.sum())
    if not math.isfinite(total):
        bad = int((~torch.isfinite(norms)).nonzero()[0])
        names = {id(p): n for n, p in model.named_parameters()}
        written_names = [names[id(p)] for p in written]
        raise StepFailed("weights", total, *_where(model, written_names, bad))


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, optimizer: torch.optim.Optimizer,
               loss_fn: Callable | None = None, monitor: GradientMonitor | None = None, clip: float | None = None,
               scaler: torch.amp.GradScaler | None = None, amp: bool = False,
               snapshot: Snapshot | None = None) -> StepResult:
    """Forward, loss, backward, monitor, clip, optimiser step; :class:`StepFailed` on a non-finite value.

    With AMP (an enabled ``scaler``) non-finite gradients are the scaler's to handle: it skips
    the step and lowers its scale. Restoring the model after a failure is the caller's job
    (take a :class:`Snapshot` before the step and pass it: the step keeps in it what the optimiser
    is about to write).
    """
    loss_fn = loss_fn or F.cross_entropy
    monitor = monitor if monitor is not None else GradientMonitor(model)
    scaler = scaler if scaler is not None else torch.amp.GradScaler(x.device.type, enabled=False)
    with torch.autocast(x.device.type, enabled=amp):
        loss = loss_fn(model(x), y)
    if not torch.isfinite(loss):
        raise StepFailed("loss", loss.item())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    total = monitor.measure()  # per-layer gradient norms and their total, from one _foreach_norm
    try:
        grad_norm = total.item()
        if not torch.isfinite(total) and not scaler.is_enabled():
            raise StepFailed("gradient", grad_norm, *(monitor.first_non_finite() or (None, None)))
        clip_coef = clip_coefficient(grad_norm, clip)
        if clip_coef < 1:  # as clip_grad_norm_, reusing the total (scaling by 1 would change nothing)
            monitor.clip(clip, total)
        if snapshot is not None:
            snapshot.save_update(monitor.measured)
        scaler.step(optimizer)
        scaler.update()
        _check_written(model, monitor)
    except BaseException:
        monitor.drop_last()  # this step is not taken
        raise
    return StepResult(loss.item(), grad_norm, clip_coef)


def locate_failed_loss(model: nn.Module, x: torch.Tensor, snapshot: Snapshot, amp: bool = False):
    """``(layer, parameter)`` to blame for a non-finite loss, looked for on the restored model, then restored again."""
    snapshot.restore()
    with torch.autocast(x.device.type, enabled=amp):
        found = locate_non_finite(model, x)
    snapshot.restore()  # looking ran a forward pass, which moves BatchNorm statistics
    return found


def layer_in_traceback(model: nn.Module, error: BaseException) -> str | None:
    """The index of the deepest numbered layer of ``model`` whose code is in ``error``'s traceback."""
    index = {id(layer.module): layer.name or type(model).__name__ for layer in numbered_layers(model)}
    found, tb = None, error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        found = index.get(id(owner), found)
        tb = tb.tb_next
    return found


def _weights_of(step: int) -> str:
    return event(N_("the starting weights")) if step == 0 else event(N_("the weights of step {step}"), step=step)


def record_non_finite(history, failed: StepFailed) -> None:
    """Record where the run blew up; the model already holds the weights of the last recorded step."""
    found = NonFinite(history.step + 1, failed.kind, failed.value, failed.layer, failed.parameter)
    where = event(N_(" in layer {layer}"), layer=found.layer) if found.layer else ""
    parameter = event(N_(" (parameter {parameter})"), parameter=found.parameter) if found.parameter else ""
    history.non_finite, history.status = found, "non_finite"
    history.events.append((history.step, event(
        N_("step {step}: non-finite {kind} {value}{where}{parameter}; the model holds {weights} (restored)"),
        step=found.step, kind=event(NON_FINITE_KINDS[found.kind]) if found.kind in NON_FINITE_KINDS else found.kind,
        value=found.value, where=where, parameter=parameter, weights=_weights_of(history.step))))


def record_failure(history, model: nn.Module, error: Exception) -> None:
    """Record a step that raised, and add to the error which step, which layer and what the model holds now."""
    layer = layer_in_traceback(model, error)
    where = f" in layer {layer}" if layer else ""
    message = (f"fit stopped at step {history.step + 1}: {type(error).__name__} raised{where}; the model holds "
               f"{_weights_of(history.step)} (a failed step is undone) and error.history the run so far")
    history.status = "failed"
    history.events.append((history.step, message))
    error.add_note(message)
    error.history = history


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
    saved, grads, mode = Snapshot(model), [p.grad for p in model.parameters()], model.training
    saved.save_update(params)
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
