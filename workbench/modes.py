"""Train and eval mode: :func:`eval_mode` runs a block in eval mode and gives every module its own mode back.

Restoring with ``model.train(was_training)`` would set every submodule to the model's mode,
undoing a module you had put in eval yourself; this remembers each module's mode.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode; every module gets its own train/eval mode back afterwards.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
        >>> _ = model[1].eval()
        >>> with eval_mode(model):
        ...     model.training
        False
        >>> model.training, model[1].training
        (True, False)
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
