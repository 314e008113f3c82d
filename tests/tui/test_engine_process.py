"""The UI with `--engine process` (tui/engine_process.py), driven with Pilot and the REAL engine in
child processes: the same keys as with the thread host (start, checkpoint now, stop, resume with
the notification naming the checkpoint and the damaged one skipped, extend live and of a stopped
run, both quit choices) and the child's crash as the one error line."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from runctl.engine.control import write_command
from runctl.runs.layout import CHECKPOINT_DIR
from runctl.runs.lock import is_locked
from runctl.runs.manifest import read_manifest
from runctl.runs.status import read_status
from runctl.tui.app import make_app
from runctl.tui.engine_process import ProcessEngineHost
from runctl.tui.screens.quit_confirm import QuitConfirmScreen
from runctl.tui.screens.runs_list import RunsListScreen
from support.cli import cli_env
from support.configs import slow_made_run, slow_root_and_config, write_task_config
from support.listing import fixed_now
from support.run_files import events, metrics_step, run_state, status_step
from support.ui import Notifications, start_with_s
from support.waiting import pilot_wait_for, wait_for

SIZE = (120, 34)
# A child imports torch before it trains: seconds on a loaded 2-core box.
WAIT_SECONDS = 120.0


@pytest.fixture(autouse=True)
def pythonpath_with_test_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The children import the test task from tests/support."""
    monkeypatch.setenv("PYTHONPATH", cli_env()["PYTHONPATH"])


def child_app(root: Path, tmp_path: Path, watch: bool = True):
    app = make_app(root, watch=watch, now=fixed_now, keymap_path=tmp_path / "no-keys.yaml", engine="process")
    assert isinstance(app.engine_host, ProcessEngineHost)
    return app


def trained_by_a_child(run_dir: Path) -> bool:
    """The run's engine is another process than this one (the test's, which hosts the UI)."""
    pid = read_status(run_dir).get("pid")
    return isinstance(pid, int) and pid != os.getpid() and is_locked(run_dir)


def children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


async def test_s_c_x_r_and_live_extend_with_the_engine_in_a_child(tmp_path: Path) -> None:
    root, run_dir = slow_made_run(tmp_path)
    app = child_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        table = await start_with_s(pilot, run_dir)
        assert app.engine_host.is_training(run_dir)
        await pilot_wait_for(pilot, lambda: trained_by_a_child(run_dir) and metrics_step(run_dir) >= 2,
                             "a child process to train the run", timeout=WAIT_SECONDS)
        await pilot_wait_for(pilot, lambda: table.row_for(run_dir).state == "running", "the row to say running")

        await pilot.press("c")
        await pilot_wait_for(pilot, lambda: any(e["event"] == "checkpoint" for e in events(run_dir)),
                             "the checkpoint asked for with c", timeout=WAIT_SECONDS)
        await pilot.press("e")
        await pilot_wait_for(pilot, lambda: type(app.screen).__name__ == "ExtendDialog", "the extend dialog")
        await pilot.press("plus", "1", "0", "0", "0", "enter")  # 100000 + 1000, while it trains
        await pilot_wait_for(pilot, lambda: any(e["event"] == "extended" for e in events(run_dir)),
                             "the child to take the extension", timeout=WAIT_SECONDS)
        assert [e["to_max"] for e in events(run_dir) if e["event"] == "extended"] == [101000]
        await pilot.press("x")
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir) and run_state(run_dir) == "stopped",
                             "the graceful stop", timeout=WAIT_SECONDS)
        stopped_at = status_step(run_dir)
        assert f"step_{stopped_at:08d}.pt" in read_manifest(run_dir / CHECKPOINT_DIR).files
        await pilot_wait_for(pilot, lambda: table.row_for(run_dir).state == "stopped", "the row to say stopped")

        # A damaged newest checkpoint: r resumes from the one before and the notification says so.
        saved = sorted(read_manifest(run_dir / CHECKPOINT_DIR).files)
        assert len(saved) >= 2, saved
        newest = run_dir / CHECKPOINT_DIR / saved[-1]
        newest.write_bytes(newest.read_bytes()[:-100])
        notes = Notifications(app)
        await pilot.press("r")
        await pilot_wait_for(pilot, lambda: notes.matching(f"resuming from {saved[-2]}; skipped {saved[-1]}"),
                             "the notification naming the checkpoint and the skipped one", timeout=WAIT_SECONDS)
        await pilot_wait_for(pilot, lambda: trained_by_a_child(run_dir), "the child to resume", timeout=WAIT_SECONDS)
        await pilot.press("x")
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir) and run_state(run_dir) == "stopped",
                             "the second stop", timeout=WAIT_SECONDS)
        assert not [m for m, severity in notes.messages if severity == "error"]
        assert isinstance(app.screen, RunsListScreen)
    assert not children()


