"""A DataTable whose cells are never left cut to the widths its columns had before measuring."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.widgets import DataTable


class FittedDataTable(DataTable):
    """DataTable measures new rows when idle, and a paint can come first: the cells it renders
    then, cut to the header widths, stay in its render caches after the columns widen (the runs
    list showed "gpt-" for "gpt-small-lr3e-4" until the next change). They are dropped whenever
    a measurement changes a width."""

    def _update_dimensions(self, new_rows: Iterable[Any]) -> None:
        widths = [column.content_width for column in self.columns.values()]
        super()._update_dimensions(new_rows)
        if widths != [column.content_width for column in self.columns.values()]:
            self._clear_caches()
            self.refresh()
