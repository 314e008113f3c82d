"""A Footer that rebuilds once per refresh: the one module that leans on how Textual's Footer works.

Footer rebuilds all its key widgets after every bindings refresh it is told of, and a start of
the runs list publishes several (screen stack, focus, the first rows). `CoalescedFooter` lets the
first one schedule the rebuild and ignores the others until it has run; the rebuild reads the
bindings when it runs, so it shows the newest state. It relies on Footer's `bindings_changed`
scheduling `recompose` after a refresh, and on the conditions it checks before doing so; Textual
is pinned in pyproject.toml to the range this was tested with, and tests/tui/test_footer_adapter.py
compares its keys with a plain Footer's.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class CoalescedFooter(Footer):
    """Footer whose rebuilds after bindings refreshes are coalesced into one per refresh."""

    _rebuild_pending = False

    def bindings_changed(self, screen: Screen) -> None:
        if self._rebuild_pending and screen is self.screen:
            return
        super().bindings_changed(screen)
        # What Footer checks before scheduling its rebuild.
        self._rebuild_pending = self.is_attached and screen is self.screen and bool(screen.app.app_focus)

    async def recompose(self) -> None:
        self._rebuild_pending = False
        await super().recompose()