async def test_a_crash_is_one_error_line_then_extend_resume_from_and_branch_in_children(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    app = child_app(root, tmp_path, watch=False)
    async with app.run_test(size=SIZE) as pilot:
        host = app.engine_host
        notes = Notifications(app)
        crash = write_task_config(tmp_path / "crash.yaml", max_steps=50, crash_at=3)
        run_dir = host.start_new(str(crash), "boom", [])
        await pilot_wait_for(pilot, lambda: not host.is_training(run_dir), "the crash", timeout=WAIT_SECONDS)
        assert run_state(run_dir) == "crashed"
        errors = [m for m, severity in notes.messages if severity == "error"]
        assert len(errors) == 1 and errors[0].startswith("boom: crashed at step 3: ") \
            and "injected failure" in errors[0], errors
        assert app.is_running

        def done(run: Path, at: int) -> bool:
            return not host.is_training(run) and run_state(run) == "finished" and status_step(run) == at

        short = write_task_config(tmp_path / "short.yaml", max_steps=20, checkpoint_every=10)
        run_dir = host.start_new(str(short), "short", [])
        await pilot_wait_for(pilot, lambda: done(run_dir, 20), "the short run to finish", timeout=WAIT_SECONDS)
        assert host.extend(run_dir, 30)  # a finished run: run.yaml is extended, then a child resumes it
        await pilot_wait_for(pilot, lambda: done(run_dir, 30), "the extended run to finish at 30",
                             timeout=WAIT_SECONDS)
        assert notes.matching("short: extended 20 -> 30 steps, resuming")

        older = run_dir / CHECKPOINT_DIR / "step_00000010.pt"
        assert host.resume(run_dir, from_ckpt=older)  # R on a chosen checkpoint
        await pilot_wait_for(pilot, lambda: events(run_dir, "resumed")[-1]["step"] == 10 and done(run_dir, 30),
                             "the run resumed from step 10 to finish again", timeout=WAIT_SECONDS)
        assert events(run_dir, "resumed")[-1]["from"] == "step_00000010.pt"
        assert notes.matching("short: resuming from step_00000010.pt")

        branch = host.branch(run_dir, run_dir / CHECKPOINT_DIR / "step_00000020.pt", "twig", ["max_steps=40"])
        assert branch == root / "twig"
        await pilot_wait_for(pilot, lambda: done(branch, 40), "the branch to train to 40", timeout=WAIT_SECONDS)
        assert events(branch, "started")[0]["step"] == 20
        assert len([m for m, severity in notes.messages if severity == "error"]) == 1


async def test_q_then_stop_and_q_then_keep_training_with_children(tmp_path: Path) -> None:
    root, config = slow_root_and_config(tmp_path)
    app = child_app(root, tmp_path, watch=False)
    async with app.run_test(size=SIZE) as pilot:
        stopped = app.engine_host.start_new(str(config), "stopped", [])
        await pilot_wait_for(pilot, lambda: trained_by_a_child(stopped) and metrics_step(stopped) >= 1,
                             "training to begin", timeout=WAIT_SECONDS)
        await pilot.press("q")
        assert isinstance(app.screen, QuitConfirmScreen)
        await pilot.press("s")
        await pilot_wait_for(pilot, lambda: app.return_code is not None, "the app to quit", timeout=WAIT_SECONDS)
    assert run_state(stopped) == "stopped" and not is_locked(stopped)
    assert f"step_{status_step(stopped):08d}.pt" in read_manifest(stopped / CHECKPOINT_DIR).files
    assert not children()

    app = child_app(root, tmp_path, watch=False)
    async with app.run_test(size=SIZE) as pilot:
        run_dir = app.engine_host.start_new(str(config), "bg", [])
        await pilot_wait_for(pilot, lambda: trained_by_a_child(run_dir) and metrics_step(run_dir) >= 1,
                             "training to begin", timeout=WAIT_SECONDS)
        await pilot.press("q", "k")
        await pilot_wait_for(pilot, lambda: app.return_code is not None, "the app to quit", timeout=WAIT_SECONDS)
    handed_over_at = max(e["step"] for e in events(run_dir) if e["event"] == "stopped")
    wait_for(lambda: is_locked(run_dir) and metrics_step(run_dir) > handed_over_at, WAIT_SECONDS,
             "a background process to take the run over")
    write_command(run_dir, "stop")  # what `runctl stop` does
    wait_for(lambda: not is_locked(run_dir) and run_state(run_dir) == "stopped", WAIT_SECONDS,
             "the background process to stop")
    assert any(e["event"] == "resumed" and e["step"] == handed_over_at for e in events(run_dir))
