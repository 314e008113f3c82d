"""Deleting a sharded checkpoint (a DCP step folder) with the run view's `d`, and a kill midway.

One real `parallel.strategy: fsdp` run in one process (step folders at steps 2, 4 and 6, each with
its manifest entry) is copied per test. The folder goes with its manifest entry; a delete killed
after the folder was renamed aside leaves a temp folder (never a step folder missing shards), which
the next start removes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from runctl.runs.layout import CHECKPOINT_DIR
from runctl.runs.manifest import read_manifest
from runctl.tui.screens.confirm_delete import ConfirmDeleteScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from support.cli import run_cli, verify_json
from support.run_files import records_by_name
from support.run_view import make_test_app
from support.runs import train_finished_run
from support.store_pauses import delete_killed_at
from support.ui import Notifications, open_run, select
from support.waiting import pilot_wait_for

FOLDERS = ("step_00000002", "step_00000004", "step_00000006")


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = train_finished_run(tmp_path_factory.mktemp("delete-step-folder"),
                                 ["max_steps=6", "checkpoint.every=2", "checkpoint.keep_last=5",
                                  "parallel.strategy=fsdp", "device=cpu"])
    assert sorted(p.name for p in (run_dir / CHECKPOINT_DIR).iterdir() if p.is_dir()) == list(FOLDERS)
    return run_dir


@pytest.fixture
def run_copy(sharded_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / sharded_run.name
    shutil.copytree(sharded_run, copy)
    return copy


def verdicts(run: Path, cwd: Path) -> dict[str, str]:
    _, document = verify_json(run, cwd=cwd)
    return {name: record["status"] for name, record in records_by_name(document).items()}


async def test_d_deletes_a_step_folder_with_its_manifest_entry(run_copy: Path, tmp_path: Path) -> None:
    app = make_test_app(tmp_path / "runs", tmp_path)
    notes = Notifications(app)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, run_copy)
        table = screen.query_one(CheckpointTable)
        await select(pilot, screen, "step_00000002")
        assert screen.check_action("delete", ()) is True
        await pilot.press("d")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, ConfirmDeleteScreen), "the confirmation")
        await pilot.press("y")
        await pilot_wait_for(pilot, lambda: bool(notes.matching("deleted step_00000002")), "the delete")
        await pilot_wait_for(pilot, lambda: "step_00000002" not in table.infos
                             or table.infos["step_00000002"].status != "ok", "the row to update")
    checkpoints = run_copy / CHECKPOINT_DIR
    assert not (checkpoints / "step_00000002").exists()
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["step_00000004", "step_00000006"]
    assert "step_00000002" not in read_manifest(checkpoints).files
    assert {name: status for name, status in verdicts(run_copy, tmp_path).items() if name in FOLDERS} \
        == {"step_00000004": "ok", "step_00000006": "ok"}


def test_a_delete_killed_after_the_rename_leaves_a_temp_folder_the_next_start_removes(
        run_copy: Path, tmp_path: Path) -> None:
    pid = delete_killed_at(run_copy, "step_00000004", "delete:folder-renamed")
    checkpoints = run_copy / CHECKPOINT_DIR
    temp = checkpoints / f"step_00000004.tmp.{pid}"
    assert temp.is_dir() and not (checkpoints / "step_00000004").exists()
    assert "step_00000004" not in read_manifest(checkpoints).files
    # Neither a lost checkpoint nor a half step folder: the others verify, the temp is no checkpoint.
    listed = verdicts(run_copy, tmp_path)
    assert listed.get("step_00000002") == "ok" and listed.get("step_00000006") == "ok"
    assert "step_00000004" not in listed
    done = run_cli(["extend", run_copy, "--steps", "2"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not temp.exists()
    assert (checkpoints / "step_00000008").is_dir()
