"""ctrl+p: every action of the current screen (and the app) as a palette command.

Built from the screen's active bindings, so a new key on any screen is in the palette with no
extra code, shows its (possibly remapped) key, and is left out while it does not apply
(check_action dims it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from rich.markup import escape
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode


@dataclass(frozen=True)
class PaletteAction:
    title: str
    help: str
    action: str
    node: DOMNode


def screen_actions(provider: Provider) -> Iterator[PaletteAction]:
    """The enabled actions of the screen the palette was opened from, one per action."""
    app = provider.app
    seen: set[str] = set()
    for active in provider.screen.active_bindings.values():
        binding = active.binding
        # Ours have ids; widget internals (cursor keys) are not worth a palette entry.
        if not active.enabled or not binding.id or binding.action == "command_palette":
            continue
        if binding.action in seen:
            continue
        seen.add(binding.action)
        key = app.get_key_display(binding)
        # The palette renders help as markup: no square brackets around the key.
        help_text = escape(f"{binding.tooltip or binding.description}  ·  key {key}  ·  {binding.id}")
        yield PaletteAction(binding.description, help_text, binding.action, active.node)


class ScreenActionsProvider(Provider):
    async def discover(self) -> Hits:
        for item in screen_actions(self):
            yield DiscoveryHit(item.title, partial(self._run, item), help=item.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for item in screen_actions(self):
            # Match the long description too: "checkpoint" finds "Ckpt now".
            score = max(matcher.match(item.title), matcher.match(item.help) * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(item.title), partial(self._run, item), help=item.help)

    async def _run(self, item: PaletteAction) -> None:
        await self.app.run_action(item.action, item.node)
