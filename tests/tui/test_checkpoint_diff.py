"""The run view's checkpoint diff: space marks two checkpoints, `D` opens the per-tensor table.

Fixture checkpoints are real torch.save files: step s holds layer.weight = s everywhere and
layer.bias = 0, so the expected figures are known exactly (100 -> 300: relative change 2, cosine 1,
largest change 200; the zero bias: no change, cosine undefined).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from runctl.runs.layout import checkpoint_name
from runctl.tui.app import make_app
from runctl.tui.screens.checkpoint_diff import CheckpointDiffScreen
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from runctl.tui.widgets.fitted_table import FittedDataTable
from support.run_view import FIXED_NOW, make_test_app, write_run
from support.ui import open_run, select
from support.waiting import pilot_wait_for

WAIT_SECONDS = 30.0


async def mark(pilot, screen: RunViewScreen, step: int) -> None:
    await select(pilot, screen, checkpoint_name(step))
    await pilot.press("space")


async def test_mark_two_and_D_shows_the_change_per_tensor(tmp_path: Path) -> None:
    run = write_run(tmp_path, "alpha", corrupt=(200,))
    app = make_test_app(tmp_path, tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, run)
        table = screen.query_one(CheckpointTable)
        assert screen.check_action("diff", ()) is None  # dimmed: nothing marked
        await mark(pilot, screen, 300)
        assert screen.check_action("diff", ()) is None  # one mark is not enough
        await mark(pilot, screen, 100)
        assert table.marked == [checkpoint_name(300), checkpoint_name(100)]
        assert "◆" in str(table.get_row(checkpoint_name(100))[0])
        assert screen.check_action("diff", ()) is True
        await pilot.press("D")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, CheckpointDiffScreen)
                             and app.screen.result is not None, "the diff to be computed")
        diff = app.screen
        assert (diff.a.name, diff.b.name) == (checkpoint_name(100), checkpoint_name(300))  # older first
        rows = [diff.query_one(FittedDataTable).get_row_at(i)
                for i in range(diff.query_one(FittedDataTable).row_count)]
        assert [[str(cell) for cell in row] for row in rows] == [
            ["layer.weight", "4x3", "2", "1", "200"],
            ["layer.bias", "4", "0", "-", "0"],
        ]
        assert "relative L2 2, cosine 1, max |Δ| 200" in str(diff.query_one("#diff-total").render())
        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: app.screen is screen, "the run view again")

        # A third mark drops the oldest; marking a corrupt file is allowed, its diff says why not.
        await mark(pilot, screen, 200)
        assert table.marked == [checkpoint_name(100), checkpoint_name(200)]
        await pilot.press("D")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, CheckpointDiffScreen)
                             and app.screen.error is not None, "the refused diff")
        assert "refusing to load: corrupt" in app.screen.error
        assert app.screen.query_one(FittedDataTable).row_count == 0


def opened_diff(run: Path):
    async def run_before(pilot) -> None:
        pilot.app.open_run(run)
        deadline = time.monotonic() + WAIT_SECONDS
        while not (isinstance(pilot.app.screen, RunViewScreen)
                   and any(len(table.infos) == 3 for table in pilot.app.screen.query(CheckpointTable))):
            assert time.monotonic() < deadline, "the run view did not load"
            await asyncio.sleep(0.05)
        table = pilot.app.screen.query_one(CheckpointTable)
        for step in (100, 300):
            table.toggle_mark(checkpoint_name(step))
        await pilot.press("D")
        while not (isinstance(pilot.app.screen, CheckpointDiffScreen) and pilot.app.screen.result is not None):
            assert time.monotonic() < deadline, "the diff was not computed"
            await asyncio.sleep(0.05)
        await pilot.pause(0.2)

    return run_before


def test_diff_screen_snapshot(snap_compare, tmp_path: Path) -> None:
    run = write_run(tmp_path, "alpha")
    app = make_app(tmp_path, watch=False, now=lambda: FIXED_NOW, keymap_path=tmp_path / "no-keys.yaml")
    assert snap_compare(app, terminal_size=(100, 16), run_before=opened_diff(run))
