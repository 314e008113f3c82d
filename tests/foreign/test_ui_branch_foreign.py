"""`b` on another tool's checkpoint in the run view (Pilot): the branch dialog starts from a built-in
config, the user fits it to the checkpoint's model, and a runctl run starts from its weights; the
foreign folder is not written."""

from __future__ import annotations

import shutil
from pathlib import Path

import trees
import yaml
from runctl.tui.app import make_app
from runctl.tui.screens.branch_dialog import BranchDialog
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from support.waiting import pilot_wait_for
from textual.widgets import Input, TextArea

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
WAIT_SECONDS = 120.0
CONFIG = """task: digits_mlp
model: {hidden: 32, depth: 1}
max_steps: 2
eval: {every: 1, batches: 1}
log: {every: 1}
checkpoint: {async: false}
"""


async def test_b_on_a_plain_folder_checkpoint_branches_a_runctl_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    foreign = root / "experiments" / "mlp_narrow_mnist"
    shutil.copytree(FIXTURES / "plain" / "checkpoints" / "mlp_narrow_mnist", foreign)
    before = trees.tree_state(foreign)
    app = make_app(root, watch=False, keymap_path=tmp_path / "no-keys.yaml")
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsListScreen) and pilot.app.screen._loaded,
                             "the runs list")
        pilot.app.open_run(foreign)
        await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunViewScreen)
                             and any(t.row_count == 3 for t in pilot.app.screen.query(CheckpointTable)), "the checkpoints")
        view = pilot.app.screen
        table = view.query_one(CheckpointTable)
        table.move_cursor(row=list(table.infos).index("checkpoint_step_01000.pt"))
        await pilot.pause()
        assert view.selected_checkpoint.name == "checkpoint_step_01000.pt"
        assert view.check_action("branch", ()) is True
        assert view.check_action("resume_from", ()) is None  # the folder itself stays read-only
        await pilot.press("b")
        await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, BranchDialog), "the branch dialog")
        dialog = pilot.app.screen
        assert yaml.safe_load(dialog.query_one("#config", TextArea).text)["task"] == "digits_mlp"
        dialog.query_one("#name", Input).value = "from-plain"
        dialog.query_one("#config", TextArea).text = CONFIG
        await pilot.press("ctrl+s")
        run_dir = root / "from-plain"
        await pilot_wait_for(pilot, lambda: (run_dir / "checkpoints" / "step_00000002.pt").exists()
                             and not pilot.app.engine_host.training_runs(), "the branch to train")
        parent = yaml.safe_load((run_dir / "run.yaml").read_text())["parent"]
        assert parent["path"] == str((foreign / "checkpoint_step_01000.pt").resolve())
        assert (parent["step"], parent["weights_only"], parent["layout"]) == (1000, True, "plain")
    assert trees.tree_state(foreign) == before, "the UI wrote into the foreign folder"
