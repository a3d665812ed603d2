"""The transfer ledger: one row per target state_dict entry, its statuses, and how it prints.

:func:`workbench.transfer.transfer` fills a :class:`TransferReport`; this module only reads it:
counts in Ultralytics' terms (``Transferred X/Y items``), parameter coverage, a per-layer
summary, and the entries that did not transfer whole, as text and as HTML (one
:class:`~workbench.table.Table` each).

Example:
    >>> row = Row(name="fc.weight", status="shape_mismatch", shape=(3, 8), source_shape=(10, 8),
    ...           source_name="fc.weight", layer=0, numel=24, copied=0, parameter=True)
    >>> report = TransferReport((row,), (ReportLayer(0, "fc", "head", "Linear"),))
    >>> report.headline, report.coverage
    ('Transferred 0/1 items from pretrained weights', 0.0)
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html import escape
from typing import NamedTuple

from .i18n import N_, _, gloss, labels
from .run_labels import event_text
from .table import Table

STATUSES = ("transferred", "partial", "adapted", "shape_mismatch", "missing_in_source", "unused")
STATUS_COLOURS = {"transferred": "#d9f2d9", "partial": "#fff2cc", "adapted": "#dbe9ff", "shape_mismatch": "#f8d0d0",
                  "missing_in_source": "#eeeeee", "unused": "#f4f4f4"}


class Row(NamedTuple):
    """One ledger row: a target state_dict entry (or, with status ``unused``, a source entry).

    ``copied`` is how many of the target's values received pretrained values (all of them for
    ``transferred`` and ``adapted``, the matched class rows for ``partial``, none otherwise).
    """

    name: str
    status: str
    shape: tuple | None
    source_shape: tuple | None
    source_name: str | None
    layer: int | None
    numel: int
    copied: int
    parameter: bool
    note: str = ""


class ReportLayer(NamedTuple):
    """One numbered target layer as the report knows it: index, module name (the key prefix), stage, type."""

    index: int
    name: str
    stage: str
    type: str


class LayerSummary(NamedTuple):
    """Counts of one numbered target layer's entries by status, with its parameter values copied."""

    index: int
    name: str
    stage: str
    type: str
    items: int
    transferred: int
    partial: int
    adapted: int
    shape_mismatch: int
    missing_in_source: int
    params: int
    copied: int

    @property
    def coverage(self) -> float:
        return self.copied / self.params if self.params else 1.0


