"""Learning-rate and momentum schedules as pure functions of the iteration, per parameter group.

A schedule answers "what LR and momentum does this group get at iteration ``ni``?" from the
group's tag and its initial LR alone, so the whole run can be previewed before training and
checked afterwards. :func:`fit` calls :meth:`Schedule.apply` before the forward of every step,
with the global iteration ``ni = epoch * nb + i`` (``nb`` batches per epoch), so a resumed run
continues the same curve.

* :class:`YoloSchedule`: YOLO's per-batch warmup, then ``lf(epoch)`` linear or cosine, in
  two profiles, ``"yolov5"`` and ``"ultralytics"``.
* :class:`CosineWarmup`: linear warmup from 0, then cosine decay per iteration.
* :class:`OneCycle`: fastai's one-cycle (div 25, div_final 1e5, pct_start 0.25, cosine).

Momentum means SGD's ``momentum`` or Adam's ``beta1`` (``betas[0]``), whichever the group has.

Example:
    >>> from workbench import build_model, param_groups
    >>> preview = YoloSchedule().preview(param_groups(build_model(), 0.01), nb=100, epochs=100)
    >>> preview.warmup, [round(float(preview.lr[name][50]), 6) for name in ("bias", "weight")]
    (300, [0.085, 0.001667])
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from .numbers import whole_number

PROFILES = ("yolov5", "ultralytics")


@dataclass(frozen=True)
class Preview:
    """Every group's LR and momentum at every iteration, keyed by group name as :class:`History` is."""

    lr: dict[str, np.ndarray]
    momentum: dict[str, np.ndarray]
    epoch: np.ndarray
    nb: int
    epochs: int
    warmup: int  # warmup iterations (0: none)


def _groups(groups: torch.optim.Optimizer | Iterable[dict]) -> list[dict]:
    if isinstance(groups, torch.optim.Optimizer):
        return list(groups.param_groups)
    if isinstance(groups, (dict, str)) or not isinstance(groups, Iterable):
        raise ValueError(f"groups must be an optimizer or a list of group dicts (param_groups(model, lr)), "
                         f"got {type(groups).__name__}")
    groups = list(groups)
    for k, g in enumerate(groups):
        lr = g.get("initial_lr", g.get("lr")) if isinstance(g, dict) else None
        if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"groups[{k}] must be a dict with a finite 'lr' >= 0 (as param_groups(model, lr) "
                             f"gives), got {g if not isinstance(g, dict) else {'lr': g.get('lr')}!r}")
    return groups


def _tag(group: dict) -> str:
    """A group's tag: ours (``tag``), Ultralytics' (``param_group``), or ``"weight"`` for an untagged group."""
    return group.get("tag", group.get("param_group", "weight"))


def _check_run(nb: int, epochs: int) -> None:
    whole_number(nb, "nb (batches per epoch)", 1)
    whole_number(epochs, "epochs", 1)


