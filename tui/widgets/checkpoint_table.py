"""The run view's checkpoint table: step, kind, size, age and an integrity badge per checkpoint.

Rows are keyed by file name, so a later verification (full in the background, deep on `v`)
updates a badge in place without moving the cursor. Expected-but-missing checkpoints are rows
too, marked missing, so a gap (or the missing final checkpoint of an off-by-one loop) is visible.
Up to two files can be marked (space in the run view) for a diff; a mark shows beside the step.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from runctl.runs.humanize import human_age, human_bytes
from runctl.runs.model import CheckpointInfo
from runctl.tui.widgets.fitted_table import FittedDataTable
from textual.widgets.data_table import RowDoesNotExist

COLUMNS: tuple[tuple[str, str], ...] = (
    ("step", "Step"), ("kind", "Kind"), ("size", "Size"), ("age", "Age"), ("integrity", "Integrity"),
)

# status -> (symbol, style). Styles are theme-independent so the badge means the same everywhere.
BADGES: dict[str, tuple[str, str]] = {
    "ok": ("✓", "bold green"),
    "unverified": ("?", "yellow"),
    "partial": ("…", "yellow"),
    "corrupt": ("✗", "bold red"),
    "incompatible": ("!", "bold magenta"),
    "missing": ("∅", "red"),
    "quarantined": ("⊘", "yellow"),
    "unchecked": ("·", "dim"),
}

# How many checkpoints can be marked at once: a diff compares two.
MARKS = 2
MARK_SYMBOL = "◆"

# Statuses of a file that a resume or branch can start from.
USABLE_STATUSES = frozenset({"ok", "unverified"})


def badge(info: CheckpointInfo) -> Text:
    symbol, style = BADGES.get(info.status, ("?", "yellow"))
    text = Text(f"{symbol} {info.status}", style=style)
    if info.reason and info.status != "ok":
        text.append(f": {info.reason}", style=style)
    elif info.status == "ok" and info.level:
        text.append(f" ({info.level})", style="dim")
    return text


class CheckpointTable(FittedDataTable):
    """A DataTable of CheckpointInfo rows; `selected` is the info under the cursor."""

    DEFAULT_CSS = """
    CheckpointTable { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.infos: dict[str, CheckpointInfo] = {}
        self.marked: list[str] = []  # file names, oldest mark first
        self._now = 0.0

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected(self) -> CheckpointInfo | None:
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        row_key = self.coordinate_to_cell_key((self.cursor_row, 0)).row_key
        return self.infos.get(str(row_key.value))

    def show(self, infos: Iterable[CheckpointInfo], now: float) -> None:
        """Replace the rows (sorted by step), keeping the cursor on the same file if it is still there."""
        selected = self.selected
        self._now = now
        ordered = sorted(infos, key=lambda i: (i.step if i.step is not None else -1, i.name))
        self.infos = {info.name: info for info in ordered}
        self.marked = [name for name in self.marked if name in self.infos and self.infos[name].status != "missing"]
        self.clear()
        for info in ordered:
            self.add_row(*self._cells(info), key=info.name)
        if selected is not None and selected.name in self.infos:
            self.move_cursor(row=self.get_row_index(selected.name), animate=False)
        elif ordered:
            # Newest at the bottom; start there, it is the one people act on.
            self.move_cursor(row=len(ordered) - 1, animate=False)

    def update_info(self, info: CheckpointInfo) -> None:
        """Replace one row's data in place (a finished verification)."""
        if info.name not in self.infos:
            return
        self.infos[info.name] = info
        try:
            for (key, _), cell in zip(COLUMNS, self._cells(info), strict=True):
                self.update_cell(info.name, key, cell)
        except RowDoesNotExist:
            return

    def toggle_mark(self, name: str) -> None:
        """Mark `name` (a third mark drops the oldest) or unmark it."""
        if name in self.marked:
            self.marked.remove(name)
        else:
            self.marked.append(name)
        dropped = self.marked[:-MARKS]
        self.marked = self.marked[-MARKS:]
        for changed in (name, *dropped):
            if changed in self.infos:
                self.update_info(self.infos[changed])

    def marked_infos(self) -> list[CheckpointInfo]:
        """The marked checkpoints, older step first."""
        infos = [self.infos[name] for name in self.marked if name in self.infos]
        return sorted(infos, key=lambda i: (i.step if i.step is not None else -1, i.name))

    def _cells(self, info: CheckpointInfo) -> tuple[Text | str, ...]:
        missing = info.status == "missing"
        step = Text(str(info.step) if info.step is not None else "?", justify="right")
        if info.name in self.marked:
            step = Text.assemble((MARK_SYMBOL + " ", "bold cyan"), step, justify="right")
        size = "" if missing else human_bytes(info.bytes)
        age = "" if missing or not info.mtime else human_age(self._now - info.mtime)
        return step, kind_cell(info), Text(size, justify="right"), age, badge(info)


def kind_cell(info: CheckpointInfo) -> Text:
    """The kind; for another tool's file (not runctl's step_N.pt) its name too, and the checkpoint
    a last/latest file is a copy of."""
    text = Text(info.kind or ("" if info.status == "missing" else "?"))
    if not info.name.startswith("step_"):
        text.append(f"  {info.name}", style="dim")
    if info.copy_of:
        text.append(f" = copy of {info.copy_of}", style="cyan")
    return text
