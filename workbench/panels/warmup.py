"""The warmup panel: YOLO's warmup settings and an iteration scrubber -> every group's LR and momentum.

Example:
    >>> panel = WarmupPanel(epochs=5, nb=40, iteration=0)
    >>> panel.at()["bias"], panel.at()["weight"]  # (lr, momentum) of each group at the scrubbed iteration
    ((0.1, 0.8), (0.0, 0.8))
"""
from __future__ import annotations

import html
from collections.abc import Iterable

import ipywidgets as widgets
import plotly.graph_objects as go
from torch import nn

from ..i18n import N_, _, labels
from ..models import build_model
from ..optim import param_groups
from ..plots import lr_curves
from ..schedules import PROFILES, Preview, YoloSchedule
from ..table import Table
from ..training import History
from .base import STYLE, Panel, keep_state, live_figure, refresh_figure

GROUP_TABLE = (N_("group"), N_("parameters"), "lr", N_("momentum"))


class WarmupPanel(Panel):
    """lr0, warmup epochs, ``warmup_bias_lr``, a head LR multiplier and the profile -> the curves of every group.

    The groups are :func:`~workbench.optim.param_groups` of ``model`` (``lr_mult={"head": head_mult}``),
    the curves :meth:`YoloSchedule.preview` over ``epochs`` epochs of ``nb`` batches; the scrubber
    (``iteration``) reads every group's LR and momentum at one iteration. A ``history`` adds
    the recorded curves of a run.

    What to look for: during warmup the bias LR falls from ``warmup_bias_lr`` while the others
    rise from 0; momentum rises from 0.8 to 0.937; the ``yolov5`` profile warms up for at least
    100 iterations; a head multiplier lifts only the head's groups.
    """

    CONTROLS = ("lr0", "warmup_epochs", "warmup_bias_lr", "head_mult", "profile", "epochs", "nb", "iteration")

    def __init__(self, model: nn.Module | None = None, *, lr0: float = 0.01, warmup_epochs: float = 3.0,
                 warmup_bias_lr: float = 0.1, head_mult: float = 1.0, profile: str = "yolov5", epochs: int = 10,
                 nb: int = 50, iteration: int = 0, history: History | None = None, seed: int = 0,
                 hide: Iterable[str] = ()):
        self.model = model if model is not None else build_model()
        self.history = history
        slider = dict(style=STYLE, continuous_update=False)
        self.lr0 = widgets.FloatLogSlider(value=lr0, base=10, min=-4, max=0, step=0.1, description="lr0",
                                          readout_format=".4f", **slider)
        self.warmup_epochs = widgets.FloatSlider(value=warmup_epochs, min=0, max=10, step=0.5,
                                                 description=_("warmup epochs"), **slider)
        self.warmup_bias_lr = widgets.FloatSlider(value=warmup_bias_lr, min=0, max=0.3, step=0.01,
                                                  description="warmup_bias_lr", **slider)
        self.head_mult = widgets.FloatSlider(value=head_mult, min=1, max=20, step=0.5, description=_("head LR x"),
                                             **slider)
        self.profile = widgets.Dropdown(options=PROFILES, value=profile, description=_("profile"), style=STYLE)
        self.epochs = widgets.BoundedIntText(value=epochs, min=1, max=1000, description=_("epochs"), style=STYLE,
                                             layout=widgets.Layout(width="150px"))
        self.nb = widgets.BoundedIntText(value=nb, min=1, max=10_000, description=_("batches/epoch"), style=STYLE,
                                         layout=widgets.Layout(width="190px"))
        self.iteration = widgets.IntSlider(value=iteration, min=0, max=max(epochs * nb - 1, iteration),
                                           description=_("iteration"), style=STYLE, continuous_update=True,
                                           layout=widgets.Layout(width="95%"))
        self.message = widgets.HTML()
        self.table = widgets.HTML()
        self.preview: Preview | None = None
        self.figure = None
        self._update()
        for control in (self.lr0, self.warmup_epochs, self.warmup_bias_lr, self.head_mult, self.profile,
                        self.epochs, self.nb):
            control.observe(self._update, names="value")
        self.iteration.observe(self._scrub, names="value")
        rows = [widgets.HBox([self.lr0, self.head_mult]), widgets.HBox([self.warmup_epochs, self.warmup_bias_lr]),
                widgets.HBox([self.profile, self.epochs, self.nb]), self.iteration]
        self._finish([*rows, self.message, self.table, self.figure], seed, hide)

    def schedule(self) -> YoloSchedule:
        return YoloSchedule(self.profile.value, warmup_epochs=self.warmup_epochs.value,
                            warmup_bias_lr=self.warmup_bias_lr.value)

    def groups(self) -> list[dict]:
        mult = {"head": self.head_mult.value} if self.head_mult.value != 1 else None
        return param_groups(self.model, self.lr0.value, lr_mult=mult)

    def _update(self, change=None) -> None:
        n = self.epochs.value * self.nb.value
        try:
            groups = self.groups()
            preview = self.schedule().preview(groups, nb=self.nb.value, epochs=self.epochs.value)
        except ValueError as err:
            shown = _("the figure shows the last valid settings") if self.figure is not None else _("no preview yet")
            self.message.value = (f"<span style='color:#b00'>{html.escape(str(err), quote=False)}</span> "
                                  f"({shown})")
            if self.figure is None:  # the first settings are already invalid: an empty figure until they are fixed
                self.figure = live_figure(go.Figure(layout=dict(title=_("no preview: change the settings above"),
                                                                height=460)))
            return
        self.message.value = ""
        self.preview = preview
        self._sizes = {g["name"]: sum(p.numel() for p in g["params"]) for g in groups}
        self.iteration.max = n - 1  # clamps the value, which calls _scrub
        fig = lr_curves(preview, self.history, at=self.iteration.value)
        if self.figure is None:
            self.figure = live_figure(fig)
        else:
            refresh_figure(self.figure, fig)
        self._scrub()

    def at(self, iteration: int | None = None) -> dict[str, tuple[float, float]]:
        """Every group's ``(lr, momentum)`` at ``iteration`` (default: the scrubber's), from the preview."""
        i = self.iteration.value if iteration is None else iteration
        return {name: (round(float(lr[i]), 10), round(float(self.preview.momentum[name][i]), 10))
                for name, lr in self.preview.lr.items()}

    def _scrub(self, change=None) -> None:
        if self.preview is None or self.figure is None:
            return
        i = self.iteration.value
        with self.figure.batch_update():
            self.figure.layout.shapes[-1].update(x0=i, x1=i)
        keep_state(self.figure)
        self.table.value = self._table(i)

    def _table(self, i: int) -> str:
        preview, nb = self.preview, self.nb.value
        phase = _("warming up") if i <= self.schedule().last_warmup(nb, self.epochs.value) else _("after warmup")
        where = _("epoch {epoch} of {epochs}, batch {batch} of {nb}").format(  # counted from 1
            epoch=i // nb + 1, epochs=self.epochs.value, batch=i % nb + 1, nb=nb)
        head = _("<b>iteration {i}</b> ({where}): {phase} (warmup: {warmup} iterations)").format(
            i=i, where=where, phase=phase, warmup=preview.warmup)
        rows = [{"group": name, "parameters": self._sizes.get(name, 0), "lr": f"{lr:.6g}", "momentum": f"{m:.4f}"}
                for name, (lr, m) in self.at(i).items()]
        return f"<p>{head}</p>" + Table(GROUP_TABLE, rows, labels=labels(GROUP_TABLE))._repr_html_()