@dataclass(frozen=True)
class TransferReport:
    """The ledger: one row per target state_dict entry, then the source's unused entries.

    ``n_transferred``/``n_items`` count state_dict entries as Ultralytics does; ``coverage`` is
    the fraction of the target's parameter values that came from the source. ``str(report)``
    prints the summary and every entry that did not transfer whole; Jupyter shows it as HTML.
    """

    rows: tuple[Row, ...]
    layers: tuple[ReportLayer, ...] = ()
    dry_run: bool = False
    layer_map: dict = field(default_factory=dict)
    layout: str = ""  # how the source's layer names were lined up with the target's ("" when they already were)

    def where(self, status: str) -> list[Row]:
        """The rows with one status (one of ``STATUSES``)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; choose one of {list(STATUSES)}")
        return [r for r in self.rows if r.status == status]

    @property
    def counts(self) -> Counter:
        return Counter(r.status for r in self.rows)

    @property
    def n_items(self) -> int:
        return sum(1 for r in self.rows if r.status != "unused")

    @property
    def n_transferred(self) -> int:
        return self.counts["transferred"]

    @property
    def coverage(self) -> float:
        params = [r for r in self.rows if r.parameter and r.status != "unused"]
        total = sum(r.numel for r in params)
        return sum(r.copied for r in params) / total if total else 1.0

    @property
    def headline(self) -> str:
        return f"Transferred {self.n_transferred}/{self.n_items} items from pretrained weights"

    def by_layer(self) -> list[LayerSummary]:
        """One summary per numbered target layer that holds state_dict entries."""
        groups: dict[int, list[Row]] = {}
        for r in self.rows:
            if r.status != "unused" and r.layer is not None:
                groups.setdefault(r.layer, []).append(r)
        out = []
        for layer in self.layers:
            rows = groups.get(layer.index, [])
            if rows:
                c = Counter(r.status for r in rows)
                out.append(LayerSummary(**layer._asdict(), items=len(rows), transferred=c["transferred"],
                                        partial=c["partial"], adapted=c["adapted"],
                                        shape_mismatch=c["shape_mismatch"], missing_in_source=c["missing_in_source"],
                                        params=sum(r.numel for r in rows if r.parameter),
                                        copied=sum(r.copied for r in rows if r.parameter)))
        return out

    def _summary_lines(self) -> list[str]:
        c, target = self.counts, [r for r in self.rows if r.status != "unused"]
        n_params = sum(r.parameter for r in target)
        n_nbt = sum(r.name.endswith("num_batches_tracked") for r in target)
        params = sum(r.numel for r in target if r.parameter)
        lines = [self.headline + (_("  (dry run: nothing loaded)") if self.dry_run else "")]
        note = gloss("  (Ultralytics' own log line, kept as printed: of all the state_dict entries of the new model, "
                     "parameters and BatchNorm buffers alike, those whose name and shape matched and were copied)")
        lines += [note] if note else []
        if self.layout:
            lines.append(f"  {event_text(self.layout)}")
        if c["adapted"]:
            lines.append(_("  plus {n} adapted to other input channels (not counted above)").format(n=c["adapted"]))
        if c["partial"]:
            lines.append(_("  plus {n} partial (class rows copied by name; not counted above)").format(n=c["partial"]))
        lines.append(_("Parameter coverage: {coverage:.1f}% of {values:,} values").format(
            coverage=100 * self.coverage, values=params))
        lines.append(_("Items: {params} parameters + {buffers} buffers ({nbt} num_batches_tracked)").format(
            params=n_params, buffers=len(target) - n_params, nbt=n_nbt))
        lines.append(_("Entries: ") + ", ".join(f"{s} {c[s]}" for s in STATUSES))
        if self.layer_map:
            lines.append(_("Layer map (source -> target): {layer_map}").format(layer_map=self.layer_map))
        return lines

    def _detail_rows(self) -> list[Row]:
        return [r for r in self.rows if r.status != "transferred"]

    def layer_table(self) -> Table:
        """Per numbered layer: its entries by status and the share of its parameter values copied."""
        header = (N_("layer"), N_("name"), N_("stage"), N_("type"), N_("items"), "transferred", "partial", "adapted",
                  "mismatch", "missing", N_("coverage"))
        rows = [{"layer": s.index, "name": s.name, "stage": s.stage, "type": s.type, "items": s.items,
                 "transferred": s.transferred, "partial": s.partial, "adapted": s.adapted,
                 "mismatch": s.shape_mismatch, "missing": s.missing_in_source, "coverage": f"{100 * s.coverage:.1f}%"}
                for s in self.by_layer()]
        return Table(header, rows, indent=2, title=_("Per layer:"), labels=labels(header))

    def detail_table(self) -> Table:
        """Every entry that did not transfer whole, with its shapes (coloured by status in HTML)."""
        rows = [{"status": r.status, "entry": r.name, "shapes": _shapes(r), "note": r.note}
                for r in self._detail_rows()]
        header = ("status", N_("entry"), N_("shapes"), N_("note"))
        return Table(header, rows, indent=2, title=_("Not transferred whole:"), labels=labels(header),
                     row_style=lambda row: f"background:{STATUS_COLOURS[row['status']]}")

    def __str__(self) -> str:
        parts = ["\n".join(self._summary_lines()), str(self.layer_table())]
        if self._detail_rows():
            parts.append(str(self.detail_table()))
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        layout = f", {self.layout!r}" if self.layout else ""
        return f"TransferReport({self.headline!r}, coverage={100 * self.coverage:.1f}%{layout})"

    def _repr_html_(self) -> str:
        summary = "<br>".join(escape(line) for line in self._summary_lines())
        details = self.detail_table()._repr_html_()
        return (f"<div><b>{summary}</b>{self.layer_table()._repr_html_()}"
                f"<details><summary>{_('entries not transferred whole')}</summary>{details}</details></div>")


def _shapes(r: Row) -> str:
    if r.status == "unused":
        return f"source {r.source_shape}"
    if r.source_shape is None:
        return f"target {r.shape}"
    return f"target {r.shape} <- source {r.source_shape}" + (
        f" ({r.source_name})" if r.source_name and r.source_name != r.name else "")
