"""A DataTable whose cells are never left cut to the widths its columns had before measuring, and
that measures rows of plain text cells without Rich's console machinery."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable


class FittedDataTable(DataTable):
    """DataTable measures new rows when idle, and a paint can come first: the cells it renders
    then, cut to the header widths, stay in its render caches after the columns widen (the runs
    list showed "gpt-" for "gpt-small-lr3e-4" until the next change). They are dropped whenever
    a measurement changes a width.

    A row of one-line-high Text cells is measured here as Rich's Text measures itself (the widest
    line of its plain text): DataTable's general measure builds console options for every cell,
    which took most of the first paint's table time for 1,000 runs x 8 cells. Other rows (a row
    label, auto height, another renderable) are measured by DataTable."""

    def _update_dimensions(self, new_rows: Iterable[Any]) -> None:
        widths = [column.content_width for column in self.columns.values()]
        others = []
        columns = self.ordered_columns
        for row_key in new_rows:
            row_index = self._row_locations.get(row_key)
            row = self.rows.get(row_key)
            if row_index is None or row is None:
                continue  # removed before it was measured
            if row.label is not None or row.auto_height:
                others.append(row_key)
                continue
            cells = self._get_row_renderables(row_index).cells
            if not all(type(cell) is Text for cell in cells):
                others.append(row_key)
                continue
            for column, cell in zip(columns, cells, strict=False):
                width = text_width(cell)
                if width > column.content_width:
                    column.content_width = width
        # With no rows left, DataTable only sets the virtual size from the new widths.
        super()._update_dimensions(others)
        if widths != [column.content_width for column in self.columns.values()]:
            self._clear_caches()
            self.refresh()


def text_width(text: Text) -> int:
    """The cells the widest line of `text` takes (Text.__rich_measure__'s maximum)."""
    lines = text.plain.splitlines()
    return max(map(cell_len, lines)) if lines else 0
