"""CoalescedFooter shows what Textual's own Footer shows, however many bindings refreshes arrive
before it rebuilds, and rebuilds fewer times for a burst of them."""

from __future__ import annotations

import pytest
from runctl.tui.widgets.footer_adapter import CoalescedFooter
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterKey  # noqa: PLC2701 - the widgets a Footer shows


class KeysApp(App[None]):
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("x", "stop", "Stop"),
        Binding("e", "extend", "Extend", show=False),
    ]

    def __init__(self, footer: type[Footer]) -> None:
        super().__init__()
        self.footer_type = footer
        self.running = False
        self.rebuilds = 0

    def compose(self) -> ComposeResult:
        yield Static("body")
        yield self.footer_type(compact=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return not self.running
        if action == "stop":
            return True if self.running else None  # None: shown, disabled
        return True

    def action_start(self) -> None:
        self.running = True

    def action_stop(self) -> None:
        self.running = False


def _keys(app: App) -> list[tuple[str, str, str, bool]]:
    return [(key.key, key.key_display, key.description, key.has_class("-disabled"))
            for key in app.screen.query(FooterKey)]


async def _shown_after(footer: type[Footer], running: bool, refreshes: int) -> tuple[list, int]:
    app = KeysApp(footer)
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        shown = app.screen.query_one(Footer)
        counted = shown.recompose

        async def recompose() -> None:
            app.rebuilds += 1
            await counted()

        shown.recompose = recompose  # type: ignore[method-assign]
        app.running = running
        for _ in range(refreshes):
            app.refresh_bindings()
        await pilot.pause()
        await pilot.pause()
        return _keys(app), app.rebuilds


@pytest.mark.parametrize("running", [False, True])
@pytest.mark.parametrize("refreshes", [1, 5])
async def test_keys_are_those_of_textuals_footer(running: bool, refreshes: int) -> None:
    ours, _ = await _shown_after(CoalescedFooter, running, refreshes)
    theirs, _ = await _shown_after(Footer, running, refreshes)
    assert ours == theirs
    # check_action: False hides a key, None shows it disabled.
    expected = [("x", False)] if running else [("s", False), ("x", True)]
    assert [(key, disabled) for key, _, _, disabled in ours if key in "sx"] == expected


async def test_a_burst_of_refreshes_is_one_rebuild() -> None:
    _, ours = await _shown_after(CoalescedFooter, True, 5)
    _, theirs = await _shown_after(Footer, True, 5)
    assert 1 <= ours < theirs
