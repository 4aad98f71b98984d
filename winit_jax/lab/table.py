"""One model of a results table, rendered to Markdown (report.md) and to the terminal (rich).

Every table the lab shows is built once, as a ``Table`` of formatted cells; ``markdown()``
and ``rich()`` only lay it out. The terminal may show a subset of the columns (it has 80).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


def fmt(v, spec: str) -> str:
    """``format(v, spec)``, or "n/a" for None, NaN and inf."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


@dataclasses.dataclass
class Table:
    """A titled table of text cells.

    Attributes:
      title: shown above it.
      columns: header names.
      left: the columns aligned left (the others hold numbers and align right).
      rows: one tuple of cells per row.
      note: a sentence under the title saying what the numbers are.
    """

    title: str
    columns: tuple[str, ...]
    left: tuple[str, ...] = ()
    rows: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    note: str = ""

    def add(self, *cells) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.title!r}: {len(cells)} cells for "
                             f"{len(self.columns)} columns")
        self.rows.append(tuple(str(c) for c in cells))

    def _pick(self, columns: Sequence[str] | None) -> list[int]:
        return list(range(len(self.columns))) if columns is None else [
            self.columns.index(c) for c in columns]

    def markdown(self, *, level: int = 2, columns: Sequence[str] | None = None) -> list[str]:
        """The table as Markdown lines, under a heading of ``level`` (0: no heading)."""
        idx = self._pick(columns)
        lines = ([f"{'#' * level} {self.title}", ""] if level else [])
        lines += [self.note, ""] if self.note else []
        lines.append("| " + " | ".join(self.columns[i] for i in idx) + " |")
        lines.append("|" + "".join(" --- |" if self.columns[i] in self.left else " ---: |"
                                   for i in idx))
        lines += ["| " + " | ".join(row[i] for i in idx) + " |" for row in self.rows]
        return lines

    def rich(self, *, columns: Sequence[str] | None = None):
        """The table as a ``rich.table.Table`` (imports rich)."""
        from rich.table import Table as RichTable

        idx = self._pick(columns)
        table = RichTable(title=self.title)
        for n, i in enumerate(idx):
            name = self.columns[i]
            # the first column names the row (a scheme): never cut; the others fold
            table.add_column(name, justify="left" if name in self.left else "right",
                             overflow="fold", no_wrap=n == 0)
        for row in self.rows:
            table.add_row(*(row[i] for i in idx))
        return table
