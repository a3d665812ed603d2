"""Training panels: a live dashboard with Start and Stop, and paired runs on the same seed and data.

Training runs in a background thread so that Stop works while the notebook stays responsive:
``fit(..., stop=event)`` checks the event between steps, so a run ends cleanly after the
current step, and Start while a run is going starts nothing. Figures redraw from ``fit``'s
callback at most ``redraw_per_second`` times a second, and once more at the end. Tests and
scripts call ``panel.run(wait=True)`` (or ``panel.start(); panel.join()``).

Example:
    >>> from workbench import build_model, data
    >>> train = data.shapes(4, classes=2)
    >>> panel = TrainPanel(build_model(nc=2), train, epochs=1, batch_size=4)
    >>> panel.run(wait=True).status, panel.figure.data[0].y is not None
    ('completed', True)
"""
from __future__ import annotations

import copy
import html
from collections.abc import Iterable

import ipywidgets as widgets
from torch import nn

from ..i18n import _
from ..plots import training_dashboard
from ..run_labels import event_text, metrics_text, status_label
from ..training import History, fit
from .base import Panel, Throttle, Worker, live_figure, refresh_figure


class TrainPanel(Panel, Worker):
    """Start, Stop and Reset buttons over ``fit``, and a dashboard: loss, LR per group, per-layer gradient norms.

    ``model`` is trained in place (Reset restores the weights it had when the panel was made);
    ``fit_options`` go to :func:`~workbench.fit` (``schedule=``, ``freeze=``, ``clip=``, ...).
    Start after Stop continues the same run; raise ``epochs`` to train a finished run further.

    What to look for: the loss falls; the LR curves show the warmup; frozen layers are blank rows
    of the gradient heatmap; a run about to explode lights up the heatmap's last column.
    """

    CONTROLS = ("epochs", "batch_size")
    BUTTONS = ("start_button", "stop_button", "reset_button")

    def __init__(self, model: nn.Module, train, val=None, *, epochs: int = 3, batch_size: int = 16,
                 redraw_per_second: float = 2.0, seed: int = 0, hide: Iterable[str] = (), **fit_options):
        self._init_worker()
        self.model, self.train, self.val, self.fit_options = model, train, val, fit_options
        self._initial = copy.deepcopy(model.state_dict())
        self.redraw_per_second = redraw_per_second
        self.history: History | None = None
        self.redraws = 0
        self._make_run_controls(epochs, batch_size)
        self.status = widgets.HTML(_("ready: press Start"))
        self.figure = live_figure(training_dashboard(History()))
        buttons = widgets.HBox([self.start_button, self.stop_button, self.reset_button, self.epochs, self.batch_size])
        self._finish([buttons, self.status, self.figure], seed, hide)

    def start(self) -> bool:
        """Start (or continue) training in the background; returns False, starting nothing, while a run goes on
        or when the run already reached ``epochs``."""
        if self.running or self._finished():
            return False
        self._throttle = Throttle(self.redraw_per_second)
        self.batch_size.disabled = True  # a continued run must keep its batches
        self.status.value = _("training...")
        return self._launch(self._train)

    def _result(self) -> History | None:
        """``run()`` returns the History."""
        return self.history

    def reset(self) -> bool:
        """Restore the starting weights and forget the run (not while training)."""
        if self.running:
            return False
        self.model.load_state_dict(self._initial)
        self.history = None
        self.batch_size.disabled = False
        self.redraw()
        self.status.value = _("reset: press Start")
        return True

    def _train(self) -> None:
        self.history = fit(self.model, self.train, self.val, epochs=self.epochs.value,
                           batch_size=self.batch_size.value, seed=self.seed, progress=False, callback=self._step,
                           stop=self._stop, history=self.history, **self.fit_options)
        self.redraw()

    def _step(self, history: History) -> None:
        self.history = history
        if self._throttle.ready():
            self.redraw()

    def redraw(self) -> None:
        """Draw the dashboard from the History now (the callback calls this at a bounded rate)."""
        history = self.history or History()
        refresh_figure(self.figure, training_dashboard(history))
        self.redraws += 1
        val = metrics_text(history.val, digits=3)
        last = _(", loss {loss:.4f}").format(loss=history.loss[-1]) if history.loss else ""
        events = f" · {html.escape(event_text(history.events[-1][1]))}" if history.events and history.status in (
            "interrupted", "non_finite") else ""
        self.status.value = _("{status}: step {step}, epoch {epoch}").format(
            status=status_label(history.status), step=history.step, epoch=history.epochs_done) + last + (
            _(", ") + val if val else "") + events

    def _failed(self, err: BaseException) -> None:
        self.status.value = _("<span style='color:#b00'>training failed: {error}</span>").format(
            error=html.escape(repr(err), quote=False))
