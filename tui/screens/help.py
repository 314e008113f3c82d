"""`?`: every key of the screen below and of the app, with its binding id (for keys.yaml)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from runctl.tui.frame_timer import SteadyFrames
from runctl.tui.keymap import default_keymap_path
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static


def key_rows(screen: Screen) -> list[tuple[str, str, str, bool]]:
    """(key as shown, binding id, description, enabled now) for every key active on `screen`.

    Bindings with an id (ours) come first in the screen's order; keys of focused widgets (arrows,
    page up ...) without an id follow. A remapped key shows its new key.
    """
    app = screen.app
    with_id: list[tuple[str, str, str, bool]] = []
    without_id: list[tuple[str, str, str, bool]] = []
    seen: set[tuple[str, str]] = set()
    for active in screen.active_bindings.values():
        binding = active.binding
        description = binding.tooltip or binding.description or binding.action.replace("_", " ")
        key = app.get_key_display(binding)
        if (key, binding.action) in seen:
            continue
        seen.add((key, binding.action))
        target = with_id if binding.id else without_id
        target.append((key, binding.id or "", description, active.enabled))
    return with_id + without_id


class HelpScreen(SteadyFrames, ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="runctl.help.close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, rows: list[tuple[str, str, str, bool]], keymap_path: Path | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.keymap_path = keymap_path or default_keymap_path()

    def compose(self) -> ComposeResult:
        with Vertical(id="help", classes="dialog"):
            yield Static("Keys", classes="dialog-title")
            yield DataTable(id="help-keys", cursor_type="row", zebra_stripes=True)
            yield Static(
                Text.assemble(
                    "Dimmed keys do not apply to the selected run now.  Remap any key by its id in ",
                    (str(self.keymap_path), "bold"),
                    ", e.g. ",
                    ("runctl.resume: ctrl+r", "bold"),
                    ".  Esc closes.",
                ),
                id="help-footer",
            )

    def on_mount(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        table.add_columns("Key", "Id", "What it does")
        for key, binding_id, description, enabled in self.rows:
            style = "" if enabled else "dim"
            table.add_row(Text(key, style=f"bold {style}"), Text(binding_id, style=style), Text(description, style=style))
        table.focus()
