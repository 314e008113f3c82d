"""The runs table: one row a run, filterable by name, sortable by any column, with overlay selection.

It holds the rows it was given (RunRow records built off the UI thread) and renders them; it reads
no files. Updates touch only the changed rows' cells; filtering and sorting rebuild the visible rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from runctl.runs.humanize import human_age as format_age
from runctl.tui.run_rows import RunRow, format_duration, format_number
from runctl.tui.widgets.fitted_table import FittedDataTable
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

# Symbol and style per state; interrupted and crashed are inverted so they stand out in a long list.
STATE_LOOK: dict[str, tuple[str, str]] = {
    "running": ("▶", "bold green"),
    "stalled": ("‖", "bold white on magenta"),
    "finished": ("✔", "cyan"),
    "stopped": ("■", "yellow"),
    "interrupted": ("⚠", "bold black on dark_orange"),
    "crashed": ("✖", "bold white on red"),
}
UNKNOWN_LOOK = ("?", "dim")

# (key, label); the key doubles as the sort key name.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Name"),
    ("state", "State"),
    ("progress", "Step"),
    ("loss", "Loss"),
    ("best", "Best val"),
    ("speed", "it/s"),
    ("eta", "ETA"),
    ("updated", "Updated"),
)
COLUMN_KEYS = tuple(key for key, _ in COLUMNS)

# States that need attention sort first when sorting by state.
_STATE_ORDER = {"crashed": 0, "stalled": 1, "interrupted": 2, "running": 3, "stopped": 4, "finished": 5}
_MISSING = float("inf")


def _num(value: float | None) -> float:
    return _MISSING if value is None else value


def _sort_key(column: str, row: RunRow, now: float) -> Any:
    if column == "name":
        return row.name.lower()
    if column == "state":
        return _STATE_ORDER.get(row.state, 6)
    if column == "progress":
        if row.step is None or not row.max_steps:
            return _MISSING
        return row.step / row.max_steps
    if column == "loss":
        return _num(row.last_loss)
    if column == "best":
        return _num(row.best_value)
    if column == "speed":
        return _num(row.steps_per_s)
    if column == "eta":
        return _num(row.eta_seconds())
    # updated: newest first by default
    return _num(None if row.updated_at is None else now - row.updated_at)


def state_text(state: str) -> Text:
    symbol, style = STATE_LOOK.get(state, UNKNOWN_LOOK)
    return Text(f"{symbol} {state}", style=style)


class RunsTable(FittedDataTable, inherit_bindings=False):
    """Runs as rows keyed by their directory; `selected` is the overlay selection (shared set)."""

    DEFAULT_CSS = """
    RunsTable { height: 1fr; }
    """
    # Not DataTable's bindings: its enter would shadow the screen's remappable "open" key.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_top", "First run", show=False),
        Binding("end", "scroll_bottom", "Last run", show=False),
    ]

    def __init__(
        self,
        selected: set[Path],
        now: Callable[[], float] | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.selected = selected
        self._now = now or time.time
        self._rows: dict[str, RunRow] = {}
        self._filter = ""
        self.sort_column = "updated"
        self.sort_reverse = False

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            # Room for the sort arrow from the start: the column is sized by its first label.
            self.add_column(label + "  ", key=key)

    # ---- what the screen asks
    @property
    def current_run(self) -> RunRow | None:
        if self.row_count == 0:
            return None
        try:
            row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # the cursor is past the last row while rows are rebuilt
            return None
        return self._rows.get(str(row_key.value))

    @property
    def filter_text(self) -> str:
        return self._filter

    @property
    def total_runs(self) -> int:
        return len(self._rows)

    def known_paths(self) -> set[str]:
        return set(self._rows)

    def row_for(self, run_dir: Path) -> RunRow | None:
        return self._rows.get(str(run_dir))

    def visible_names(self) -> list[str]:
        """Names in display order (what the user sees, top to bottom)."""
        return [self._rows[str(key.value)].name for key in self.rows]

    # ---- data in
    def set_rows(self, rows: Iterable[RunRow], *, follow_cursor: bool = True) -> None:
        """Replace every row (a full reload of the root). The cursor stays on its run, or with
        `follow_cursor=False` on the first row (the rows it was on were only a preview)."""
        self._rows = {row.key: row for row in rows}
        self.selected.intersection_update(row.path for row in self._rows.values())
        self._rebuild(follow_cursor=follow_cursor)

    def upsert_rows(self, rows: Iterable[RunRow]) -> None:
        """Add new runs and update changed ones; only the changed cells are redrawn."""
        needs_rebuild = False
        for row in rows:
            old = self._rows.get(row.key)
            self._rows[row.key] = row
            if old is None:
                needs_rebuild = True
            elif old != row and self._matches(row):
                if not self._matches(old):
                    needs_rebuild = True
                else:
                    self._update_cells(row)
        if needs_rebuild:
            self._rebuild()

    def remove_runs(self, paths: Iterable[Path]) -> None:
        removed = False
        for path in paths:
            if self._rows.pop(str(path), None) is not None:
                removed = True
                self.selected.discard(path)
        if removed:
            self._rebuild()

    # ---- view controls
    def set_filter(self, text: str) -> None:
        text = text.strip().lower()
        if text != self._filter:
            self._filter = text
            self._rebuild()

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        if column not in COLUMN_KEYS:
            raise ValueError(f"unknown column {column!r}")
        if reverse is None:
            # Choosing the current column again flips the direction.
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._rebuild()

    def cycle_sort(self) -> str:
        index = (COLUMN_KEYS.index(self.sort_column) + 1) % len(COLUMN_KEYS)
        self.sort_by(COLUMN_KEYS[index], reverse=False)
        return COLUMN_KEYS[index]

    def toggle_selected(self) -> RunRow | None:
        run = self.current_run
        if run is None:
            return None
        if run.path in self.selected:
            self.selected.discard(run.path)
        else:
            self.selected.add(run.path)
        self.update_cell(run.key, "name", self._name_cell(run), update_width=True)
        return run

    def refresh_clock_columns(self) -> None:
        """Redraw the columns that depend on the clock ("updated ago", ETA)."""
        now = self._now()
        for key in self.rows:
            row = self._rows.get(str(key.value))
            if row is not None:
                self.update_cell(key, "updated", self._updated_cell(row, now), update_width=True)
                self.update_cell(key, "eta", _plain(format_duration(row.eta_seconds())), update_width=True)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    # ---- rendering
    def _matches(self, row: RunRow) -> bool:
        return not self._filter or self._filter in row.name.lower()

    def _rebuild(self, *, follow_cursor: bool = True) -> None:
        if not self.columns:  # not mounted yet; on_mount adds the columns, then rows come
            return
        current = self.current_run if follow_cursor else None
        now = self._now()
        visible = [row for row in self._rows.values() if self._matches(row)]
        visible.sort(key=lambda row: (_sort_key(self.sort_column, row, now), row.name), reverse=self.sort_reverse)
        self.clear()
        # Every row at once: DataTable measures the new rows (all of them, whatever goes in
        # first) before its next paint, and each paint of a refilled table renders every visible
        # cell afresh, so adding a screenful first only adds a paint before the full one.
        for row in visible:
            self.add_row(*self._cells(row, now), key=row.key)
        self._label_sorted_column()
        if current is not None and self._matches(self._rows.get(current.key, current)):
            self._restore_cursor(current.key)

    def _restore_cursor(self, key: str | None) -> None:
        if key is not None and key in self.rows:
            self.move_cursor(row=self.get_row_index(key), animate=False)

    def _label_sorted_column(self) -> None:
        arrow = " ▼" if self.sort_reverse else " ▲"
        for key, label in COLUMNS:
            column = self.columns.get(key)  # type: ignore[call-overload]
            if column is not None:
                column.label = Text(label + (arrow if key == self.sort_column else "  "))
        self.refresh()

    def _update_cells(self, row: RunRow) -> None:
        if row.key not in self.rows:
            return
        now = self._now()
        for column, cell in zip(COLUMN_KEYS, self._cells(row, now), strict=True):
            # "9/100" -> "10/100": a cell may outgrow its column.
            self.update_cell(row.key, column, cell, update_width=True)

    def _name_cell(self, row: RunRow) -> Text:
        marker = "● " if row.path in self.selected else "  "
        text = Text(marker + row.name, style="bold" if row.path in self.selected else "")
        if row.foreign:
            text.append(f"  {row.layout}", style="dim italic")
        return text

    def _updated_cell(self, row: RunRow, now: float) -> Text:
        if row.updated_at is None:
            return _plain("-")
        return _plain(format_age(now - row.updated_at) + " ago")

    def _cells(self, row: RunRow, now: float) -> list[Any]:
        if row.step is None:
            progress = "-"
        elif row.max_steps:
            progress = f"{row.step}/{row.max_steps}"
        else:
            progress = str(row.step)
        return [
            self._name_cell(row),
            state_text(row.state),
            _plain(progress),
            _plain(format_number(row.last_loss)),
            _plain(format_number(row.best_value)),
            _plain("-" if row.steps_per_s is None else f"{row.steps_per_s:.1f}"),
            _plain(format_duration(row.eta_seconds())),
            self._updated_cell(row, now),
        ]


def _plain(text: str) -> Text:
    """A cell that is text, not markup: DataTable would parse a str cell as Rich markup, which
    costs more than the rest of adding the row (1,000 runs x 8 cells on first paint)."""
    return Text(text, no_wrap=True, end="")
