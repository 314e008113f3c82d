"""`D` in the run view: how far each model tensor moved between the two marked checkpoints.

The comparison (verify both files, load them weights-only, one pass over every tensor) runs on a
thread worker; the result comes back as a message and fills the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from runctl.runs.errors import RunctlError
from runctl.tui.commands.diff import format_number, total_line
from runctl.tui.frame_timer import SteadyFrames
from runctl.tui.widgets.fitted_table import FittedDataTable
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

if TYPE_CHECKING:
    from runctl.engine.checkpoint_diff import CheckpointDiff

COLUMNS: tuple[tuple[str, str], ...] = (
    ("tensor", "Tensor"), ("shape", "Shape"), ("rel_l2", "Rel L2"), ("cosine", "Cosine"), ("max_abs", "Max |Δ|"),
)


class DiffComputed(Message):
    """The comparison finished: `result` (a CheckpointDiff) or the one-line `error`."""

    def __init__(self, result: CheckpointDiff | None, error: str | None) -> None:
        super().__init__()
        self.result = result
        self.error = error


class CheckpointDiffScreen(SteadyFrames, Screen):
    """The per-tensor change from checkpoint `a` to `b` (escape goes back to the run view)."""

    CSS_PATH = "../styles/checkpoint_diff.tcss"

    BINDINGS = [Binding("escape", "back", "Back", id="runctl.diff.back")]

    def __init__(self, a: Path, b: Path) -> None:
        super().__init__()
        self.a, self.b = Path(a), Path(b)
        self.result: CheckpointDiff | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="diff-title")
        yield FittedDataTable(id="diff-table", cursor_type="row", zebra_stripes=True)
        yield Static("comparing…", id="diff-total")
        yield Footer()

    def _title(self) -> Text:
        text = Text("diff  ", style="bold")
        text.append(self.a.name, style="cyan")
        text.append("  →  ")
        text.append(self.b.name, style="cyan")
        if self.a.parent != self.b.parent:
            text.append(f"   ({self.a.parent.parent.name} → {self.b.parent.parent.name})", style="dim")
        text.append("   model tensors only, largest relative change first", style="dim")
        return text

    def on_mount(self) -> None:
        table = self.query_one(FittedDataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self._compute()

    @work(thread=True, exclusive=True, group="diff", exit_on_error=False)
    def _compute(self) -> None:
        from runctl.engine.checkpoint_diff import diff_checkpoints  # torch: only when a diff is asked

        try:
            result = diff_checkpoints(self.a, self.b)
        except RunctlError as err:
            self.post_message(DiffComputed(None, str(err)))
            return
        except OSError as err:
            self.post_message(DiffComputed(None, f"{err.filename or self.a}: {err.strerror or err}"))
            return
        self.post_message(DiffComputed(result, None))

    @on(DiffComputed)
    def _show(self, message: DiffComputed) -> None:
        total = self.query_one("#diff-total", Static)
        if message.error is not None:
            self.error = message.error
            total.update(Text(message.error, style="bold red"))
            self.notify(message.error, severity="error", markup=False)
            return
        self.result = result = message.result
        assert result is not None
        table = self.query_one(FittedDataTable)
        for change in result.tensors:
            table.add_row(change.name, "x".join(map(str, change.shape)) or "scalar",
                          Text(format_number(change.rel_l2), justify="right"),
                          Text(format_number(change.cosine), justify="right"),
                          Text(format_number(change.max_abs), justify="right"), key=change.name)
        total.update(total_line(result.total, len(result.tensors)))

    def action_back(self) -> None:
        self.app.pop_screen()
