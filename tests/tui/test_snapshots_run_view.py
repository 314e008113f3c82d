"""SVG snapshots of the run view (a corrupt and a missing checkpoint) and of the extend dialog.

Deterministic: fixture runs with fixed times, the app's clock fixed (ages), no watcher, no cursor
blink, and the system-stats tab (live machine numbers) is not the one shown. Review the report
before `pytest --snapshot-update`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from runctl.tui.app import RunctlApp, make_app
from runctl.tui.screens.extend_dialog import ExtendDialog
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from runctl.tui.widgets.loss_plot import LossPlot
from support.run_view import FIXED_NOW, write_run

WAIT_SECONDS = 30.0


def app_with_run(tmp_path: Path) -> tuple[RunctlApp, Path]:
    run = write_run(tmp_path, "alpha", corrupt=(300,), missing=(200,))
    return make_app(tmp_path, watch=False, now=lambda: FIXED_NOW, keymap_path=tmp_path / "no-keys.yaml"), run


def opened(run: Path):
    """run_before: open the run and wait until every badge is final and the plot has its data."""

    async def run_before(pilot) -> None:
        pilot.app.open_run(run)
        deadline = time.monotonic() + WAIT_SECONDS

        def ready() -> bool:
            screen = pilot.app.screen
            if not isinstance(screen, RunViewScreen) or screen.summary is None:
                return False
            infos = screen.query_one(CheckpointTable).infos.values()
            verified = bool(infos) and all(i.status in ("missing", "corrupt") or i.level == "full" for i in infos)
            return verified and screen.query_one(LossPlot).data.last_step == 300

        while not ready():
            assert time.monotonic() < deadline, "the run view did not load"
            await asyncio.sleep(0.05)
        await pilot.pause(0.3)  # past the plot's redraw throttle

    return run_before


def test_run_view_with_corrupt_and_missing_checkpoints(snap_compare, tmp_path: Path) -> None:
    app, run = app_with_run(tmp_path)
    assert snap_compare(app, terminal_size=(110, 34), run_before=opened(run))


def test_run_view_on_80x24(snap_compare, tmp_path: Path) -> None:
    app, run = app_with_run(tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=opened(run))


def test_extend_dialog(snap_compare, tmp_path: Path) -> None:
    app, run = app_with_run(tmp_path)
    open_run = opened(run)

    async def run_before(pilot) -> None:
        await open_run(pilot)
        await pilot.press("e")
        while not isinstance(pilot.app.screen, ExtendDialog):
            await asyncio.sleep(0.05)
        await pilot.press("+", "2", "0", "0")

    assert snap_compare(app, terminal_size=(110, 34), run_before=run_before)
