"""One way to show a result: a :class:`Table` prints as aligned text and as an HTML table in Jupyter.

Rows are mappings of column name to value (a dataclass row gives one with ``asdict``);
numbers are right-aligned, ints get thousands separators, floats three significant digits,
bools yes/no,
and a string is shown as it is (format it yourself where the default does not fit).
:class:`TextResult` is the mixin of results that compose several tables and lines: their text,
preformatted in Jupyter.

Example:
    >>> table = Table(["layer", "params", "share"], [{"layer": "conv", "params": 1200, "share": 0.75},
    ...                                              {"layer": "fc", "params": 400, "share": 0.25}])
    >>> print(table)
    layer  params  share
    conv    1,200   0.75
    fc        400   0.25
    >>> table._repr_html_().count("<tr>")
    3
"""
from __future__ import annotations

import numbers
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from html import escape

_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?$")


def cell(value) -> str:
    """A value as a table shows it: ints with separators, floats to 3 significant digits, yes/no, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, numbers.Number):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    return f"{value:.3g}"


class Table:
    """Named columns and rows of ``{column: value}``, shown as text (``str``) and HTML (``_repr_html_``).

    Args:
        columns: the column names, in order.
        rows: one mapping per row (missing columns show empty).
        title: a line above the table (the HTML caption).
        caption: the HTML caption when there is no title (the text shows none).
        row_style: ``row -> CSS`` for a row's HTML (a colour by status, a shade for frozen layers).
        notes: lines below it.
        indent: spaces before every text line of the table.
        footer: a last row set apart (totals).
        labels: ``{column: heading}`` for headings that differ from the column names (a translation).
    """

    def __init__(self, columns: Sequence[str], rows: Iterable[Mapping] = (), *, title: str = "",
                 notes: Sequence[str] = (), indent: int = 0, footer: Mapping | None = None, caption: str = "",
                 row_style: Callable[[Mapping], str] | None = None, labels: Mapping[str, str] | None = None):
        self.columns = tuple(columns)
        self.rows = [dict(row) for row in rows]
        unknown = {k for row in self.rows for k in row} - set(self.columns)
        if unknown:
            raise ValueError(f"rows name columns {sorted(unknown)} that the table does not have: {self.columns}")
        self.title, self.notes, self.indent, self.footer = title, tuple(notes), indent, footer
        self.caption, self.row_style = title or caption, row_style
        self.headings = tuple((labels or {}).get(c, c) for c in self.columns)

    def _tr(self, row: Mapping) -> str:
        style = self.row_style(row) if self.row_style else ""
        return f"<tr style='{escape(style)}'>" if style else "<tr>"

    def _cells(self, row: Mapping) -> list[str]:
        return [cell(row.get(c)) for c in self.columns]

    def _right(self, body: list[list[str]]) -> list[bool]:
        """A column is right-aligned when every filled cell reads as a number ("1,200", "-0.5", "93.1%")."""
        return [any(row[k] for row in body) and all(_NUMBER.match(row[k]) for row in body if row[k])
                for k in range(len(self.columns))]

    def lines(self) -> Iterator[str]:
        """The text lines: title, header, rows, footer, notes."""
        body = [list(self.headings)] + [self._cells(r) for r in self.rows] + (
            [self._cells(self.footer)] if self.footer else [])
        widths = [max(width(row[k]) for row in body) for k in range(len(self.columns))]
        right = self._right(body[1:])
        if self.title:
            yield self.title
        for row in body:
            padded = (pad(v, w, r) for v, w, r in zip(row, widths, right))
            yield (" " * self.indent + "  ".join(padded)).rstrip()
        yield from self.notes

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        caption = f"<caption>{escape(self.caption)}</caption>" if self.caption else ""
        head = "".join(f"<th>{escape(c)}</th>" for c in self.headings)
        body = "".join(self._tr(r) + "".join(f"<td>{escape(v)}</td>" for v in self._cells(r)) + "</tr>"
                       for r in self.rows)
        foot = ("<tr>" + "".join(f"<th>{escape(v)}</th>" for v in self._cells(self.footer)) + "</tr>"
                if self.footer else "")
        notes = "".join(f"<p>{escape(n)}</p>" for n in self.notes)
        return f"<table>{caption}<tr>{head}</tr>{body}{foot}</table>{notes}"


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal: CJK characters take two.

    Example:
        >>> width("layer"), width("冻结")
        (5, 4)
    """
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, columns: int, right: bool = False) -> str:
    """``text`` padded with spaces to ``columns`` terminal columns, on the left when ``right``."""
    space = " " * max(columns - width(text), 0)
    return space + text if right else text + space


def find_row(rows: Iterable, field: str, value):
    """The first row whose ``field`` equals ``value``; a ValueError lists the values there are.

    Example:
        >>> from types import SimpleNamespace as Row
        >>> find_row([Row(run="scratch"), Row(run="frozen")], "run", "frozen").run
        'frozen'
    """
    rows = list(rows)
    for row in rows:
        if getattr(row, field) == value:
            return row
    raise ValueError(f"no run {value!r}; the {field} values are {[getattr(r, field) for r in rows]}")


class TableResult:
    """A result shown as the :class:`Table` its ``as_table()`` returns, as text and as HTML."""

    def as_table(self) -> Table:
        raise NotImplementedError

    def __str__(self) -> str:
        return str(self.as_table())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return self.as_table()._repr_html_()


class TextResult:
    """A result shown as its text (``__str__``): plain in a console, preformatted in Jupyter."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return f"<pre>{escape(str(self))}</pre>"
