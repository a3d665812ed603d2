"""What every panel shares: controls as attributes, lesson state, hidden controls, live figures, a worker thread.

A panel is a ``VBox`` whose controls are attributes named as the keyword arguments of its
constructor, so ``Panel.from_state(panel.state(), ...)`` rebuilds it and a test drives it by
setting ``.value`` or calling ``.click()``.

Example:
    >>> import plotly.graph_objects as go
    >>> widget = go.FigureWidget(go.Figure(go.Scatter(y=[1, 2])))
    >>> refresh_figure(widget, go.Figure(go.Scatter(y=[3, 4, 5])))
    >>> list(widget.data[0].y)
    [3, 4, 5]
"""
from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterable

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

STYLE = {"description_width": "initial"}  # slider descriptions are cut without it
_SKIP_LAYOUT = ("template",)  # the template never changes between two figures of one plot function


def _same(old, new) -> bool:
    """Whether two plotly property values are equal (arrays compared by value, NaN equal to NaN)."""
    if isinstance(old, dict) or isinstance(new, dict):
        return (isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys()
                and all(_same(old[k], new[k]) for k in new))
    if isinstance(old, (list, tuple, np.ndarray)) or isinstance(new, (list, tuple, np.ndarray)):
        try:
            a, b = np.asarray(old), np.asarray(new)
        except ValueError:  # ragged
            return False
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
            return bool(np.array_equal(a, b, equal_nan=True))
        return a.tolist() == b.tolist()
    return old == new


def _changes(old: dict, new: dict, skip: tuple[str, ...] = ()) -> dict:
    """The properties to set so that ``old`` becomes ``new``: changed ones, and ``None`` for those gone."""
    changed = {k: v for k, v in new.items() if k not in skip and not (k in old and _same(old[k], v))}
    changed.update({k: None for k in old if k not in new and k not in skip})
    return changed


def refresh_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Make a live ``FigureWidget`` show ``fig`` in one batch, sending only what changed.

    Traces are updated in place when their number and types match, otherwise replaced.
    """
    new = [trace.to_plotly_json() for trace in fig.data]
    same = len(widget.data) == len(new) and all(old.type == n["type"] for old, n in zip(widget.data, new))
    layout = _changes(widget.layout.to_plotly_json(), fig.layout.to_plotly_json(), _SKIP_LAYOUT)
    with widget.batch_update():
        if same:
            for old, n in zip(widget.data, new):
                changed = _changes(old.to_plotly_json(), n, ("uid", "type"))
                if changed:
                    old.update(changed, overwrite=True)
        else:
            widget.data = ()
            widget.add_traces(list(fig.data))
        if layout:
            widget.layout.update(layout, overwrite=True)
    keep_state(widget)


def keep_state(widget: go.FigureWidget) -> None:
    """Copy the widget's current figure into its synced state, as plotly does when it first displays one.

    Updates reach open views as messages; a view opened later (the panel shown again, the page
    reloaded) is drawn from the synced state, which would otherwise still hold the first figure.
    """
    widget._widget_data = copy.deepcopy(widget._data)
    widget._widget_layout = copy.deepcopy(widget._layout_obj._props)


def live_figure(fig: go.Figure) -> go.FigureWidget:
    """A ``FigureWidget`` showing ``fig`` (each sends plotly.js to the browser once: keep them few)."""
    return go.FigureWidget(fig)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


class Throttle:
    """``ready()`` is true at most ``per_second`` times a second: a live view redraws only then.

    Example:
        >>> throttle = Throttle(per_second=2.0)
        >>> throttle.ready(), throttle.ready()
        (True, False)
    """

    def __init__(self, per_second: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if not per_second > 0:
            raise ValueError(f"per_second must be > 0 (got {per_second!r})")
        self.interval, self.clock, self.last = 1.0 / per_second, clock, -float("inf")

    def ready(self) -> bool:
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


class Panel(widgets.VBox):
    """Base class: ``CONTROLS`` (value widgets, saved by :meth:`state`) and ``BUTTONS`` are attributes."""

    CONTROLS: tuple[str, ...] = ()
    BUTTONS: tuple[str, ...] = ()

    def _finish(self, children: list, seed: int, hide: Iterable[str]) -> None:
        """Subclasses call this at the end of ``__init__``."""
        self.seed = seed
        super().__init__(children)
        self.hidden: list[str] = []
        self.hide(hide)

    def hide(self, names: Iterable[str]) -> None:
        """Hide the named controls (``layout.display = "none"``): a locked-down exercise."""
        names = [names] if isinstance(names, str) else list(names)
        known = self.CONTROLS + self.BUTTONS
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"cannot hide {unknown}: {type(self).__name__}'s controls are {list(known)}")
        for name in names:
            getattr(self, name).layout.display = "none"
            if name not in self.hidden:
                self.hidden.append(name)

    def state(self) -> dict:
        """The lesson state as a JSON-able dict: the panel, its seed, every control value, the hidden controls."""
        state = {"panel": type(self).__name__, "seed": self.seed,
                 "controls": {name: _jsonable(getattr(self, name).value) for name in self.CONTROLS},
                 "hide": list(self.hidden)}
        json.dumps(state)  # fails loudly here, not when a teacher saves it
        return state

    @classmethod
    def from_state(cls, state: dict | str, *args, **kwargs) -> Panel:
        """Rebuild a panel from :meth:`state` (a dict or its JSON); ``args``/``kwargs`` are what the state
        cannot hold (the model, the data), as for the constructor."""
        state = json.loads(state) if isinstance(state, str) else state
        if state.get("panel", cls.__name__) != cls.__name__:
            raise ValueError(f"this state belongs to {state['panel']}, not {cls.__name__}: "
                             f"use {state['panel']}.from_state")
        controls = dict(state.get("controls", {}))
        unknown = [name for name in controls if name not in cls.CONTROLS]
        if unknown:
            raise ValueError(f"unknown controls {unknown} for {cls.__name__}; it has {list(cls.CONTROLS)}")
        return cls(*args, seed=state.get("seed", 0), hide=state.get("hide", ()), **controls, **kwargs)


class Worker:
    """A background thread with a stop event: Stop works while Jupyter stays responsive; start twice starts once."""

    def _init_worker(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _launch(self, target: Callable[[], None]) -> bool:
        if self.running:
            return False
        self._stop.clear()
        self.error = None

        def guarded():
            try:
                target()
            except Exception as err:  # shown in the panel; a thread's exception would vanish otherwise
                self.error = err
                self._failed(err)

        self._thread = threading.Thread(target=guarded, daemon=True, name=type(self).__name__)
        self._thread.start()
        return True

    def _failed(self, err: BaseException) -> None:
        """Show an error raised in the worker thread (subclasses override)."""

    def stop(self) -> None:
        """Ask the run to end after the current step (``fit`` checks the event between steps)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the run to finish (tests and scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _result(self):
        """What :meth:`run` returns (subclasses override)."""

    def run(self, wait: bool = True):
        """Start, and with ``wait`` block until the work ends and raise its error; returns the panel's result."""
        self.start()
        if wait:
            self.join()
            if self.error is not None:
                raise self.error
        return self._result()
