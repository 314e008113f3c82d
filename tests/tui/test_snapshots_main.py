"""SVG snapshots of the welcome, the runs list with a run in every state, and the help screen.

Deterministic: a fixed clock (now=FIXED_NOW), no watcher, a relative root (so the path shown is
the same on every machine), fixture runs with fixed timestamps. Review a changed snapshot in the
report before `pytest --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runctl.tui.app import make_app
from support.listing import every_state_root, fixed_now
from support.ui import columns_refitted, runs_list_loaded

SIZE = (120, 30)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def app_on(root: Path):
    return make_app(root, watch=False, now=fixed_now, keymap_path=Path("keys.yaml"))


async def help_fitted(pilot) -> None:
    await runs_list_loaded(pilot)
    await pilot.press("question_mark")
    await columns_refitted(pilot)


def test_welcome_on_an_empty_root(snap_compare, in_tmp: Path) -> None:
    Path("runs").mkdir()
    assert snap_compare(app_on(Path("runs")), terminal_size=SIZE, run_before=runs_list_loaded)


def test_runs_list_with_every_state(snap_compare, in_tmp: Path) -> None:
    _, lock = every_state_root(Path("runs"))
    try:
        assert snap_compare(app_on(Path("runs")), terminal_size=SIZE, run_before=runs_list_loaded)
    finally:
        lock.release()


def test_help_screen(snap_compare, in_tmp: Path) -> None:
    _, lock = every_state_root(Path("runs"))
    try:
        assert snap_compare(app_on(Path("runs")), terminal_size=SIZE, run_before=help_fitted)
    finally:
        lock.release()
