"""`n`: a new run from a built-in config or a YAML path, with an optional name and --set overrides.

Bad input (unknown config, invalid YAML, an unknown --set key, a name in use) shows the engine's
one-line error under the fields and creates nothing; the dialog stays open to fix it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from runctl.runs.errors import RunctlError
from runctl.tui.frame_timer import SteadyFrames
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from runctl.tui.app import RunctlApp


def parse_overrides(text: str) -> list[str]:
    """`optim.lr=3e-4 max_steps=200` -> ["optim.lr=3e-4", "max_steps=200"] (shell quoting allowed)."""
    try:
        items = shlex.split(text)
    except ValueError as err:
        raise RunctlError(f"--set overrides: {err}") from None
    for item in items:
        if "=" not in item or item.startswith("="):
            raise RunctlError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    return items


class NewRunScreen(SteadyFrames, ModalScreen[Path | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="runctl.dialog.cancel"),
    ]

    def compose(self) -> ComposeResult:
        from runctl.engine.config import builtin_configs

        configs = builtin_configs()
        with Vertical(id="new-run", classes="dialog"):
            yield Static("New run", classes="dialog-title")
            yield Label("Built-in configs (Enter picks one)")
            yield OptionList(
                *[
                    Option(Text.assemble((name, "bold"), "  ", (c.description, "dim")), id=name)
                    for name, c in configs.items()
                ],
                id="new-run-builtins",
            )
            yield Label("Config: a built-in name or a YAML path")
            yield Input(value=next(iter(configs), ""), id="new-run-config")
            yield Label("Name (optional)")
            yield Input(placeholder="default: the config's name and a timestamp", id="new-run-name")
            yield Label("--set overrides (optional, space-separated KEY=VALUE)")
            yield Input(placeholder="max_steps=200 optim.lr=3e-4", id="new-run-overrides")
            yield Static("", id="new-run-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", variant="primary", id="new-run-start")
                yield Button("Cancel", id="new-run-cancel")

    def on_mount(self) -> None:
        self.query_one("#new-run-config", Input).focus()

    @on(OptionList.OptionSelected, "#new-run-builtins")
    def _pick_builtin(self, event: OptionList.OptionSelected) -> None:
        config = self.query_one("#new-run-config", Input)
        config.value = event.option.id or ""
        self.query_one("#new-run-name", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#new-run-start")
    def action_submit(self) -> None:
        config = self.query_one("#new-run-config", Input).value.strip()
        name = self.query_one("#new-run-name", Input).value.strip() or None
        error = self.query_one("#new-run-error", Static)
        if not config:
            error.update("Config: give a built-in name or a YAML path")
            return
        app: RunctlApp = self.app  # type: ignore[assignment]
        try:
            overrides = parse_overrides(self.query_one("#new-run-overrides", Input).value)
            source = str(Path(config).expanduser()) if config.endswith((".yaml", ".yml")) else config
            run_dir = app.engine_host.start_new(source, name, overrides, raise_errors=True)
        except RunctlError as err:
            error.update(Text(str(err), style="bold red"))
            return
        self.dismiss(run_dir)

    @on(Button.Pressed, "#new-run-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
