"""The run view's config tab: run.yaml as written, syntax highlighted, scrollable."""

from __future__ import annotations

from rich.syntax import Syntax
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static


class ConfigView(VerticalScroll):
    """Shows the text of run.yaml; `show_text` replaces it (the file changes on extend)."""

    DEFAULT_CSS = """
    ConfigView { height: 1fr; }
    ConfigView > Static { width: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.text = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="config-text")

    def show_text(self, text: str) -> None:
        if text == self.text:
            return
        self.text = text
        body = self.query_one("#config-text", Static)
        if not text.strip():
            body.update("run.yaml is missing or empty")
            return
        body.update(Syntax(text, "yaml", theme="ansi_dark", line_numbers=True, word_wrap=False,
                           background_color="default"))
