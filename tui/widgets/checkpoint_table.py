"""The run view's checkpoint table: step, kind, size, age and an integrity badge per checkpoint.

Rows are keyed by file name, so a later verification (full in the background, deep on `v`)
updates a badge in place without moving the cursor. Expected-but-missing checkpoints are rows
too, marked missing, so a gap (or the missing final checkpoint of an off-by-one loop) is visible.
Up to two files can be marked (space in the run view) for a diff; a mark shows beside the step.
The table verifies its rows in thread workers (full in the background after each listing, deep
on request) and posts `Verified` for each result, which it applies and lets bubble to the screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from rich.text import Text
from runctl.runs import integrity
from runctl.runs.humanize import human_age, human_bytes
from runctl.runs.layout import CHECKPOINT_DIR
from runctl.runs.manifest import read_manifest
from runctl.runs.model import CheckpointInfo
from runctl.tui.widgets.fitted_table import FittedDataTable
from textual import work
from textual.message import Message
from textual.widgets.data_table import RowDoesNotExist
from textual.worker import Worker, WorkerState, get_current_worker

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
# Rows with nothing for a verification to read: listed, not on disk, or checked elsewhere (a
# quarantined file by `runctl verify` of its folder).
UNVERIFIABLE = frozenset({"missing", "partial", "quarantined"})


def badge(info: CheckpointInfo) -> Text:
    symbol, style = BADGES.get(info.status, ("?", "yellow"))
    text = Text(f"{symbol} {info.status}", style=style)
    if info.reason and info.status != "ok":
        text.append(f": {info.reason}", style=style)
    elif info.status == "ok" and info.level:
        text.append(f" ({info.level})", style="dim")
    return text


class CheckpointTable(FittedDataTable):
    """A DataTable of the CheckpointInfo rows of the run in `run_dir`; `selected` is the info
    under the cursor. `foreign`: another tool's files (no manifest, names from its layout)."""

    DEFAULT_CSS = """
    CheckpointTable { height: 1fr; }
    """

    class Verified(Message):
        """A verification of one row finished (`level` "full" or "deep")."""

        def __init__(self, info: CheckpointInfo, level: str) -> None:
            super().__init__()
            self.info = info
            self.level = level

    def __init__(self, run_dir: Path, *, foreign: bool = False, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.run_dir = run_dir
        self.foreign = foreign
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

    # --- verification ----------------------------------------------------------------------
    def verify_rows(self) -> None:
        """Full verification of every row that has a file, in the background."""
        self._verify_all([i for i in self.infos.values() if i.status not in UNVERIFIABLE])

    def verify_deep(self, info: CheckpointInfo) -> None:
        others = [i.path for i in sorted(self.infos.values(), key=lambda i: i.step or 0, reverse=True)
                  if i.name != info.name and i.status == "ok"]
        self._verify_deep(info, others)

    @work(thread=True, exclusive=True, group="verify", exit_on_error=False)
    def _verify_all(self, infos: list[CheckpointInfo]) -> None:
        """Full verification (CRC of every record + sha256), newest first: it is the one resume needs."""
        worker = get_current_worker()
        manifest = read_manifest(self.run_dir / CHECKPOINT_DIR)
        for info in sorted(infos, key=lambda i: i.step or 0, reverse=True):
            if worker.is_cancelled:
                return
            if info.status == "corrupt" or info.level in ("full", "deep"):
                continue
            verified = integrity.verify_file(info.path, "full", manifest.files.get(info.name))
            self.post_message(self.Verified(self._as_listed(info, verified), "full"))

    @work(thread=True, group="deep-verify", exit_on_error=False)
    def _verify_deep(self, info: CheckpointInfo, others: list[Path]) -> None:
        """Load `info` (weights_only) and compare it with the newest other intact checkpoint's identity
        (run_id, model shapes), so a file from another run or model shows as incompatible."""
        if self.foreign:
            # Another tool's files: no run identity to compare with, no manifest.
            verified = integrity.verify_file(info.path, "deep")
            self.post_message(self.Verified(self._as_listed(info, verified), "deep"))
            return
        manifest = read_manifest(self.run_dir / CHECKPOINT_DIR)
        reference = None
        for path in others:
            # identity_of answers from the deep-verify cache: make sure the reference was read.
            if integrity.verify_file(path, "deep", manifest.files.get(path.name)).status == "ok":
                reference = integrity.identity_of(path)
                break
        verified = integrity.verify_file(info.path, "deep", manifest.files.get(info.name), reference=reference)
        self.post_message(self.Verified(verified, "deep"))

    def _as_listed(self, listed: CheckpointInfo, verified: CheckpointInfo) -> CheckpointInfo:
        """A verification of another tool's file keeps what its layout said (the table's name
        for it, its step and role, the copy it is); no manifest is expected beside it."""
        if not self.foreign:
            return verified
        reason = None if verified.reason == "no manifest entry" else verified.reason
        return replace(verified, name=listed.name, step=listed.step if listed.step is not None else verified.step,
                       kind=listed.kind, copy_of=listed.copy_of, reason=reason)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A verification that failed says so instead of leaving a badge stale."""
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.name}: {event.worker.error}", severity="error", markup=False)

    def on_checkpoint_table_verified(self, message: Verified) -> None:
        current = self.infos.get(message.info.name)
        # A background full pass must not overwrite a deep result that arrived first.
        if current is not None and current.level == "deep" and message.level == "full":
            message.stop()
            return
        self.update_info(message.info)

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
