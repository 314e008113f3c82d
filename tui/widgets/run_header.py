"""The run view's header: the run's name, its state badge, step, loss, best value, parent, ranks,
and the lines that need attention (silent ranks, the error, a stall)."""

from __future__ import annotations

import time

from rich.text import Text
from runctl.runs.model import RunSummary
from runctl.tui.commands.inspect import stalled_note
from textual.widgets import Static

STATE_BADGES: dict[str, tuple[str, str]] = {
    "running": ("▶", "bold green"),
    "stalled": ("‖", "bold white on magenta"),
    "stopped": ("■", "yellow"),
    "interrupted": ("⚡", "bold yellow"),
    "crashed": ("✗", "bold red"),
    "finished": ("✓", "green"),
    "unknown": ("?", "dim"),
}


def state_text(summary: RunSummary | None) -> Text:
    if summary is None:
        return Text("loading…", style="dim")
    symbol, style = STATE_BADGES.get(summary.state, STATE_BADGES["unknown"])
    text = Text()
    text.append(summary.name, style="bold")
    text.append("  ")
    text.append(f"{symbol} {summary.state}", style=style)
    if summary.step is not None:
        text.append(f"  step {summary.step}" + (f"/{summary.max_steps}" if summary.max_steps else ""))
    if summary.last_loss is not None:
        text.append(f"  loss {summary.last_loss:.4g}")
    if summary.best and isinstance(summary.best.get("value"), int | float):
        text.append(f"  best {summary.best.get('metric', '?')} {summary.best['value']:.4g}"
                    f" @ {summary.best.get('step', '?')}")
    if summary.parent:
        text.append(f"  ⑂ {summary.parent.get('run_id', '?')}", style="dim")
    if summary.layout not in ("runctl", "unknown"):
        text.append(f"  {summary.layout} · read-only", style="dim italic")
    if summary.world_size > 1:
        nodes = f" on {summary.nodes} nodes" if summary.nodes > 1 else ""
        text.append(f"  {summary.world_size} ranks{nodes}", style="dim")
    for silent in summary.silent_ranks:
        text.append(f"\n{silent}", style="yellow")
    if summary.error:
        text.append(f"\n{summary.error}", style="red")
    if summary.stalled:
        text.append(f"\n{stalled_note(summary.stalled, time.time())} (stacks: Events tab)", style="magenta")
    return text


class RunHeader(Static):
    """`show(summary)` replaces what it says; "loading…" until the first summary arrives.

    The header's height follows its text (height: auto), and a layout pass re-arranges and
    repaints the whole screen. While a run trains the step and loss change several times a
    second, and a long line can wrap onto one more row or one fewer as their digits change: the
    header grows at once but does not shrink while only the wrapping changes (the plot below
    would jump up and down), so a layout pass happens only when it must grow, when a line of
    its own (an error, a silent rank, a stall) comes or goes, or after a resize."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(state_text(None), id=id, classes=classes)
        # (width, its own lines) at the last layout pass.
        self._laid_out: tuple[int, int] | None = None

    def show(self, summary: RunSummary | None) -> None:
        text = state_text(summary)
        width, height = self.content_size
        own_lines = text.plain.count("\n") + 1
        rows = sum(max(1, -(-line.cell_len // width)) for line in text.split("\n")) if width > 0 else 0
        # Grow when the text needs more rows than the header has now, unless it is at its max-height.
        max_height = self.styles.max_height
        at_most = max_height.cells if max_height is not None and max_height.is_cells else None
        must_grow = rows > height and (at_most is None or height < at_most)
        layout = width <= 0 or self._laid_out != (width, own_lines) or must_grow
        self.update(text, layout=layout)
        if layout:
            self._laid_out = (width, own_lines) if width > 0 else None
