"""What a freeze or unfreeze call changed, per numbered layer: :class:`FreezeReport`, printed as a table.

Example:
    >>> from workbench import build_model
    >>> model = build_model(nc=3)
    >>> _ = model.layers[0].conv.weight.requires_grad_(False)
    >>> report = build_report(model, "freeze", "layers=[0]", "eval", ["layers.0.conv.weight"], [], [])
    >>> report.tensors, report.rows[0].frozen == model.layers[0].conv.weight.numel()
    (1, True)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .i18n import N_, _, labels, ngettext
from .layers import layer_index_of, numbered_layers
from .table import Table, TableResult


@dataclass(frozen=True)
class FreezeRow:
    """One numbered layer: what this call changed in it, and how much of it is frozen now."""

    index: int
    name: str
    stage: str
    type: str
    tensors: int  # parameter tensors whose requires_grad this call changed
    params: int  # their element count
    frozen: int  # elements frozen in this layer now (by anyone)
    total: int  # elements in this layer
    bn: int  # BatchNorm modules given (freeze) or released from (unfreeze) a policy by this call


@dataclass(frozen=True, repr=False)
class FreezeReport(TableResult):
    """What a :func:`freeze` or :func:`unfreeze` call changed, per layer; prints as text and as HTML."""

    action: str  # "freeze", "unfreeze" or "set depth"
    selection: str
    bn: str | None
    rows: tuple[FreezeRow, ...]
    changed: tuple[str, ...]  # parameter names whose requires_grad this call changed
    untouched: tuple[str, ...]  # selected parameters frozen outside the workbench, left as they are
    empty: tuple[int, ...] = ()  # selected layers without parameters (a ReLU, a pooling layer)

    @property
    def tensors(self) -> int:
        return len(self.changed)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total(self) -> int:
        return sum(r.total for r in self.rows)

    @property
    def trainable(self) -> int:
        return self.total - sum(r.frozen for r in self.rows)

    def summary(self) -> str:
        verb = {"freeze": _("froze"), "unfreeze": _("unfroze"), "set depth": _("changed")}[self.action]
        policy = f", bn={self.bn!r}" if self.bn else ""
        share = 100 * self.trainable / self.total if self.total else 0.0
        layers = sum(r.tensors > 0 for r in self.rows)
        text = _("{action} {selection}{policy}: {verb} {tensors} ({params:,} parameters) in {layers}{empty}; "
                 "trainable {trainable:,} of {total:,} ({share:.1f}%)").format(
            action=self.action, selection=self.selection, policy=policy, verb=verb,
            tensors=ngettext("{n} tensor", "{n} tensors", self.tensors).format(n=self.tensors), params=self.params,
            layers=ngettext("{n} layer", "{n} layers", layers).format(n=layers), empty=self._empty_note(),
            trainable=self.trainable, total=self.total, share=share)
        if self.untouched:
            text += _("; left alone {n} tensors frozen outside the workbench (e.g. {example})").format(
                n=len(self.untouched), example=self.untouched[0])
        return text

    def _empty_note(self) -> str:
        if not self.empty:
            return ""
        names = ", ".join(str(i) for i in self.empty)
        return ngettext(" (layer {names} has no parameters)", " (layers {names} have no parameters)",
                        len(self.empty)).format(names=names)

    HEADER = (N_("index"), N_("name"), N_("stage"), N_("type"), N_("changed"), N_("changed params"), N_("frozen"),
              N_("params"), "bn")

    def as_table(self) -> Table:
        rows = [{"index": r.index, "name": r.name, "stage": r.stage, "type": r.type, "changed": r.tensors,
                 "changed params": r.params, "frozen": r.frozen, "params": r.total, "bn": r.bn} for r in self.rows]
        return Table(self.HEADER, rows, title=self.summary(), labels=labels(self.HEADER))


def build_report(model, action, selection, bn, changed, untouched, norms, chosen=()) -> FreezeReport:
    numbered, changed = numbered_layers(model), list(changed)
    counts: dict[int | None, Counter] = {}  # layer index -> FreezeRow's counts by field name
    changed_set = set(changed)
    for name, p in model.named_parameters():
        count = counts.setdefault(layer_index_of(name, numbered), Counter())
        count["tensors"] += name in changed_set
        count["params"] += p.numel() if name in changed_set else 0
        count["frozen"] += 0 if p.requires_grad else p.numel()
        count["total"] += p.numel()
    for name in norms:
        counts.setdefault(layer_index_of(name, numbered), Counter())["bn"] += 1

    def tally(index: int | None) -> dict[str, int]:
        count = counts.get(index, Counter())
        return {field: count[field] for field in ("tensors", "params", "frozen", "total", "bn")}

    rows = [FreezeRow(index=layer.index, name=layer.name, stage=layer.stage, type=layer.type, **tally(layer.index))
            for layer in numbered]
    if None in counts:
        rows.append(FreezeRow(index=-1, name="(outside the numbered layers)", stage="", type="", **tally(None)))
    empty = tuple(r.index for r in rows if r.index in set(chosen) and r.total == 0)
    return FreezeReport(action, selection, bn, tuple(rows), tuple(changed), tuple(untouched), empty)

