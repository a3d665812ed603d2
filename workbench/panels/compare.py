"""Paired runs in a panel: pretrained against scratch, frozen and staged, curves overlaid as they train.

The runs themselves are :func:`workbench.runs.paired_runs` (no widgets); :class:`ComparePanel`
trains them in the background and redraws at a bounded rate.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Iterable

import ipywidgets as widgets
from torch import nn

from ..i18n import N_, _, labels
from ..layers import numbered_layers
from ..plots import compare_runs
from ..run_labels import status_label
from ..runs import RUNS, default_build, default_source, paired_runs
from ..table import Table
from ..training import History
from .base import STYLE, Panel, Throttle, Worker, live_figure, refresh_figure

RUN_TABLE = (N_("run"), N_("status"), N_("steps"), N_("last loss"), N_("val accuracy"), N_("best"),
             N_("trainable at end"), N_("seconds"))


class ComparePanel(Panel, Worker):
    """Pretrained vs scratch vs frozen (and staged) on the same seed and data, curves overlaid as they train.

    ``source`` defaults to ``workbench.pretrained("shapes_n")``; pass a model or a state_dict
    otherwise, and ``build`` (``nc -> model``) for a model the workbench did not define.

    What to look for: the pretrained runs start lower and reach a higher accuracy in the first
    epochs; the frozen run trains fewer parameters yet keeps up on small data; the staged run
    jumps when it unfreezes.
    """

    CONTROLS = ("runs", "epochs", "batch_size", "depth", "unfreeze_at")
    BUTTONS = ("run_button", "stop_button")

    def __init__(self, train, val=None, *, source=None, build: Callable[[int], nn.Module] | None = None,
                 nc: int | None = None, runs: Iterable[str] = RUNS[:3], epochs: int = 3, batch_size: int = 16,
                 depth: int | None = None, unfreeze_at: int = 1, redraw_per_second: float = 2.0, seed: int = 0,
                 hide: Iterable[str] = (), **fit_options):
        self._init_worker()
        self.source = default_source() if source is None else source
        self.build = build or default_build(self.source)
        self.train, self.val, self.nc, self.fit_options = train, val, nc, fit_options
        self.redraw_per_second = redraw_per_second
        self.histories: dict[str, History] = {}
        self.models: dict[str, nn.Module] = {}
        self.redraws = 0
        n_layers = len(numbered_layers(self.build(nc or getattr(train, "nc", 2))))
        self.runs = widgets.SelectMultiple(options=RUNS, value=tuple(runs), description=_("runs"), style=STYLE, rows=4)
        self.epochs = widgets.BoundedIntText(value=epochs, min=1, max=1000, description=_("epochs"), style=STYLE,
                                             layout=widgets.Layout(width="150px"))
        self.batch_size = widgets.BoundedIntText(value=batch_size, min=1, max=100_000, description=_("batch size"),
                                                 style=STYLE, layout=widgets.Layout(width="170px"))
        self.depth = widgets.IntSlider(value=n_layers - 1 if depth is None else depth, min=0, max=n_layers - 1,
                                       description=_("freeze depth (frozen, staged)"), style=STYLE)
        self.unfreeze_at = widgets.BoundedIntText(value=unfreeze_at, min=1, max=1000, style=STYLE,
                                                  description=_("staged: unfreeze at epoch"),
                                                  layout=widgets.Layout(width="230px"))
        self.run_button = widgets.Button(description=_("Run"), button_style="success", icon="play")
        self.stop_button = widgets.Button(description=_("Stop"), button_style="danger", icon="stop")
        self.status = widgets.HTML(_("press Run"))
        self.table = widgets.HTML()
        self.figure = live_figure(compare_runs({name: History() for name in self.runs.value} or {"": History()}))
        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        rows = [widgets.HBox([self.runs, widgets.VBox([self.depth, self.unfreeze_at,
                                                       widgets.HBox([self.epochs, self.batch_size])])]),
                widgets.HBox([self.run_button, self.stop_button])]
        self._finish([*rows, self.status, self.figure, self.table], seed, hide)

    def start(self) -> bool:
        """Train the selected runs in the background; returns False, starting nothing, while runs go on."""
        if self.running:
            return False
        self._throttle = Throttle(self.redraw_per_second)
        self.histories, self.models = {}, {}
        self.status.value = _("training...")
        return self._launch(self._train)

    def _result(self) -> dict[str, History]:
        """``run()`` returns ``{run: History}``."""
        return self.histories

    def _train(self) -> None:
        paired_runs(self.train, self.val, source=self.source, build=self.build, runs=self.runs.value, nc=self.nc,
                    depth=self.depth.value, unfreeze_at=self.unfreeze_at.value, epochs=self.epochs.value,
                    batch_size=self.batch_size.value, seed=self.seed, callback=self._step, stop=self._stop,
                    models=self.models, histories=self.histories, **self.fit_options)
        self.redraw()

    def _step(self, run: str, history: History) -> None:
        if self._throttle.ready():
            self.redraw()

    def redraw(self) -> None:
        """Overlay the runs' curves now (the callback calls this at a bounded rate)."""
        if not self.histories:
            return
        refresh_figure(self.figure, compare_runs(dict(self.histories)))
        self.redraws += 1
        self.table.value = self._table()
        going = [n for n, h in self.histories.items() if h.status == "running"]
        self.status.value = _("training {run}...").format(run=going[0]) if going else _("done: ") + _(", ").join(
            f"{n} {status_label(h.status)}" for n, h in self.histories.items())

    def _table(self) -> str:
        rows = []
        for name, history in self.histories.items():
            accuracy = history.val.get("accuracy", [])
            model = self.models.get(name)
            rows.append({"run": name, "status": status_label(history.status), "steps": history.step,
                         "last loss": f"{history.loss[-1]:.4f}" if history.loss else None,
                         "val accuracy": f"{accuracy[-1]:.3f}" if accuracy else None,
                         "best": f"{max(accuracy):.3f}" if accuracy else None,
                         "trainable at end": sum(p.numel() for p in model.parameters() if p.requires_grad)
                         if model is not None else 0, "seconds": f"{history.seconds:.1f}"})
        return Table(RUN_TABLE, rows, labels=labels(RUN_TABLE))._repr_html_()

    def _failed(self, err: BaseException) -> None:
        self.status.value = _("<span style='color:#b00'>training failed: {error}</span>").format(
            error=html.escape(repr(err), quote=False))
