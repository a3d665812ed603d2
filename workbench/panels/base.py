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
import inspect
import json
import math
import threading
import time
from collections.abc import Callable, Iterable

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import traitlets

from ..i18n import _

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
        cannot hold (the model, the data), as for the constructor.

        A state with unknown keys, a value of the wrong type, or a value a control would clamp to its
        range is refused with a ``ValueError`` that names it, rather than rebuilt differently.
        """
        state = _parse_state(state, cls)
        controls = state["controls"]
        _check_types(cls, controls)
        try:
            panel = cls(*args, seed=state["seed"], hide=state["hide"], **controls, **kwargs)
        except traitlets.TraitError as err:
            raise ValueError(f"state['controls'] holds a value {cls.__name__} refuses ({err}); the controls given "
                             f"were {controls}: fix the value, or take a fresh state with panel.state()") from None
        for name, value in controls.items():
            _check_kept(panel, name, value)
        return panel


STATE_KEYS = ("panel", "seed", "controls", "hide")


def _parse_state(state, cls) -> dict:
    """The state as a dict with every key present, or a ValueError that names what is wrong."""
    if isinstance(state, (str, bytes)):
        try:
            state = json.loads(state)
        except ValueError as err:
            raise ValueError(f"state is not valid JSON ({err}): pass panel.state() or json.dumps(panel.state())") \
                from None
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict (or its JSON) as panel.state() gives, got {type(state).__name__}")
    unknown = [key for key in state if key not in STATE_KEYS]
    if unknown:
        raise ValueError(f"unknown state keys {unknown}; a panel state has {list(STATE_KEYS)}")
    if state.get("panel", cls.__name__) != cls.__name__:
        raise ValueError(f"this state belongs to {state['panel']}, not {cls.__name__}: use {state['panel']}.from_state")
    seed, controls, hide = state.get("seed", 0), state.get("controls", {}), state.get("hide", [])
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"state['seed'] must be an integer >= 0, got {seed!r}")
    if not isinstance(controls, dict):
        raise ValueError(f"state['controls'] must be a dict {{control: value}}, got {type(controls).__name__}")
    unknown = [name for name in controls if name not in cls.CONTROLS]
    if unknown:
        raise ValueError(f"unknown controls {unknown} for {cls.__name__}; it has {list(cls.CONTROLS)}")
    if isinstance(hide, str) or not isinstance(hide, (list, tuple)) or not all(isinstance(h, str) for h in hide):
        raise ValueError(f"state['hide'] must be a list of control names, got {hide!r}")
    return {"seed": seed, "controls": dict(controls), "hide": list(hide)}


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,),
          "Iterable": (list, tuple), "list": (list, tuple), "tuple": (list, tuple)}


def _check_types(cls, controls: dict) -> None:
    """Refuse a control value whose type the constructor's annotation does not allow (NaN and inf too)."""
    params = inspect.signature(cls.__init__).parameters
    for name, value in controls.items():
        annotation = params[name].annotation if name in params else inspect.Parameter.empty
        words = set(str(annotation).replace("[", " ").replace("]", " ").replace("|", " ").split())
        allowed = tuple({t for w in words for t in _TYPES.get(w, ())})
        if value is None and "None" in words or not allowed:
            continue
        if isinstance(value, bool) and bool not in allowed:
            allowed = ()
        if not isinstance(value, allowed) or isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"state['controls'][{name!r}] = {value!r} is not a valid {name} for {cls.__name__} "
                             f"(expected {annotation})")


def _check_kept(panel: Panel, name: str, value) -> None:
    """Refuse a numeric value that the control clamped to its range (a slider silently moves it)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    kept = getattr(panel, name).value
    if isinstance(kept, (int, float)) and not math.isclose(kept, value, rel_tol=1e-9, abs_tol=1e-12):
        widget = getattr(panel, name)
        lo, hi = getattr(widget, "min", None), getattr(widget, "max", None)
        if hasattr(widget, "base") and lo is not None:  # a log slider's bounds are exponents
            lo, hi = widget.base ** lo, widget.base ** hi
        bounds = f" (range {lo:g}..{hi:g})" if lo is not None and hi is not None else ""
        raise ValueError(f"state['controls'][{name!r}] = {value!r} is out of {type(panel).__name__}'s range for "
                         f"{name}{bounds}: the control would show {kept!r}; choose a value in range")


class Worker:
    """A background thread with a stop event: Stop works while Jupyter stays responsive; start twice starts once."""

    def _init_worker(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _finished(self) -> bool:
        """Whether the run already reached ``epochs`` (the status then says how to go on)."""
        history = getattr(self, "history", None)
        if history is not None and history.status == "completed" and history.epochs_done >= self.epochs.value:
            self.status.value = _("finished {n} epochs: raise epochs to train further, or Reset").format(
                n=history.epochs_done)
            return True
        return False

    def _make_run_controls(self, epochs: int, batch_size: int) -> None:
        """``epochs`` and ``batch_size`` boxes and the Start / Stop / Reset buttons, wired to the panel's methods."""
        self.epochs = widgets.BoundedIntText(value=epochs, min=1, max=10_000, description=_("epochs"), style=STYLE,
                                             layout=widgets.Layout(width="150px"))
        self.batch_size = widgets.BoundedIntText(value=batch_size, min=1, max=100_000, description=_("batch size"),
                                                 style=STYLE, layout=widgets.Layout(width="170px"))
        self.start_button = widgets.Button(description=_("Start"), button_style="success", icon="play")
        self.stop_button = widgets.Button(description=_("Stop"), button_style="danger", icon="stop")
        self.reset_button = widgets.Button(description=_("Reset"), icon="undo")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button.on_click(lambda _: self.reset())

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
