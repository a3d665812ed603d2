"""Look inside a training run: per-layer gradient norms, clip coefficient, weight drift, non-finite values.

Everything is measured per numbered layer (see :func:`~workbench.layers.numbered_layers`), so it
works on any ``nn.Module``. Gradient norms come from one ``torch._foreach_norm`` over all
gradients, reduced per layer on the device and copied to the CPU in batches, never one
``.item()`` per parameter. Forward hooks live only inside a ``with`` block.

Example:
    >>> import torch
    >>> from workbench import build_model
    >>> model = build_model(nc=3)
    >>> model(torch.randn(2, 3, 32, 32)).sum().backward()
    >>> monitor = GradientMonitor(model)
    >>> total = monitor.measure()
    >>> monitor.layer_norms.shape
    torch.Size([1, 10])
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .layers import layer_index_of, numbered_layers

OTHER = "(other)"  # parameters registered outside every numbered layer (e.g. on the root module)
DEVICE_COPY_EVERY = 32  # steps between copies of the per-layer norms from an accelerator to the CPU


def _parameter_layers(model: nn.Module, names: list[str]) -> tuple[list[str], list[int]]:
    """The names of the layers that hold parameters, and for each parameter name its position among them."""
    layers = numbered_layers(model)
    found = [layer_index_of(name, layers) for name in names]
    used = sorted({i for i in found if i is not None})
    labels = [layers[i].name or type(model).__name__ for i in used]
    if any(i is None for i in found):
        labels.append(OTHER)
    position = {index: k for k, index in enumerate(used)}
    return labels, [position[i] if i is not None else len(labels) - 1 for i in found]


def clip_coefficient(total_norm: float, max_norm: float | None) -> float:
    """The factor ``clip_grad_norm_`` scales gradients by: ``min(1, max_norm / (total_norm + 1e-6))``.

    ``max_norm`` of ``None`` or 0 means no clipping (coefficient 1).

    Example:
        >>> round(clip_coefficient(20.0, 10.0), 6), clip_coefficient(5.0, 10.0)
        (0.5, 1.0)
    """
    if not max_norm:
        return 1.0
    return min(1.0, max_norm / (total_norm + 1e-6))


@dataclass(frozen=True)
class NonFinite:
    """Where a run stopped: the step that failed (counted from 1, as the event says; the model holds the
    weights of the step before), what was non-finite (``"loss"``, ``"gradient"`` or ``"weights"``), the layer
    and parameter."""

    step: int
    kind: str
    value: float
    layer: str | None = None
    parameter: str | None = None

    @property
    def message(self) -> str:
        where = f" in layer {self.layer}" if self.layer else ""
        where += f" (parameter {self.parameter})" if self.parameter else ""
        held = "the starting weights" if self.step == 1 else f"the weights of step {self.step - 1}"
        return f"non-finite {self.kind} {self.value} at step {self.step}{where}; the model holds {held} (restored)"


class GradientMonitor:
    """Per-layer gradient L2 norms of a model, measured after ``backward()``, step after step.

    Args:
        model: any ``nn.Module``; its parameters are grouped by numbered layer once, here.
        every: copy the per-layer norms to the CPU every this many steps (``"auto"``: every step
            on a CPU, where nothing is copied, every 32 steps on an accelerator). Reading
            :attr:`layer_norms` or calling :meth:`flush` copies whatever is pending.
        log: a list to append each step's per-layer norms to (``fit`` passes ``History.layer_grad_norms``).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        >>> model(torch.ones(1, 4)).sum().backward()
        >>> monitor = GradientMonitor(model)
        >>> _ = monitor.measure()
        >>> monitor.layer_names, len(monitor.log[0])
        (['0', '1'], 2)
    """

    def __init__(self, model: nn.Module, every: int | str = "auto", log: list | None = None):
        if every != "auto" and (not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be 'auto' or an integer >= 1 (got {every!r})")
        named = list(model.named_parameters())
        self.parameter_names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.layer_names, self._layer_of = _parameter_layers(model, self.parameter_names)
        self.every = every
        self.log = log if log is not None else []
        self.totals: list[float] = []
        self._pending: list[torch.Tensor] = []  # per step: the per-layer norms, then the total, on the device
        self._index: dict[tuple[int, ...], torch.Tensor] = {}
        self._present: list[int] = []
        self._norms: torch.Tensor | None = None

    @property
    def measured(self) -> list[nn.Parameter]:
        """The parameters that had a gradient at the last :meth:`measure` (frozen ones have none)."""
        return [self.params[i] for i in self._present]

    def measure(self) -> torch.Tensor:
        """Record this step's per-layer gradient norms and return the total norm (a 0-d tensor, not synced)."""
        present = [i for i, p in enumerate(self.params) if p.grad is not None]
        self._present = present
        if not present:  # nothing trainable got a gradient (all frozen, or no backward yet)
            device = self.params[0].device if self.params else torch.device("cpu")
            self._norms, total = None, torch.zeros((), device=device)
            self._pending.append(torch.zeros(len(self.layer_names) + 1, device=device))
        else:
            norms = torch.stack(torch._foreach_norm([self.params[i].grad for i in present])).float()
            index = self._layer_index(tuple(present), norms.device)
            layers = torch.zeros(len(self.layer_names), device=norms.device).index_add_(0, index, norms * norms)
            total = torch.linalg.vector_norm(norms)
            self._norms = norms
            self._pending.append(torch.cat((layers.sqrt_(), total[None])))
        every = self.every if self.every != "auto" else (1 if total.device.type == "cpu" else DEVICE_COPY_EVERY)
        if len(self._pending) >= every:
            self.flush()
        return total

    def _layer_index(self, present: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (present, device)
        if key not in self._index:
            self._index[key] = torch.tensor([self._layer_of[i] for i in present], device=device)
        return self._index[key]

    def clip(self, max_norm: float | None, total: torch.Tensor) -> None:
        """Scale the measured gradients as ``clip_grad_norm_(max_norm)`` would, reusing ``total`` (None/0: no-op)."""
        if max_norm and self._present:
            nn.utils.clip_grads_with_norm_(self.measured, max_norm, total)

    def drop_last(self) -> None:
        """Forget the last measured step (a step that was not taken)."""
        if self._pending:
            self._pending.pop()
        elif self.log:
            self.log.pop()
            self.totals.pop()

    def flush(self) -> None:
        """Copy the pending steps' norms to the CPU in one transfer and append them to :attr:`log`."""
        if not self._pending:
            return
        rows = torch.stack(self._pending).tolist()
        self._pending.clear()
        self.log.extend(row[:-1] for row in rows)
        self.totals.extend(row[-1] for row in rows)

    @property
    def layer_norms(self) -> torch.Tensor:
        """Every measured step's per-layer gradient norms, ``(steps, layers)``, on the CPU."""
        self.flush()
        return torch.tensor(self.log, dtype=torch.float32).reshape(len(self.log), len(self.layer_names))

    def first_non_finite(self) -> tuple[str, str] | None:
        """``(layer, parameter)`` of the first parameter whose gradient norm was non-finite at the last measure."""
        if self._norms is None:
            return None
        bad = (~torch.isfinite(self._norms)).nonzero()
        if len(bad) == 0:
            return None
        i = self._present[int(bad[0])]
        return self.layer_names[self._layer_of[i]], self.parameter_names[i]


def layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """The gradient L2 norm of each numbered layer right now (after ``backward()``).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 1))
        >>> model(torch.ones(1, 3)).sum().backward()
        >>> round(layer_grad_norms(model)["0"], 4)  # weight grad (1, 1, 1), bias grad 1
        2.0
    """
    monitor = GradientMonitor(model, every=1)
    monitor.measure()
    return dict(zip(monitor.layer_names, monitor.log[0], strict=True))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's floating-point parameters and buffers: the start to measure drift from."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def _relative_change(model: nn.Module, start: Mapping[str, torch.Tensor], names: list[str]) -> dict[str, float]:
    missing = [n for n in names if n not in start]
    if missing:
        raise ValueError(f"start has no entry for {missing[:3]} ({len(missing)} in all): take it with "
                         f"snapshot(model) before training, or pass the state_dict the model was loaded from")
    state = model.state_dict()
    mismatched = [n for n in names if start[n].shape != state[n].shape]
    if mismatched:
        raise ValueError(f"start has other shapes for {mismatched[:3]}: it belongs to a different model")
    labels, layer_of = _parameter_layers(model, names)
    now = [state[n].detach().float() for n in names]
    then = [start[n].detach().to(now[k].device).float() for k, n in enumerate(names)]
    moved = torch.stack(torch._foreach_norm(torch._foreach_sub(now, then))) ** 2
    size = torch.stack(torch._foreach_norm(then)) ** 2
    index = torch.tensor(layer_of, device=moved.device)
    moved = torch.zeros(len(labels), device=moved.device).index_add_(0, index, moved).sqrt().tolist()
    size = torch.zeros(len(labels), device=size.device).index_add_(0, index, size).sqrt().tolist()
    return {label: (d / s if s > 0 else (0.0 if d == 0 else math.inf))
            for label, d, s in zip(labels, moved, size, strict=True)}


def weight_drift(model: nn.Module, start: Mapping[str, torch.Tensor] | nn.Module) -> dict[str, float]:
    """Per layer, how far the parameters moved from ``start``: ``||W - W0|| / ||W0||`` over the layer's parameters.

    ``start`` is a :func:`snapshot` taken before training, the state_dict the model was loaded
    from (pretrained weights), or a model of the same architecture. A layer whose start is all
    zeros reports 0 if unmoved and ``inf`` otherwise. For BatchNorm running statistics see
    :func:`~workbench.freezing.bn_drift`.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> start = snapshot(model)
        >>> weight_drift(model, start)
        {'0': 0.0}
    """
    start = start.state_dict() if isinstance(start, nn.Module) else start
    return _relative_change(model, start, [name for name, _ in model.named_parameters()])


@dataclass(frozen=True)
class Activation:
    """One numbered layer's output in one forward pass: mean, std, and whether every value was finite."""

    index: int
    name: str
    type: str
    mean: float
    std: float
    finite: bool


class ActivationStats:
    """Forward hooks on every numbered layer that record its output's mean and std; removed on exit.

    Use it as a context manager: the hooks exist only inside the ``with`` block (even if it
    raises), and entering again first removes any hooks it still holds, so re-running a
    notebook cell never stacks them.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        >>> with ActivationStats(model) as stats:
        ...     _ = model(torch.randn(16, 4))
        >>> [row.name for row in stats.rows], len(model[0]._forward_hooks)
        (['0', '1'], 0)
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = numbered_layers(model)
        self._handles: list = []
        self._records: list[tuple[int, torch.Tensor]] = []

    def __enter__(self) -> ActivationStats:
        self.remove()
        self._records.clear()
        self._handles = [layer.module.register_forward_hook(partial(self._record, layer.index))
                         for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object registered (safe to call twice)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def _record(self, index: int, module: nn.Module, inputs, output) -> None:
        tensors = [output] if isinstance(output, torch.Tensor) else [t for t in output if isinstance(t, torch.Tensor)]
        if not tensors:
            return
        values = torch.cat([t.detach().float().flatten() for t in tensors])
        std, mean = torch.std_mean(values, correction=0)
        self._records.append((index, torch.stack((mean, std, torch.isfinite(values).all().float()))))

    @property
    def rows(self) -> list[Activation]:
        """One row per layer call, in the order the forward pass ran them."""
        if not self._records:
            return []
        values = torch.stack([v for _, v in self._records]).tolist()
        return [Activation(i, self.layers[i].name, self.layers[i].type, m, s, bool(f))
                for (i, _), (m, s, f) in zip(self._records, values, strict=True)]


def first_non_finite_output(model: nn.Module, x: torch.Tensor) -> str | None:
    """Run ``model(x)`` without gradients and name the first numbered layer whose output is non-finite."""
    with torch.no_grad(), ActivationStats(model) as stats:
        model(x)
    return next((row.name for row in stats.rows if not row.finite), None)


def first_non_finite_parameter(model: nn.Module) -> tuple[str, str] | None:
    """``(layer, parameter)`` of the first parameter holding a non-finite value, if any."""
    names = [name for name, _ in model.named_parameters()]
    finite = [bool(torch.isfinite(p.detach()).all()) for p in model.parameters()]
    if all(finite):
        return None
    labels, layer_of = _parameter_layers(model, names)
    first = finite.index(False)
    return labels[layer_of[first]], names[first]


def locate_non_finite(model: nn.Module, x: torch.Tensor) -> tuple[str | None, str | None]:
    """``(layer, parameter)`` to blame for a non-finite loss on input ``x``.

    The first parameter holding a non-finite value if there is one; otherwise the first layer
    whose output on ``x`` is non-finite (parameter ``None``); ``(None, None)`` if the outputs
    are finite (then the loss function itself produced it). The forward pass may update
    BatchNorm statistics: restore the model afterwards.
    """
    bad = first_non_finite_parameter(model)
    return bad if bad is not None else (first_non_finite_output(model, x), None)
