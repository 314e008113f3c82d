"""`q` while runs train in this window: stop them with a checkpoint, or keep them training headless."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from runctl.tui.frame_timer import SteadyFrames
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

STOP = "stop"
DETACH = "detach"


class QuitConfirmScreen(SteadyFrames, ModalScreen[str | None]):
    """Dismisses with STOP, DETACH, or None (cancel: stay in the UI)."""

    BINDINGS = [
        Binding("s", "choose('stop')", "Stop with checkpoint", id="runctl.quit.stop"),
        Binding("k", "choose('detach')", "Keep training", id="runctl.quit.detach"),
        Binding("escape", "choose('')", "Cancel", id="runctl.quit.cancel"),
    ]

    def __init__(self, runs: list[Path]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        names = ", ".join(run.name for run in self.runs)
        count = len(self.runs)
        with Vertical(id="quit-confirm", classes="dialog"):
            yield Static("Quit runctl?", classes="dialog-title")
            yield Static(Text.assemble(
                f"{count} run{'s' if count != 1 else ''} training in this window: ",
                (names, "bold"),
            ))
            yield Static(
                "[b]s[/b]  stop with a checkpoint (resume later with r)\n"
                "[b]k[/b]  keep training in the background: a headless process continues from a fresh "
                "checkpoint; reopen runctl any time to watch it\n"
                "[b]Esc[/b]  stay",
                id="quit-choices",
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop with a checkpoint", variant="warning", id=STOP)
                yield Button("Keep training in background", variant="primary", id=DETACH)
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose(event.button.id or "")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice if choice in (STOP, DETACH) else None)
