"""The branch dialog: a new run from a checkpoint, with `--set` overrides or an edited config.

The config is checked here with the engine's own validator before the dialog closes, so a typo
in a key is reported in the dialog (naming the key) instead of after the branch was created.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml
from runctl.engine.config import RUN_META_KEYS, apply_overrides, validate_config
from runctl.runs.errors import RunctlError
from runctl.runs.safe_yaml import load_yaml
from runctl.tui.frame_timer import SteadyFrames
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Switch, TextArea

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


@dataclass(frozen=True)
class BranchRequest:
    name: str
    overrides: list[str]
    config_yaml: str | None  # None: the parent's config (plus overrides) unchanged
    weights_only: bool


def config_text(run_cfg: dict[str, Any]) -> str:
    """The editable part of run.yaml: the config without the run's identity and lineage."""
    editable = {key: value for key, value in run_cfg.items() if key not in RUN_META_KEYS}
    return yaml.safe_dump(editable, sort_keys=False, default_flow_style=None)


def parse_overrides(text: str) -> list[str]:
    """`a.b=1 c=2` (shell quoting allowed) -> ["a.b=1", "c=2"]; ValueError naming a bad item."""
    try:
        items = shlex.split(text)
    except ValueError as err:
        raise ValueError(f"overrides: {err}") from None
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"overrides: {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    return items


def build_request(name: str, overrides_text: str, yaml_text: str, original_yaml: str,
                  weights_only: bool) -> BranchRequest:
    """Validate the dialog's fields into a BranchRequest; ValueError with a one-line reason."""
    name = name.strip()
    if not _NAME_RE.match(name):
        raise ValueError("name: letters, digits, '.', '_' or '-' (up to 80), starting with a letter or digit")
    overrides = parse_overrides(overrides_text)
    edited = yaml_text.strip() != original_yaml.strip()
    try:
        raw = load_yaml(yaml_text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"config: not valid YAML{where}") from None
    try:
        cfg = validate_config(raw, "branch config")
        if overrides:
            apply_overrides(cfg, overrides, "branch overrides")
    except RunctlError as err:
        raise ValueError(str(err)) from None
    return BranchRequest(name, overrides, yaml_text if edited else None, weights_only)


class BranchDialog(SteadyFrames, ModalScreen[BranchRequest | None]):
    """Dismisses with a BranchRequest, or None when cancelled."""

    CSS_PATH = "../styles/dialogs.tcss"

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="runctl.dialog.cancel"),
        Binding("ctrl+s", "confirm", "Branch", id="runctl.dialog.confirm"),
    ]

    def __init__(self, run_name: str, checkpoint_name: str, step: int | None, run_cfg: dict[str, Any]) -> None:
        super().__init__()
        self.run_name = run_name
        self.checkpoint_name = checkpoint_name
        self.step = step
        self.original_yaml = config_text(run_cfg)

    def compose(self) -> ComposeResult:
        suffix = f"s{self.step}" if self.step is not None else "branch"
        with Vertical(id="dialog", classes="dialog -branch"):
            yield Label(f"Branch {self.run_name} from {self.checkpoint_name}", classes="dialog-title")
            with Horizontal(classes="dialog-row"):
                yield Label("name", classes="dialog-label")
                yield Input(value=f"{self.run_name}-{suffix}", id="name")
            with Horizontal(classes="dialog-row"):
                yield Label("--set", classes="dialog-label")
                yield Input(placeholder="optim.lr=3e-4 loss.aux_weight=0.1", id="overrides")
            with Horizontal(classes="dialog-row"):
                yield Label("weights only", classes="dialog-label")
                yield Switch(value=False, id="weights-only")
                yield Label("fresh optimizer and schedule from the weights", classes="dialog-hint")
            yield Label("config (edit to change more than --set can):", classes="dialog-hint")
            yield TextArea(self.original_yaml, id="config", soft_wrap=False, show_line_numbers=True)
            yield Label("", id="verdict", classes="dialog-hint")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Branch (ctrl+s)", variant="primary", id="confirm")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        # A fixed clock (tests, snapshots) means nothing may change by itself: no blinking cursor.
        blink = getattr(self.app, "live_clock", True)
        for widget in self.query(Input).results():
            widget.cursor_blink = blink
        self.query_one("#config", TextArea).cursor_blink = blink
        self.query_one("#name", Input).focus()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.dismiss(None)

    def action_confirm(self) -> None:
        verdict = self.query_one("#verdict", Label)
        try:
            request = build_request(
                self.query_one("#name", Input).value,
                self.query_one("#overrides", Input).value,
                self.query_one("#config", TextArea).text,
                self.original_yaml,
                self.query_one("#weights-only", Switch).value,
            )
        except ValueError as err:
            verdict.update(str(err))
            verdict.add_class("-error")
            return
        self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)
