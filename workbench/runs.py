"""Several seeded runs side by side: pretrained against scratch, frozen and staged, on the same data.

A :class:`Run` is a name, how to build its starting model, and its ``fit`` options;
:func:`run_all` trains a list of them one after another, each model built under the same seed.
:func:`lesson_run` makes the lessons' four runs from a source and a builder; :func:`paired_runs`
trains several of them. No widgets here: panels, experiments, notebooks and tests call it alike.

Example:
    >>> from workbench import build_model
    >>> run = lesson_run("staged", build_model(nc=10), lambda nc: build_model(nc=nc), 3, depth=9, unfreeze_at=2)
    >>> run.name, run.options
    ('staged', {'freeze': {0: 9, 2: 0}})
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .checkpoints import pretrained
from .models import build_model
from .training import Freeze, History, fit
from .transfer import transfer

RUNS = ("pretrained", "scratch", "frozen", "staged")


@dataclass(frozen=True)
class Run:
    """One run: its ``name``, ``build()`` -> its starting model, and the ``fit`` options it adds.

    Example:
        >>> run = Run("tiny", lambda: nn.Linear(2, 2), {"epochs": 1})
        >>> isinstance(run.start(seed=0), nn.Linear), run.options
        (True, {'epochs': 1})
    """

    name: str
    build: Callable[[], nn.Module]
    options: Mapping = field(default_factory=dict)

    def start(self, seed: int = 0) -> nn.Module:
        """The starting model, built under ``seed`` (so that every run of a comparison starts alike)."""
        torch.manual_seed(seed)
        return self.build()


def run_all(runs: Iterable[Run], train, val=None, *, seed: int = 0,
            callback: Callable[[str, History], None] | None = None, stop=None, models: dict | None = None,
            histories: dict | None = None, **fit_options) -> dict[str, History]:
    """Train every run on the same data and seed, one after another; ``{run name: History}``.

    ``fit_options`` are shared by every run (a run's own ``options`` win); ``models`` collects the
    trained models; ``callback(name, history)`` after every step; a set ``stop`` (a
    ``threading.Event``) ends the current run and skips the rest.

    Example:
        >>> from workbench import build_model, data
        >>> train = data.shapes(2, ["circle", "square"], seed=0)
        >>> runs = [Run(n, lambda: build_model(nc=2), {"lr": lr}) for n, lr in (("low", 1e-4), ("high", 1e-2))]
        >>> {name: h.step for name, h in run_all(runs, train, epochs=1, batch_size=4).items()}
        {'low': 1, 'high': 1}
    """
    histories = {} if histories is None else histories
    for run in runs:
        if stop is not None and stop.is_set():
            break
        model = run.start(seed)
        if models is not None:
            models[run.name] = model
        histories[run.name] = History()
        step = (lambda h, name=run.name: callback(name, h)) if callback is not None else None
        fit(model, train, val, **{"progress": False, **fit_options, **run.options}, seed=seed, callback=step,
            stop=stop, history=histories[run.name])
    return histories


def default_source() -> nn.Module:
    """The shipped pretrained model (``workbench.pretrained("shapes_n")``), or a ValueError naming the way out."""
    try:
        return pretrained("shapes_n")
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"the shipped weights are not available ({err}): pass source=, a model or a state_dict"
                         ) from err


def default_build(source) -> Callable[[int], nn.Module]:
    """``nc -> model``: a workbench model of the source's scale, task and input channels."""
    if not all(hasattr(source, a) for a in ("scale", "task", "ch")):
        raise ValueError("pass build=, a function nc -> a fresh target model (e.g. lambda nc: MyNet(num_classes=nc)):"
                         " the source is not a workbench model, so the target cannot be built from it")
    return lambda nc: build_model(source.scale, source.task, nc=nc, ch=source.ch)


def lesson_run(name: str, source, build: Callable[[int], nn.Module], nc: int, *, depth: int = 0,
               unfreeze_at: int = 1, bn: str = "eval") -> Run:
    """One of the lessons' runs on an ``nc``-class target built by ``build(nc)``.

    ``pretrained``: the source's weights (:func:`workbench.transfer`), everything trains.
    ``scratch``: fresh initialisation. ``frozen``: pretrained with layers ``0..depth-1`` frozen
    throughout. ``staged``: frozen like that until epoch ``unfreeze_at``, then everything trains.
    ``bn`` is the BatchNorm policy of the frozen layers (:class:`~workbench.training.Freeze`).
    """
    if name not in RUNS:
        raise ValueError(f"unknown run {name!r}; choose from {list(RUNS)}")

    def start() -> nn.Module:
        model = build(nc)
        if name != "scratch":
            transfer(source, model)
        return model

    schedule = {"frozen": {0: depth}, "staged": {0: depth, unfreeze_at: 0}}.get(name)
    if schedule is None:
        return Run(name, start)
    return Run(name, start, {"freeze": schedule if bn == "eval" else Freeze(schedule, bn=bn)})


def setup_run(name: str, source, build: Callable[[int], nn.Module], nc: int, *, depth: int = 0,
              unfreeze_at: int = 1, seed: int = 0) -> tuple[nn.Module, dict]:
    """:func:`lesson_run`'s starting model (built under ``seed``) and its ``fit`` options.

    Example:
        >>> from workbench import build_model
        >>> model, options = setup_run("frozen", build_model(nc=10), lambda nc: build_model(nc=nc), 3, depth=4)
        >>> options
        {'freeze': {0: 4}}
    """
    run = lesson_run(name, source, build, nc, depth=depth, unfreeze_at=unfreeze_at)
    return run.start(seed), dict(run.options)


def paired_runs(train, val, *, source, build: Callable[[int], nn.Module], runs: Sequence[str] = RUNS[:3],
                nc: int | None = None, depth: int = 0, unfreeze_at: int = 1, bn: str = "eval", epochs: int = 3,
                batch_size: int = 16, seed: int = 0, **options) -> dict[str, History]:
    """:func:`run_all` over the lessons' runs named in ``runs``; ``options`` go to :func:`run_all`."""
    nc = nc if nc is not None else getattr(train, "nc", None)
    if nc is None:
        raise ValueError("pass nc=<number of classes>: the training data has no class list to count")
    chosen = [lesson_run(name, source, build, nc, depth=depth, unfreeze_at=unfreeze_at, bn=bn) for name in runs]
    return run_all(chosen, train, val, seed=seed, epochs=epochs, batch_size=batch_size, **options)
