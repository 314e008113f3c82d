"""Helpers for the UI tests that drive the app with Textual's Pilot: opening a run, moving the
checkpoint table's cursor as a user would, recording the notifications the app shows, and waiting
for a screen to settle before an SVG snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from runctl.tui.widgets.runs_table import RunsTable
from textual.widgets import DataTable

from support.waiting import pilot_wait_for


def notes(app: Any) -> list[str]:
    """The messages of the notifications the app shows now."""
    return [n.message for n in app._notifications]


def settled(screen: RunViewScreen) -> bool:
    """Every checkpoint row has its final badge (full verification done, or nothing to verify: a
    quarantined file is checked by `runctl verify` of its folder, not by the run view)."""
    infos = screen.query_one(CheckpointTable).infos.values()
    final = ("missing", "corrupt", "partial", "quarantined")
    return all(i.status in final or i.level in ("full", "deep") for i in infos)


async def open_run(pilot: Any, run_dir: Path) -> RunViewScreen:
    """Open `run_dir` in the run view and wait until its checkpoints are verified."""
    pilot.app.open_run(run_dir)
    await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunViewScreen)
                         and pilot.app.screen.summary is not None and bool(pilot.app.screen.run_cfg),
                         "the run view to load")
    screen = pilot.app.screen
    await pilot_wait_for(pilot, lambda: settled(screen), "checkpoint verification")
    return screen


async def select(pilot: Any, screen: RunViewScreen, name: str) -> None:
    """Move the table cursor to checkpoint `name` with the arrow keys, as a user would."""
    table = screen.query_one(CheckpointTable)
    table.focus()
    target = table.get_row_index(name)
    while table.cursor_row != target:
        await pilot.press("down" if table.cursor_row < target else "up")
    await pilot.pause()
    assert screen.selected_checkpoint is not None and screen.selected_checkpoint.name == name


class Notifications:
    """Records every notification the app shows (App.notify is called from threads too)."""

    def __init__(self, app: Any) -> None:
        self.messages: list[tuple[str, str]] = []
        original = app.notify

        def notify(message: str, *args: Any, **kwargs: Any) -> Any:
            self.messages.append((str(message), str(kwargs.get("severity", "information"))))
            return original(message, *args, **kwargs)

        app.notify = notify

    def text(self) -> str:
        return "\n".join(message for message, _ in self.messages)

    def matching(self, fragment: str) -> list[tuple[str, str]]:
        return [(m, s) for m, s in self.messages if fragment in m]


def columns_fitted(screen: Any) -> bool:
    """DataTable sizes its columns to their cells when idle; until then they are label-wide."""
    for table in screen.query(DataTable):
        if table.row_count and not any(
            column.content_width > len(str(column.label)) for column in table.columns.values()
        ):
            return False
    return True


async def columns_refitted(pilot: Any) -> None:
    """Wait until the screen's tables fit their cells, and their repaint (for an SVG snapshot)."""
    while not columns_fitted(pilot.app.screen):
        await pilot.pause(0.05)
    await pilot.pause()


async def runs_list_loaded(pilot: Any) -> None:
    """A snapshot's `run_before`: the runs list's rows (from a thread worker) are in and its columns
    fitted; bounded by the test's timeout."""
    while not (isinstance(pilot.app.screen, RunsListScreen) and pilot.app.screen._loaded):
        await pilot.pause(0.05)
    await columns_refitted(pilot)


async def select_run(pilot: Any, run_dir: Path) -> RunsTable:
    """Move the runs list's cursor to `run_dir`'s row once it is listed; returns the table."""
    table = pilot.app.screen.query_one(RunsTable)
    await pilot_wait_for(pilot, lambda: table.row_for(run_dir) is not None, f"row of {run_dir.name}")
    table.move_cursor(row=table.get_row_index(str(run_dir)))
    await pilot.pause()
    return table


async def start_with_s(pilot: Any, run_dir: Path) -> RunsTable:
    """Select `run_dir` in the runs list and press `s` (start or resume it); returns the table."""
    table = await select_run(pilot, run_dir)
    await pilot.press("s")
    return table
