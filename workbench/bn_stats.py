"""How far BatchNorm running statistics moved: :func:`bn_snapshot` before, :func:`bn_drift` after.

Works on any ``nn.Module``: every ``_BatchNorm`` with running statistics gets a row, named by
module and numbered layer. Under the ``"train"`` and ``"affine"`` freezing policies the
statistics of frozen layers keep drifting; under ``"eval"`` and ``"frozen"`` they stay put.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import layer_index_of, numbered_layers
from .table import Table, TableResult


@dataclass(frozen=True)
class BNDriftRow:
    """How far one BatchNorm's running statistics moved from a start.

    ``mean_shift``: RMS change of the running mean over the RMS starting standard deviation
    ``sqrt(var0 + eps)`` (0.5: the means moved by half a standard deviation). ``var_change``:
    ``||var - var0|| / ||var0||``. ``updates``: batches counted by ``num_batches_tracked`` since
    the start (``None`` if the module does not count them).
    """

    name: str
    layer: int | None
    mean_shift: float
    var_change: float
    updates: int | None


class BNDrift(TableResult, list):
    """Rows of :class:`BNDriftRow`, one per BatchNorm with running statistics; prints as text and HTML."""

    HEADER = ("layer", "name", "mean shift (std0)", "var change", "updates")

    def as_table(self) -> Table:
        return Table(self.HEADER, [{"layer": r.layer, "name": r.name, "mean shift (std0)": f"{r.mean_shift:.4g}",
                                    "var change": f"{r.var_change:.4g}", "updates": r.updates} for r in self])

    def moved(self) -> list[str]:
        """Names of the BatchNorm modules whose running statistics changed at all."""
        return [r.name for r in self if r.mean_shift > 0 or r.var_change > 0]


def bn_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm buffer (running stats and batch count): the start for :func:`bn_drift`."""
    return {name: b.detach().clone() for m_name, m in model.named_modules() if isinstance(m, _BatchNorm)
            for name, b in m.named_buffers(prefix=m_name, recurse=False)}


@torch.no_grad()
def bn_drift(model: nn.Module, start: Mapping[str, torch.Tensor] | nn.Module) -> BNDrift:
    """Per BatchNorm module, how far its running mean and variance moved from ``start``.

    ``start`` is :func:`bn_snapshot` ``(model)``, a ``state_dict`` taken before training, or a
    model of the same architecture.

    Example:
        >>> model = nn.Sequential(nn.BatchNorm1d(2))
        >>> start = bn_snapshot(model)
        >>> _ = model(torch.randn(8, 2) + 3)
        >>> row = bn_drift(model, start)[0]
        >>> row.mean_shift > 0, row.updates
        (True, 1)
    """
    start = start.state_dict() if isinstance(start, nn.Module) else start
    numbered, rows = numbered_layers(model), BNDrift()
    for m_name, m in model.named_modules():
        if not isinstance(m, _BatchNorm) or m.running_mean is None:
            continue
        prefix = f"{m_name}." if m_name else ""
        keys = [prefix + k for k in ("running_mean", "running_var")]
        if any(k not in start for k in keys):
            raise ValueError(f"start has no {keys[0]}: take it with bn_snapshot(model) (or the state_dict) "
                             f"before training, from a model of the same architecture")
        mean0, var0 = (start[k].to(m.running_mean.device, torch.float32) for k in keys)
        mean, var = m.running_mean.float(), m.running_var.float()
        shift = ((mean - mean0).square().mean() / (var0 + m.eps).mean()).sqrt().item()
        change = ((var - var0).norm() / var0.norm().clamp_min(1e-12)).item()
        count0 = start.get(prefix + "num_batches_tracked")
        updates = None if count0 is None or m.num_batches_tracked is None else int(m.num_batches_tracked - count0)
        rows.append(BNDriftRow(name=m_name, layer=layer_index_of(m_name, numbered), mean_shift=shift,
                               var_change=change, updates=updates))
    return rows