class Schedule:
    """The shared machinery: subclasses define ``warmup_iterations``, ``lr_at`` and ``momentum_at``."""

    def warmup_iterations(self, nb: int, epochs: int) -> int:
        return 0

    def lr_at(self, ni: int, lr0: float, tag: str, nb: int, epochs: int) -> float:
        raise NotImplementedError

    def momentum_at(self, ni: int, nb: int, epochs: int) -> float:
        raise NotImplementedError

    def check(self, nb: int, epochs: int) -> None:
        """Raise a ``ValueError`` if this schedule cannot run ``epochs`` epochs of ``nb`` batches."""
        _check_run(nb, epochs)

    def preview(self, groups: torch.optim.Optimizer | Iterable[dict], nb: int, epochs: int) -> Preview:
        """The LR and momentum every group will get at every iteration, before training.

        ``groups`` is an optimiser or a list of group dicts (:func:`param_groups`); a group's
        ``lr0`` is its ``initial_lr`` if a scheduler set one, else its ``lr``.
        """
        self.check(nb, epochs)
        groups, nb, epochs = _groups(groups), int(nb), int(epochs)
        n = nb * epochs
        lr, momentum, curves = {}, {}, {}
        moms = np.array([self.momentum_at(ni, nb, epochs) for ni in range(n)])
        for k, g in enumerate(groups):
            key = (g.get("initial_lr", g["lr"]), _tag(g))  # groups with the same lr0 and tag share a curve
            if key not in curves:
                curves[key] = np.array([self.lr_at(ni, *key, nb, epochs) for ni in range(n)])
            lr[g.get("name", str(k))], momentum[g.get("name", str(k))] = curves[key].copy(), moms.copy()
        return Preview(lr, momentum, np.arange(n) // nb, nb, epochs, self.warmup_iterations(nb, epochs))

    def apply(self, optimizer: torch.optim.Optimizer, ni: int, nb: int, epochs: int) -> None:
        """Set every group's LR and momentum (or Adam's beta1) for iteration ``ni``; call before the step."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch optimizer (e.g. make_optimizer(model)), "
                             f"got {type(optimizer).__name__}")
        _check_run(nb, epochs)
        ni, nb, epochs = whole_number(ni, "ni (the iteration)", 0), int(nb), int(epochs)
        _groups(optimizer.param_groups)
        momentum = self.momentum_at(ni, nb, epochs)
        for g in optimizer.param_groups:
            lr0 = g.setdefault("initial_lr", g["lr"])
            g["lr"] = self.lr_at(ni, lr0, _tag(g), nb, epochs)
            if "momentum" in g:
                g["momentum"] = momentum
            elif "betas" in g:
                g["betas"] = (momentum, *tuple(g["betas"])[1:])

    def torch_scheduler(self, optimizer: torch.optim.Optimizer, nb: int, epochs: int) -> LRScheduler:
        """The LR part as a torch ``LambdaLR`` stepped once per batch (momentum stays with :meth:`apply`)."""
        self.check(nb, epochs)
        lambdas = [self._factor(_tag(g), g.get("initial_lr", g["lr"]), nb, epochs) for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)

    def _factor(self, tag: str, lr0: float, nb: int, epochs: int):
        return lambda ni: self.lr_at(ni, lr0, tag, nb, epochs) / lr0


def _number(value, what: str, lo: float, hi: float = math.inf, lo_open: bool = False) -> None:
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and (value > lo if lo_open else value >= lo))
    if not (ok and value <= hi):
        raise ValueError(f"{what} must be in {'(' if lo_open else '['}{lo}, {hi}] (got {value!r})")


@dataclass(frozen=True)
class YoloSchedule(Schedule):
    """YOLO's warmup and per-epoch decay, exactly as YOLOv5 or Ultralytics run them.

    Warmup over ``nw`` iterations: the ``bias`` groups' LR goes linearly from ``warmup_bias_lr``
    to ``lr0 * lf(epoch)``, every other group's from 0 to ``lr0 * lf(epoch)``, momentum from
    ``warmup_momentum`` to ``momentum``. Then the LR is set once per epoch by a ``LambdaLR`` with
    ``lf`` linear ``(1 - x/E) * (1 - lrf) + lrf`` or cosine ``((1 - cos(x*pi/E)) / 2) * (lrf - 1) + 1``;
    the last warmup value holds until that epoch ends.

    Profiles:
        ``"yolov5"``: YOLOv5's ``train.py``. ``nw = max(round(warmup_epochs * nb), 100)``,
        warming while ``ni <= nw``. The scheduler steps at the end of each epoch after its
        ``last_epoch`` was reset to -1, so after warmup epoch ``e`` runs at ``lr0 * lf(e - 1)``.
        A run too short to leave warmup: ValueError.
        ``"ultralytics"``: Ultralytics 8.4.103 to 8.4.182. ``nw = round(min(warmup_epochs,
        max(epochs - 1, 0)) * nb)``, no floor, warming while ``ni < nw``; the scheduler steps at
        the start of each epoch, so epoch ``e`` runs at ``lr0 * lf(e)``; momentum keeps its last
        warmup value, one step short of ``momentum``.

    Neither is Ultralytics 8.3.0 to 8.4.102, which warms up as ``"yolov5"`` (the floor of 100,
    ``ni <= nw``) but runs epoch ``e`` at ``lr0 * lf(e)`` as ``"ultralytics"``, nor 8.4.183 and
    later, which warms up for the ``"ultralytics"`` ``nw`` while ``ni <= nw``, so momentum
    reaches ``momentum``. ``notebooks/CHEATSHEET.md`` lists the versions.

    Beyond the references, Adam's beta1 follows the momentum curve (they warm SGD's only). With
    AdamW, Ultralytics' ``optimizer="auto"`` also sets ``warmup_bias_lr=0``: pass it likewise.

    Example:
        >>> s = YoloSchedule("ultralytics")
        >>> s.warmup_iterations(nb=10, epochs=100), YoloSchedule("yolov5").warmup_iterations(nb=10, epochs=100)
        (30, 100)
    """

    profile: str = "yolov5"
    lrf: float = 0.01
    cos: bool = False
    warmup_epochs: float = 3.0
    warmup_bias_lr: float = 0.1
    warmup_momentum: float = 0.8
    momentum: float = 0.937

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {list(PROFILES)}")
        _number(self.lrf, "lrf", 0.0, 1.0)
        _number(self.warmup_epochs, "warmup_epochs", 0.0)
        _number(self.warmup_bias_lr, "warmup_bias_lr", 0.0)
        _number(self.warmup_momentum, "warmup_momentum", 0.0, 1.0)
        _number(self.momentum, "momentum", 0.0, 1.0)

    def warmup_iterations(self, nb: int, epochs: int) -> int:
        """``nw``, the number of warmup iterations for ``epochs`` epochs of ``nb`` batches."""
        if self.profile == "yolov5":
            return max(round(self.warmup_epochs * nb), 100)
        return round(min(self.warmup_epochs, max(epochs - 1, 0)) * nb)

    def lf(self, epoch: int, epochs: int) -> float:
        """The per-epoch LR factor (1 at epoch 0, falling towards ``lrf`` at ``epochs``)."""
        if self.cos:
            return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (self.lrf - 1) + 1
        return max(1 - epoch / epochs, 0) * (1.0 - self.lrf) + self.lrf

    def last_warmup(self, nb: int, epochs: int) -> int:
        """The last iteration of warmup (-1: none): ``nw`` for ``"yolov5"`` (``ni <= nw``), else ``nw - 1``."""
        nw = self.warmup_iterations(nb, epochs)
        return nw if self.profile == "yolov5" else nw - 1

    def check(self, nb: int, epochs: int) -> None:
        _check_run(nb, epochs)
        nw, n = self.warmup_iterations(nb, epochs), nb * epochs
        if self.last_warmup(nb, epochs) >= n:
            raise ValueError(f"the 'yolov5' profile warms up for nw = max(round({self.warmup_epochs} * {nb}), 100) "
                             f"= {nw} iterations, but the run has only {n} ({epochs} epochs x {nb} batches), so "
                             f"the LR would never reach lr0: train at least {nw + 1} iterations, or use "
                             f"profile='ultralytics' (no 100-iteration floor, warmup shorter than the run)")

    def lr_at(self, ni: int, lr0: float, tag: str, nb: int, epochs: int) -> float:
        last = self.last_warmup(nb, epochs)
        if ni > last >= 0 and ni // nb == last // nb:
            ni = last  # the last warmup value holds until the scheduler's next step
        epoch = ni // nb
        if ni > last:  # the per-epoch LambdaLR's value
            return lr0 * self.lf(epoch - 1 if self.profile == "yolov5" else epoch, epochs)
        start = self.warmup_bias_lr if tag == "bias" else 0.0
        return float(np.interp(ni, [0, self.warmup_iterations(nb, epochs)], [start, lr0 * self.lf(epoch, epochs)]))

    def momentum_at(self, ni: int, nb: int, epochs: int) -> float:
        last = self.last_warmup(nb, epochs)
        if last < 0:
            return self.momentum
        xi = [0, self.warmup_iterations(nb, epochs)]
        return float(np.interp(min(ni, last), xi, [self.warmup_momentum, self.momentum]))


@dataclass(frozen=True)
class CosineWarmup(Schedule):
    """Linear warmup from 0 to ``lr0`` over ``warmup_epochs``, then cosine decay to ``lrf * lr0``, per iteration.

    As Hugging Face's ``get_cosine_schedule_with_warmup`` (with ``lrf=0``): ``lr0 * ni / nw``
    while ``ni < nw``, then ``lr0 * (lrf + (1 - lrf) * (1 + cos(pi * p)) / 2)`` with
    ``p = (ni - nw) / (n - nw)``. Momentum stays at ``momentum``.

    Example:
        >>> CosineWarmup(warmup_epochs=1).lr_at(5, 0.1, "weight", nb=10, epochs=5)
        0.05
    """

    warmup_epochs: float = 1.0
    lrf: float = 0.0
    momentum: float = 0.937

    def __post_init__(self):
        _number(self.warmup_epochs, "warmup_epochs", 0.0)
        _number(self.lrf, "lrf", 0.0, 1.0)
        _number(self.momentum, "momentum", 0.0, 1.0)

    def warmup_iterations(self, nb: int, epochs: int) -> int:
        return round(self.warmup_epochs * nb)

    def check(self, nb: int, epochs: int) -> None:
        _check_run(nb, epochs)
        nw, n = self.warmup_iterations(nb, epochs), nb * epochs
        if nw >= n:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} is {nw} iterations, as long as the whole run "
                             f"({n}): choose warmup_epochs < epochs={epochs}")

    def lr_at(self, ni: int, lr0: float, tag: str, nb: int, epochs: int) -> float:
        nw, n = self.warmup_iterations(nb, epochs), nb * epochs
        if ni < nw:
            return lr0 * ni / nw
        p = (ni - nw) / max(1, n - nw)
        return lr0 * (self.lrf + (1 - self.lrf) * (1 + math.cos(math.pi * p)) / 2)

    def momentum_at(self, ni: int, nb: int, epochs: int) -> float:
        return self.momentum


@dataclass(frozen=True)
class OneCycle(Schedule):
    """fastai's one-cycle: LR from ``lr0 / div`` up to ``lr0`` over ``pct_start`` of the run, then down
    to ``lr0 / div_final``, cosine in both phases; momentum ``moms[0] -> moms[1] -> moms[2]``.

    ``lr0`` is each group's initial LR (the peak). Steps are placed as torch's ``OneCycleLR``
    (``three_phase=False``, ``anneal_strategy="cos"``) places them: the peak at iteration
    ``pct_start * n - 1`` and the final value at the last iteration, so :meth:`torch_scheduler`
    returns that scheduler with the same values (fastai reaches the peak one iteration later).

    Example:
        >>> round(OneCycle().lr_at(0, 0.025, "weight", nb=10, epochs=4), 12)  # lr0 / 25
        0.001
    """

    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95)

    def __post_init__(self):
        _number(self.pct_start, "pct_start", 0.0, 1.0, lo_open=True)
        _number(self.div, "div", 1.0)
        _number(self.div_final, "div_final", 1.0)
        if not isinstance(self.moms, (tuple, list)) or len(self.moms) != 3:
            raise ValueError(f"moms must be three momentums (start, middle, end), got {self.moms!r}")
        for m in self.moms:
            _number(m, "each of moms", 0.0, 1.0)

    def warmup_iterations(self, nb: int, epochs: int) -> int:
        return math.ceil(self.pct_start * nb * epochs - 1)

    def check(self, nb: int, epochs: int) -> None:
        _check_run(nb, epochs)
        n = nb * epochs
        if not 1 < self.pct_start * n < n:
            raise ValueError(f"one-cycle needs its rising phase (pct_start * iterations = {self.pct_start * n:g}) "
                             f"to be more than 1 iteration and shorter than the run ({n}): train longer or "
                             f"change pct_start")

    def _phase(self, ni: int, n: int) -> tuple[int, float]:
        """The phase (0 rising, 1 falling) and the cosine position in it, as torch's OneCycleLR."""
        peak = float(self.pct_start * n) - 1
        if ni <= peak:
            return 0, ni / peak
        return 1, (ni - peak) / (n - 1 - peak)

    @staticmethod
    def _cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def lr_at(self, ni: int, lr0: float, tag: str, nb: int, epochs: int) -> float:
        phase, pct = self._phase(ni, nb * epochs)
        start, peak, end = lr0 / self.div, lr0, lr0 / self.div_final
        return self._cos(start, peak, pct) if phase == 0 else self._cos(peak, end, pct)

    def momentum_at(self, ni: int, nb: int, epochs: int) -> float:
        phase, pct = self._phase(ni, nb * epochs)
        return self._cos(*self.moms[phase:phase + 2], pct)

    def torch_scheduler(self, optimizer: torch.optim.Optimizer, nb: int, epochs: int) -> LRScheduler:
        """torch's own ``OneCycleLR`` with these settings (LR and momentum), stepped once per batch.

        ``OneCycleLR`` rewrites each group's ``initial_lr`` to ``lr0 / div``: take a :meth:`preview` first.
        """
        self.check(nb, epochs)
        if self.moms[0] != self.moms[2]:
            raise ValueError("torch's OneCycleLR ends at its starting momentum: use moms with moms[0] == moms[2]")
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g.get("initial_lr", g["lr"]) for g in optimizer.param_groups],
            total_steps=nb * epochs, pct_start=self.pct_start, anneal_strategy="cos", three_phase=False,
            div_factor=self.div, final_div_factor=self.div_final / self.div,
            base_momentum=self.moms[1], max_momentum=self.moms[0])
