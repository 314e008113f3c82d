"""Deleting one checkpoint: the confirmation dialog, and the delete itself through the run's store.

The store takes the run's lock (so no engine can be writing the manifest meanwhile), drops the
manifest entry first, then unlinks the file (see runs.store for what a crash in between leaves).
"""

from __future__ import annotations

from pathlib import Path

from runctl.runs.store import RunStore
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


def delete_checkpoint(run_dir: Path, name: str) -> None:
    """Remove checkpoint `name` of `run_dir` and its manifest entry; RunctlError if the run is busy."""
    RunStore(Path(run_dir)).delete_checkpoint(name)


class ConfirmDeleteScreen(ModalScreen[bool]):
    """Asks before deleting `name`; dismisses with True to delete."""

    CSS_PATH = "../styles/dialogs.tcss"

    BINDINGS = [
        Binding("y", "confirm", "Delete", id="runctl.dialog.confirm"),
        Binding("n,escape", "cancel", "Keep", id="runctl.dialog.cancel"),
    ]

    def __init__(self, name: str, detail: str) -> None:
        super().__init__()
        self.checkpoint_name = name
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog -danger"):
            yield Label(f"Delete checkpoint {self.checkpoint_name}?", classes="dialog-title")
            yield Label(self.detail, classes="dialog-detail")
            yield Label("The file and its manifest entry are removed; this cannot be undone.",
                        classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Delete (y)", variant="error", id="confirm")
                yield Button("Keep (n)", variant="default", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
