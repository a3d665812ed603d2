"""The studio: fine-tune from pretrained weights and watch every layer, steering the freeze depth with a slider.

One figure (:func:`~workbench.plots.studio.studio_figure`): per layer, what the transfer gave
it, whether it is frozen, its gradient norms over the steps and how far its weights moved;
below, on one step axis, the total norm and clipping, every group's LR (preview and record), the
loss and validation metric, and the freeze depth over time. Moving ``depth`` during a run
changes the freeze depth at the next step boundary (``fit(freeze=callable)``); before a run it
previews what will be frozen. After a run, ``replay`` scrubs its steps at a human pace.

Example:
    >>> from workbench import build_model, data
    >>> train = data.shapes(4, classes=3)
    >>> studio = Studio(build_model(nc=3), train, epochs=1, batch_size=4)
    >>> studio.run(wait=True).status, studio.history.depth
    ('completed', [0, 0, 0])
"""
from __future__ import annotations

import copy
import html
import time
from collections.abc import Callable, Iterable

import ipywidgets as widgets
from torch import nn

from ..freezing import BN_POLICIES, set_freeze_depth
from ..i18n import _
from ..layers import numbered_layers
from ..monitor import snapshot, weight_drift
from ..optim import make_optimizer, param_groups
from ..plots.studio import history_until, layer_rows, studio_figure
from ..run_labels import event_text, metrics_text, status_label
from ..schedules import PROFILES, YoloSchedule
from ..training import Batches, Freeze, History, fit, pick_device
from .base import STYLE, Panel, Throttle, Worker, live_figure, refresh_figure
from .sources import starting_model

REDRAW_SHARE = 0.02  # redraws may take at most this share of the training time (the figure costs ~30 ms)
REPLAY_FRAMES = 60  # a replay shows about this many frames, whatever the run's length


