"""Mini-batches for training: seeded ``Batches`` of an in-memory data set, or any DataLoader as is.

Example:
    >>> from workbench import data
    >>> batches = Batches(data.shapes(4, classes=2), 3, seed=0)
    >>> len(batches), [len(y) for _, y in batches.epoch(0)]
    (3, [3, 3, 2])
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


class Batches:
    """Mini-batches of an in-memory data set; the order is a pure function of ``(seed, epoch)``."""

    def __init__(self, data, batch_size: int, shuffle: bool = True, seed: int = 0):
        if not hasattr(data, "x") or not hasattr(data, "y"):
            raise TypeError("Batches needs a data set with x and y tensors (an ImageSet)")
        if len(data) == 0:
            raise ValueError("the data set is empty: generate at least one image per class")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed

    def __len__(self) -> int:
        return len(self._starts())

    def _starts(self) -> list[int]:
        """Batch start offsets; a last batch of one image joins the one before (BatchNorm needs two)."""
        starts = list(range(0, len(self.data), self.batch_size))
        if len(starts) > 1 and len(self.data) - starts[-1] == 1:
            starts.pop()
        return starts

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.data)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
                 if self.shuffle else torch.arange(n))
        starts = self._starts()
        for start, end in zip(starts, starts[1:] + [n]):
            rows = order[start:end]
            yield self.data.x[rows], self.data.y[rows]

    def __iter__(self):
        return iter(self.epoch(0))


def as_batches(data, batch_size: int, shuffle: bool, seed: int):
    """An in-memory data set becomes seeded ``Batches``; a DataLoader (or any iterable of batches) is used as is."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return Batches(data, batch_size, shuffle, seed)
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        if len(data) == 0:
            raise ValueError("the data set is empty")
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g)
    return data


def epoch_batches(batches, epoch: int):
    """The batches of one epoch: seeded per epoch for ``Batches``, one pass of the iterable otherwise."""
    return batches.epoch(epoch) if isinstance(batches, Batches) else iter(batches)


def data_length(data) -> int | None:
    """How many samples (or, for an unsized iterable of batches, ``None``) ``data`` holds."""
    inner = getattr(data, "dataset", data)
    try:
        return len(inner)
    except TypeError:
        return None


def _generators(batches) -> list[torch.Generator]:
    found = [getattr(batches, "generator", None), getattr(getattr(batches, "sampler", None), "generator", None)]
    return [g for g in found if isinstance(g, torch.Generator)]


def first_batch(batches) -> tuple | None:
    """The first ``(x, y)`` of epoch 0 without disturbing the data: its generators are put back as they were.

    ``None`` for a one-pass iterator (peeking would consume it) or an empty iterable.
    """
    if isinstance(batches, Batches):
        return next(iter(batches.epoch(0)), None)
    if isinstance(batches, Iterator):
        return None
    generators = _generators(batches)
    states = [g.get_state() for g in generators]
    try:
        return next(iter(batches), None)
    finally:
        for g, state in zip(generators, states):
            g.set_state(state)
