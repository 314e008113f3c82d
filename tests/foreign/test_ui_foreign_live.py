"""The UI follows the real tools' runs as they write, deep under the root (Pilot, watcher on): a new
Lightning checkpoint reaches its row in the runs list, a new Hugging Face checkpoint-N/ reaches
the run view's checkpoint table, a new version_N/ gets a row and a removed output_dir loses its
row; the runs list has no timer of its own, so each of these comes through the watcher."""

from __future__ import annotations

import shutil
from pathlib import Path

import trees
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from runctl.tui.widgets.runs_table import RunsTable
from support.listing import FIXED_NOW, make_test_app
from support.waiting import pilot_wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
SIZE = (130, 32)
WAIT_SECONDS = 60.0


async def test_the_list_and_the_run_view_follow_runs_written_deep_down(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES, root, symlinks=True)
    trees.set_mtimes(root, FIXED_NOW - 7200)
    lightning = root / "lightning/lightning_logs/version_0"
    hf = root / "hf/out"
    app = make_test_app(root, tmp_path, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsListScreen) and pilot.app.screen._loaded,
                             "the runs list")
        table = pilot.app.screen.query_one(RunsTable)
        await pilot_wait_for(pilot, app.watch_ready.is_set, "the watcher to start")
        assert table.row_for(lightning).step == 16

        shutil.copyfile(lightning / "checkpoints/epoch=1-step=16.ckpt", lightning / "checkpoints/epoch=2-step=24.ckpt")
        await pilot_wait_for(pilot, lambda: table.row_for(lightning).step == 24, "the new Lightning step in its row")

        version_1 = root / "lightning/lightning_logs/version_1"
        shutil.copytree(lightning, version_1)
        await pilot_wait_for(pilot, lambda: table.row_for(version_1) is not None, "a row for the new version_1/")
        assert table.row_for(version_1).name == "lightning/lightning_logs/version_1"

        shutil.rmtree(root / "hf_bin")
        await pilot_wait_for(pilot, lambda: table.row_for(root / "hf_bin/out") is None, "the removed run's row to go")

        pilot.app.open_run(hf)
        await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunViewScreen) and pilot.app.screen.summary,
                             "the HF run view")
        checkpoints = pilot.app.screen.query_one(CheckpointTable)
        await pilot_wait_for(pilot, lambda: checkpoints.row_count > 0, "the HF checkpoints")
        assert "checkpoint-8/model.safetensors" not in checkpoints.infos
        shutil.copytree(hf / "checkpoint-6", hf / "checkpoint-8")
        await pilot_wait_for(pilot, lambda: "checkpoint-8/model.safetensors" in checkpoints.infos,
                             "checkpoint-8 in the run view")
        assert checkpoints.infos["checkpoint-8/model.safetensors"].step == 8
        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: table.row_for(hf) is not None and table.row_for(hf).step == 6, "the list")
    assert pilot.app.return_code in (None, 0)
