"""What resuming a run needs beyond its History, and the check that a resumed ``fit`` does not change the run.

``fit`` keeps a :class:`RunState` in ``History.run``: the optimiser and AMP scaler with their
state, and the settings (batch size, seed, number of training images, the optimiser asked for)
that continuing the run must keep. Passing the History back to ``fit`` continues with them;
a call that asks for other settings is refused with a message, never silently ignored.

Example:
    >>> import torch

from .fit_options import Optim
    >>> state = RunState(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), None,
    ...                  Optim("sgd", lr=0.1), batch_size=16, train_size=96, seed=0)
    >>> try:
    ...     check_resume(state, DEFAULT_ASKED, batch_size=8, train_size=96, seed=0)
    ... except ValueError as refused:
    ...     print(str(refused)[:60])
    history= continues a run with batch_size 16, but this call h
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .fit_options import Optim


@dataclass
class RunState:
    """What continuing a run needs beyond its record: the optimiser and AMP scaler with their state,
    and the settings a resumed ``fit`` must not change (``fit`` refuses a call that changes them)."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    optimizer_asked: Optim | torch.optim.Optimizer  # what fit was asked for
    batch_size: int
    train_size: int | None
    seed: int


DEFAULT_ASKED = Optim()  # fit's optimiser default: a resumed call that leaves it out keeps the run's own


def describe(asked: Optim | torch.optim.Optimizer) -> str:
    return repr(asked) if isinstance(asked, Optim) else f"the {type(asked).__name__} optimizer object passed in"


def check_resume(run: RunState | None, asked: Optim | torch.optim.Optimizer, batch_size: int,
                 train_size: int | None, seed: int) -> None:
    """Refuse to continue a run with settings that would change it under the History's feet."""
    if run is None:
        return
    if asked is not run.optimizer_asked and asked != DEFAULT_ASKED and asked != run.optimizer_asked:
        raise ValueError(f"history= continues a run that used {describe(run.optimizer_asked)}, but this call asks "
                         f"for {describe(asked)}: a resumed run keeps its optimizer and its state, so leave out "
                         f"optimizer= and lr= (or pass them as before), or start a new run "
                         f"without history=")
    for name, before, now in (("batch_size", run.batch_size, batch_size), ("seed", run.seed, seed),
                              ("the number of training images", run.train_size, train_size)):
        if before != now:
            raise ValueError(f"history= continues a run with {name} {before}, but this call has {now}: resuming "
                             f"mid-epoch would re-train or skip images. Pass the same {name}, or start a new run "
                             f"without history=")


