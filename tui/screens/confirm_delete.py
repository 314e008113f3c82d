"""Deleting one checkpoint: the confirmation dialog and the delete itself.

The delete takes the run's lock (so no engine can be writing the manifest meanwhile), drops the
manifest entry first (atomic rewrite), then unlinks the file. A crash between the two leaves an
extra file without a manifest entry: shown as unverified, still usable, never a dangling entry.
"""

from __future__ import annotations

import os
from pathlib import Path

from runctl.runs.atomic import fsync_dir
from runctl.runs.errors import RunctlError
from runctl.runs.layout import checkpoint_dir
from runctl.runs.lock import RunLock
from runctl.runs.manifest import read_manifest, write_manifest
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


def delete_checkpoint(run_dir: Path, name: str) -> None:
    """Remove checkpoint `name` of `run_dir` and its manifest entry; RunctlError if the run is busy."""
    ckpt_dir = checkpoint_dir(Path(run_dir))
    path = ckpt_dir / name
    if Path(name).name != name or not path.is_file():
        raise RunctlError(f"{path}: no such checkpoint file")
    lock = RunLock(Path(run_dir))
    lock.acquire(wait=0.5)
    try:
        manifest = read_manifest(ckpt_dir)
        if manifest.error is None and name in manifest.files:
            del manifest.files[name]
            if manifest.best and manifest.best.get("file") == name:
                manifest.best = None
            write_manifest(ckpt_dir, manifest)
        os.unlink(path)
        fsync_dir(ckpt_dir)
    finally:
        lock.release()


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
