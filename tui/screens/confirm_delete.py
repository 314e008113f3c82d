"""Deleting one checkpoint: the run view's `d` (refusal, confirmation dialog, delete), and the
delete itself through the run's store.

The store takes the run's lock (so no engine can be writing the manifest meanwhile), drops the
manifest entry first, then unlinks the file (see runs.store for what a crash in between leaves).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runctl.runs.checkpoints import newest_valid
from runctl.runs.errors import RunctlError
from runctl.runs.model import CheckpointInfo
from runctl.runs.store import RunStore
from runctl.tui.frame_timer import SteadyFrames
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Label


def delete_checkpoint(run_dir: Path, name: str) -> None:
    """Remove checkpoint `name` of `run_dir` and its manifest entry; RunctlError if the run is busy."""
    RunStore(Path(run_dir)).delete_checkpoint(name)


def ask_delete(view: Screen, run_dir: Path, info: CheckpointInfo, done: Callable[[], None]) -> None:
    """Refuse to delete the newest valid checkpoint (the one resume would use), else ask, then
    delete off the UI thread and say how it went; `done()` follows a delete that was tried.

    Finding the newest valid checkpoint verifies files and deleting takes the run's lock: both
    run in `view`'s thread workers (group "delete"), whose failures the view reports.
    """
    app = view.app

    def check() -> None:
        newest, _ = newest_valid(run_dir)
        app.call_from_thread(ask, newest)

    def ask(newest: CheckpointInfo | None) -> None:
        if newest is not None and newest.name == info.name:
            app.notify(f"refusing to delete {info.name}: it is the newest valid checkpoint, the one "
                       "resume (r) would use", severity="error", markup=False)
            return
        detail = f"step {info.step}, {info.kind or 'unknown kind'}, status {info.status}"
        if newest is not None:
            detail += f"; resume will still use {newest.name}"
        app.push_screen(ConfirmDeleteScreen(info.name, detail), confirmed)

    def confirmed(yes: bool | None) -> None:
        if yes:
            view.run_worker(delete, name="delete", group="delete", thread=True, exit_on_error=False)

    def delete() -> None:
        try:
            delete_checkpoint(run_dir, info.name)
        except (RunctlError, OSError) as err:
            app.call_from_thread(finish, str(err))
            return
        app.call_from_thread(finish, None)

    def finish(error: str | None) -> None:
        if error:
            app.notify(f"could not delete {info.name}: {error}", severity="error", markup=False)
        else:
            app.notify(f"deleted {info.name}", markup=False)
        done()

    view.run_worker(check, name="check_delete", group="delete", thread=True, exit_on_error=False)


class ConfirmDeleteScreen(SteadyFrames, ModalScreen[bool]):
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
