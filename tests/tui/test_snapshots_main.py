"""SVG snapshots of the welcome, the runs list with a run in every state, and the help screen.

Deterministic: a fixed clock (now=FIXED_NOW), no watcher, a relative root (so the path shown is
the same on every machine), fixture runs with fixed timestamps. Review a changed snapshot in the
report before `pytest --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import every_state_root, fixed_now
from runctl.tui.app import make_app
from runctl.tui.screens.runs_list import RunsListScreen
from textual.widgets import DataTable

SIZE = (120, 30)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def app_on(root: Path):
    return make_app(root, watch=False, now=fixed_now, keymap_path=Path("keys.yaml"))


def columns_fitted(screen) -> bool:
    """DataTable sizes its columns to their cells when idle; until then they are label-wide."""
    for table in screen.query(DataTable):
        if table.row_count and not any(
            column.content_width > len(str(column.label)) for column in table.columns.values()
        ):
            return False
    return True


async def until_loaded(pilot) -> None:
    # The rows come from a thread worker; wait for them (bounded by the test timeout).
    while not (isinstance(pilot.app.screen, RunsListScreen) and pilot.app.screen._loaded
               and columns_fitted(pilot.app.screen)):
        await pilot.pause(0.05)
    await pilot.pause()  # let the refit columns repaint


async def help_fitted(pilot) -> None:
    await until_loaded(pilot)
    await pilot.press("question_mark")
    while not columns_fitted(pilot.app.screen):
        await pilot.pause(0.05)
    await pilot.pause()


def test_welcome_on_an_empty_root(snap_compare, in_tmp: Path) -> None:
    Path("runs").mkdir()
    assert snap_compare(app_on(Path("runs")), terminal_size=SIZE, run_before=until_loaded)


def test_runs_list_with_every_state(snap_compare, in_tmp: Path) -> None:
    _, lock = every_state_root(Path("runs"))
    try:
        assert snap_compare(app_on(Path("runs")), terminal_size=SIZE, run_before=until_loaded)
    finally:
        lock.release()


def test_help_screen(snap_compare, in_tmp: Path) -> None:
    _, lock = every_state_root(Path("runs"))
    try:
        assert snap_compare(app_on(Path("runs")), terminal_size=SIZE, run_before=help_fitted)
    finally:
        lock.release()