class Studio(Panel, Worker):
    """Start, Stop and Reset over ``fit``, one live figure, the freeze-depth slider steering the run.

    Args:
        source: ``"shapes_n"`` (shipped weights), a checkpoint path, an ``nn.Module`` or a state_dict to
            transfer from, or ``None`` to train from scratch (see :func:`~workbench.panels.sources.starting_model`).
        train, val: the target data (an ``ImageSet`` or a DataLoader).
        model, build: the model to fine-tune (yours, trained in place), or ``nc -> model``.
        depth, bn: the freeze depth (layers ``0..depth-1``) and the BatchNorm policy of frozen layers.
        lr0, head_mult, profile, warmup_epochs, optimizer: SGD (or ``"adamw"``) over
            :func:`~workbench.param_groups` with the head's LR ``head_mult`` times the rest, under
            ``YoloSchedule(profile, warmup_epochs=...)``.
        epochs, batch_size, device, fit_options: for :func:`~workbench.fit` (``clip=``, ``amp=``, ...).

    What to look for: frozen layers are blank rows of the heatmap; unfreeze them and they light
    up at the step you moved the slider, marked on the depth timeline; transferred layers drift
    little, the re-initialised head a lot; the LR record follows its dashed preview.
    """

    CONTROLS = ("depth", "bn", "lr0", "head_mult", "profile", "epochs", "batch_size")
    BUTTONS = ("start_button", "stop_button", "reset_button")

    def __init__(self, source, train, val=None, *, model: nn.Module | None = None,
                 build: Callable[[int], nn.Module] | None = None, depth: int = 0, bn: str = "eval",
                 lr0: float = 0.01, head_mult: float = 1.0, profile: str = "ultralytics", warmup_epochs: float = 1.0,
                 epochs: int = 6, batch_size: int = 16, optimizer: str = "sgd", device: str = "auto",
                 redraw_per_second: float = 2.0, seed: int = 0, hide: Iterable[str] = (), **fit_options):
        self._init_worker()
        start = starting_model(source, train, model=model, build=build, seed=seed)
        self.model, self.report, self.source_text = start.model, start.report, start.describe
        self.train, self.val, self.fit_options = train, val, fit_options
        self.optimizer_name, self.warmup_epochs, self.device = optimizer, warmup_epochs, pick_device(device)
        self.redraw_per_second, self.rows = redraw_per_second, layer_rows(self.model)
        self._initial, self.start_weights = copy.deepcopy(self.model.state_dict()), snapshot(self.model)
        set_freeze_depth(self.model, depth, bn=bn)
        self.history: History | None = None
        self.drifts: dict[int, dict[str, float]] = {}  # step -> weight drift, taken at each redraw
        self.redraws, self.preview = 0, None
        self._make_controls(depth, bn, lr0, head_mult, profile, epochs, batch_size)
        self.figure = live_figure(studio_figure(self.rows, report=self.report, depth=depth, bn=bn))
        self._update_preview()
        self._finish([self._controls_box(), self.badge, self.status, self.figure, self._replay_box()], seed, hide)

    # ---------------------------------------------------------------- widgets
    def _make_controls(self, depth, bn, lr0, head_mult, profile, epochs, batch_size) -> None:
        n_layers = len(numbered_layers(self.model))
        slider = dict(style=STYLE, continuous_update=False)
        self.depth = widgets.IntSlider(value=depth, min=0, max=max(n_layers - 1, 0), description=_("freeze depth"),
                                       **slider)
        self.bn = widgets.Dropdown(options=BN_POLICIES, value=bn, description=_("BatchNorm"), style=STYLE,
                                   layout=widgets.Layout(width="180px"))
        self.lr0 = widgets.FloatLogSlider(value=lr0, base=10, min=-4, max=0, step=0.1, description="lr0",
                                          readout_format=".4f", **slider)
        self.head_mult = widgets.FloatSlider(value=head_mult, min=1, max=20, step=0.5, description=_("head LR x"),
                                             **slider)
        self.profile = widgets.Dropdown(options=PROFILES, value=profile, description=_("warmup"), style=STYLE,
                                        layout=widgets.Layout(width="200px"))
        self._make_run_controls(epochs, batch_size)
        amp = _(" with AMP") if self.device.type == "cuda" and self.fit_options.get("amp", True) else ""
        self._device_text = f"{self.device.type.upper()}{amp}"
        self.badge = widgets.HTML(self._badge_html())
        self.status = widgets.HTML(html.escape(_("{source} · press Start").format(source=self.source_text)))
        for control in (self.depth, self.bn, self.lr0, self.head_mult, self.profile, self.epochs, self.batch_size):
            control.observe(self._changed, names="value")

    def _controls_box(self) -> widgets.VBox:
        return widgets.VBox([
            widgets.HBox([self.start_button, self.stop_button, self.reset_button, self.epochs, self.batch_size]),
            widgets.HBox([self.depth, self.bn]), widgets.HBox([self.lr0, self.head_mult, self.profile])])

    def _replay_box(self) -> widgets.HBox:
        self.replay = widgets.Play(value=0, min=0, max=0, step=1, interval=150, description=_("replay"))
        self.frame = widgets.IntSlider(value=0, min=0, max=0, description=_("replay step"), style=STYLE,
                                       layout=widgets.Layout(width="60%"))
        widgets.jslink((self.replay, "value"), (self.frame, "value"))
        self.frame.observe(self._replay_frame, names="value")
        return widgets.HBox([self.replay, self.frame])

    def _badge_html(self, images_per_second: float | None = None) -> str:
        rate = _(" · {rate:,.0f} images/s").format(rate=images_per_second) if images_per_second else ""
        return (f"<span style='background:#eef;border-radius:4px;padding:2px 6px'>"
                f"{self._device_text}{rate}</span>")

    # ---------------------------------------------------------------- the run
    def batches_per_epoch(self) -> int:
        data = self.train
        return len(Batches(data, self.batch_size.value) if hasattr(data, "x") else data)

    def _groups(self) -> list[dict]:
        mult = {"head": self.head_mult.value} if self.head_mult.value != 1 else None
        return param_groups(self.model, self.lr0.value, lr_mult=mult)

    def _schedule(self) -> YoloSchedule:
        return YoloSchedule(self.profile.value, warmup_epochs=self.warmup_epochs)

    def _update_preview(self) -> None:
        """The LR curves ahead for the current controls (every group's, from the schedule's pure functions)."""
        run = self.history.run if self.history is not None else None
        groups = run.optimizer.param_groups if run is not None else self._groups()
        try:
            self.preview = self._schedule().preview(groups, self.batches_per_epoch(), self.epochs.value)
        except ValueError as err:
            self.preview = None
            self.status.value = f"<span style='color:#b00'>{html.escape(str(err), quote=False)}</span>"

    def _changed(self, change=None) -> None:
        """A control moved: before a run, preview it; during a run only ``depth`` acts (at the next step)."""
        if self.running:
            return
        if self.history is None:
            try:
                set_freeze_depth(self.model, self.depth.value, bn=self.bn.value)
            except ValueError as err:
                self.status.value = f"<span style='color:#b00'>{html.escape(str(err), quote=False)}</span>"
                return
        self._update_preview()
        self.redraw()

    def start(self) -> bool:
        """Start (or continue) training in the background; False, starting nothing, while a run goes on,
        when the run already reached ``epochs``, or when the settings cannot run (the status says why)."""
        if self.running or self._finished():
            return False
        self._update_preview()
        if self.preview is None:
            return False
        if self.history is None:
            mult = {"head": self.head_mult.value} if self.head_mult.value != 1 else None
            self._optimizer = make_optimizer(self.model, self.optimizer_name, lr=self.lr0.value, lr_mult=mult)
        for control in (self.bn, self.lr0, self.head_mult, self.profile, self.batch_size):
            control.disabled = True  # a running or continued run keeps them; the slider steers
        self._throttle = Throttle(self.redraw_per_second)
        self._clock = (time.perf_counter(), self.history.step if self.history is not None else 0)
        self.status.value = _("training...")
        return self._launch(self._train)

    def run(self, wait: bool = True) -> History | None:
        """Start, and with ``wait`` block until the run ends; returns the History."""
        self.start()
        if wait:
            self.join()
            if self.error is not None:
                raise self.error
        return self.history

    def reset(self) -> bool:
        """Restore the starting weights (after the transfer) and forget the run (not while training)."""
        if self.running:
            return False
        self.model.load_state_dict(self._initial)
        self.history, self.drifts = None, {}
        for control in (self.bn, self.lr0, self.head_mult, self.profile, self.batch_size):
            control.disabled = False
        self.frame.max = 0
        self._changed()
        self.status.value = html.escape(_("{source} · reset: press Start").format(source=self.source_text))
        return True

    def _train(self) -> None:
        optimizer = self._optimizer if self.history is None else "auto"  # a continued run resumes its own
        self.history = fit(self.model, self.train, self.val, epochs=self.epochs.value,
                           batch_size=self.batch_size.value, optimizer=optimizer, schedule=self._schedule(),
                           freeze=Freeze(lambda epoch, step: self.depth.value, bn=self.bn.value), seed=self.seed,
                           device=self.device, progress=False, callback=self._step, stop=self._stop,
                           history=self.history, **self.fit_options)
        self.redraw()
        self.frame.max = self.replay.max = self.history.step
        self.replay.step = max(1, self.history.step // REPLAY_FRAMES)
        self.frame.value = self.history.step

    def _step(self, history: History) -> None:
        self.history = history
        if self._throttle.ready():
            began = time.perf_counter()
            self.redraw()
            cost = time.perf_counter() - began  # keep drawing to a small share of the run
            self._throttle.interval = max(1.0 / self.redraw_per_second, cost / REDRAW_SHARE)

    def images_per_second(self) -> float | None:
        """Training images per second since Start (the batches' mean size times steps per second)."""
        if self.history is None or not getattr(self, "_clock", None):
            return None
        began, first = self._clock
        seconds, steps = time.perf_counter() - began, self.history.step - first
        images = getattr(self.train, "dataset", self.train)  # a DataLoader's length counts batches
        size = len(images) / self.batches_per_epoch() if hasattr(images, "__len__") else self.batch_size.value
        return steps * size / seconds if seconds > 0 and steps > 0 else None

    # ---------------------------------------------------------------- drawing
    def figure_at(self, step: int | None = None):
        """The studio's figure for the run after ``step`` steps (default: now), with the drift measured then."""
        history = self.history or History()
        if step is not None and step < history.step:
            history = history_until(history, step)
        depth = history.depth[-1] if history.depth and (self.running or step is not None) else self.depth.value
        taken = [k for k in self.drifts if k <= history.step]
        drift = self.drifts[max(taken)] if taken else None
        return studio_figure(self.rows, history, report=self.report, depth=depth, bn=self.bn.value,
                             preview=self.preview, drift=drift)

    def drift(self) -> dict[str, float]:
        """Per layer, ``||W - W0|| / ||W0||`` from the weights the run started with (after the transfer)."""
        return weight_drift(self.model, self.start_weights)

    def redraw(self) -> None:
        """Measure the weight drift and draw the figure now (the run's callback calls this at a bounded rate)."""
        history = self.history or History()
        self.drifts[history.step] = self.drift()
        refresh_figure(self.figure, self.figure_at())
        self.redraws += 1
        self.badge.value = self._badge_html(self.images_per_second())
        self.status.value = self._status_text(history)

    def _status_text(self, history: History) -> str:
        if history.status == "new":
            return html.escape(_("{source} · depth {depth}: press Start").format(source=self.source_text,
                                                                                  depth=self.depth.value))
        val = metrics_text(history.val, digits=3)
        loss = _(", loss {loss:.4f}").format(loss=history.loss[-1]) if history.loss else ""
        last = f" · {event_text(history.events[-1][1])}" if history.events else ""
        return html.escape(_("{status}: step {step}, epoch {epoch}").format(
            status=status_label(history.status), step=history.step, epoch=history.epochs_done) + loss
            + (_(", ") + val if val else "") + last)

    def _replay_frame(self, change=None) -> None:
        """The replay moved: draw the run as it was after that many steps (not while training)."""
        if self.running or self.history is None:
            return
        refresh_figure(self.figure, self.figure_at(self.frame.value))

    def _failed(self, err: BaseException) -> None:
        self.status.value = _("<span style='color:#b00'>training failed: {error}</span>").format(
            error=html.escape(repr(err), quote=False))
