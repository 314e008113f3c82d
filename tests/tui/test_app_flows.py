"""The app driven with Pilot and the REAL engine on CPU: new run, start, stop, checkpoint now,
resume, extend, a crash, both quit choices, and SIGHUP (the app in a pty, in a subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from runctl.engine.control import write_command
from runctl.runs.layout import CHECKPOINT_DIR
from runctl.runs.lock import is_locked
from runctl.runs.manifest import read_manifest
from runctl.runs.status import read_status
from runctl.tui.screens.new_run import NewRunScreen
from runctl.tui.screens.quit_confirm import QuitConfirmScreen
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.widgets.runs_table import RunsTable
from support.cli import cli_env
from support.configs import slow_made_run, slow_root_and_config, write_task_config, write_tiny_config
from support.listing import make_test_app
from support.run_files import events, metrics_step, run_state, status_step
from support.terminal import Terminal
from support.ui import notes, select_run, start_with_s
from support.waiting import pilot_wait_for, wait_for

SIZE = (120, 34)
WAIT_SECONDS = 60.0


async def back_to_list(pilot) -> RunsTable:
    while not isinstance(pilot.app.screen, RunsListScreen):
        await pilot.press("escape")
    table = pilot.app.screen.query_one(RunsTable)
    await pilot_wait_for(pilot, lambda: table.total_runs > 0, "the runs list to show the run")
    return table


async def test_n_starts_a_tiny_run_that_finishes_then_e_extends_it(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    config = write_tiny_config(tmp_path / "tiny.yaml", max_steps=30)
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        assert isinstance(app.screen, NewRunScreen)
        await pilot_wait_for(pilot, lambda: app.screen.query_one("#new-run-config").has_focus, "the dialog's focus")
        app.screen.query_one("#new-run-config").value = str(config)
        app.screen.query_one("#new-run-name").value = "tiny"
        await pilot.press("enter")
        run_dir = root / "tiny"
        await pilot_wait_for(pilot, lambda: type(app.screen).__name__ == "RunViewScreen", "the run view to open")
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir) and run_state(run_dir) == "finished",
                             "the tiny run to finish")
        assert read_manifest(run_dir / CHECKPOINT_DIR).files["step_00000030.pt"].kind == "final"

        table = await back_to_list(pilot)
        await select_run(pilot, run_dir)
        await pilot_wait_for(pilot, lambda: table.row_for(run_dir).state == "finished", "the row to say finished")
        await pilot.press("e")
        await pilot_wait_for(pilot, lambda: type(app.screen).__name__ == "ExtendDialog", "the extend dialog")
        await pilot.press("plus", "1", "0", "enter")
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir) and status_step(run_dir) == 40
                             and run_state(run_dir) == "finished", "the extended run to finish at 40")
        assert [e["to_max"] for e in events(run_dir) if e["event"] == "extended"] == [40]


async def test_new_run_dialog_shows_bad_input_and_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        dialog = app.screen
        await pilot_wait_for(pilot, lambda: dialog.query_one("#new-run-config").has_focus, "the dialog's focus")
        dialog.query_one("#new-run-config").value = "no_such_config"
        await pilot.press("enter")
        error = str(dialog.query_one("#new-run-error").render())
        assert "no_such_config" in error
        dialog.query_one("#new-run-config").value = "digits_mlp"
        dialog.query_one("#new-run-overrides").value = "optim.lrr=1"
        await pilot.press("enter")
        assert "optim.lrr" in str(dialog.query_one("#new-run-error").render())
        assert app.screen is dialog
        assert list(root.iterdir()) == []
        await pilot.press("escape")
        assert isinstance(app.screen, RunsListScreen)


async def test_welcome_enter_trains_a_builtin_and_opens_its_view(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        # The welcome is mounted once the first scan finds the folder empty, so it may not exist yet.
        await pilot_wait_for(pilot, lambda: any(w.has_focus for w in app.screen.query("#welcome-configs")),
                             "the welcome, focused")
        await pilot.press("enter")  # the first built-in config, trained right here
        await pilot_wait_for(pilot, lambda: type(app.screen).__name__ == "RunViewScreen", "its run view")
        run_dir = app.screen.run_dir
        assert run_dir.parent == root
        # digits_mlp trains in seconds on a CPU (it may be done before the view is first looked at):
        # the newcomer sees it through to its final checkpoint, trained by this process's engine.
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir) and run_state(run_dir) == "finished",
                             "the built-in run to finish", timeout=180)
        assert events(run_dir, "started")[0]["pid"] == os.getpid()
        files = read_manifest(run_dir / CHECKPOINT_DIR).files
        assert any(entry.kind == "final" and entry.step == status_step(run_dir) for entry in files.values())
        await back_to_list(pilot)


async def test_s_starts_a_created_run_then_c_x_r_x(tmp_path: Path) -> None:
    root, run_dir = slow_made_run(tmp_path)
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        table = await start_with_s(pilot, run_dir)
        await pilot_wait_for(pilot, lambda: metrics_step(run_dir) >= 2, "training to begin")

        await pilot.press("c")
        await pilot_wait_for(pilot, lambda: any(e["event"] == "checkpoint" for e in events(run_dir)),
                             "the checkpoint asked for with c")
        await pilot.press("x")
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir) and run_state(run_dir) == "stopped",
                             "the graceful stop")
        stopped_at = status_step(run_dir)
        files = read_manifest(run_dir / CHECKPOINT_DIR).files
        assert f"step_{stopped_at:08d}.pt" in files  # stop wrote a checkpoint at the step it stopped
        await pilot_wait_for(pilot, lambda: table.row_for(run_dir).state == "stopped", "the row to say stopped")

        await pilot.press("r")
        await pilot_wait_for(pilot, lambda: any(e["event"] == "resumed" for e in events(run_dir)), "the resume")
        resumed = [e for e in events(run_dir) if e["event"] == "resumed"][-1]
        assert resumed["step"] == stopped_at and resumed["from"] == f"step_{stopped_at:08d}.pt"
        await pilot_wait_for(pilot, lambda: any(f"resuming from step_{stopped_at:08d}.pt" in n for n in notes(app)),
                             "the notification naming the checkpoint")
        await pilot_wait_for(pilot, lambda: metrics_step(run_dir) > stopped_at, "training past the stop")
        await pilot.press("x")
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir) and run_state(run_dir) == "stopped",
                             "the second stop")


async def test_crash_in_training_marks_crashed_and_the_ui_stays_up(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    config = write_task_config(tmp_path / "crash.yaml", max_steps=50, crash_at=3)
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        run_dir = app.engine_host.start_new(str(config), "boom", [])
        await pilot_wait_for(pilot, lambda: not app.engine_host.is_training(run_dir), "the crash")
        assert run_state(run_dir) == "crashed"
        crashed = [e for e in events(run_dir) if e["event"] == "crashed"]
        assert "injected failure" in crashed[0]["error"] and "Traceback" in crashed[0]["traceback"]
        await pilot_wait_for(pilot, lambda: any("crashed at step 3" in n for n in notes(app)), "the crash notification")
        table = await select_run(pilot, run_dir)
        await pilot_wait_for(pilot, lambda: table.row_for(run_dir).state == "crashed", "the row to say crashed")
        assert app.is_running


async def test_q_then_stop_checkpoints_and_quits(tmp_path: Path) -> None:
    root, config = slow_root_and_config(tmp_path)
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        run_dir = app.engine_host.start_new(str(config), "slow", [])
        await pilot_wait_for(pilot, lambda: metrics_step(run_dir) >= 1, "training to begin")
        await pilot.press("ctrl+q")  # Textual's own quit key asks too
        assert isinstance(app.screen, QuitConfirmScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, RunsListScreen) and app.engine_host.is_training(run_dir)
        await pilot.press("q")
        assert isinstance(app.screen, QuitConfirmScreen)
        await pilot.press("s")
        await pilot_wait_for(pilot, lambda: app.return_code is not None, "the app to quit")
    assert run_state(run_dir) == "stopped" and not is_locked(run_dir)
    assert f"step_{status_step(run_dir):08d}.pt" in read_manifest(run_dir / CHECKPOINT_DIR).files


async def test_q_then_keep_training_hands_the_run_to_a_background_process(
        tmp_path: Path, pythonpath_with_test_task: None) -> None:
    root, config = slow_root_and_config(tmp_path)
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        run_dir = app.engine_host.start_new(str(config), "bg", [])
        await pilot_wait_for(pilot, lambda: metrics_step(run_dir) >= 1, "training to begin")
        await pilot.press("q", "k")
        await pilot_wait_for(pilot, lambda: app.return_code is not None, "the app to quit")
    handed_over_at = max(e["step"] for e in events(run_dir) if e["event"] == "stopped")
    wait_for(lambda: is_locked(run_dir) and read_status(run_dir).get("pid") != os.getpid()
             and metrics_step(run_dir) > handed_over_at, WAIT_SECONDS, "a background process to take the run over")
    write_command(run_dir, "stop")  # what `runctl stop` does
    wait_for(lambda: not is_locked(run_dir) and run_state(run_dir) == "stopped", WAIT_SECONDS,
             "the background process to stop")
    assert any(e["event"] == "resumed" and e["step"] == handed_over_at for e in events(run_dir))


@pytest.fixture
def pythonpath_with_test_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subprocesses (the detached resume, the pty app) import the test task from tests/support."""
    monkeypatch.setenv("PYTHONPATH", cli_env()["PYTHONPATH"])


def test_sighup_writes_an_interrupt_checkpoint_before_exit(tmp_path: Path, pythonpath_with_test_task: None) -> None:
    """The SSH connection drops: the app (in a pty) gets SIGHUP while its engine trains."""
    from runctl.engine import api

    root, config = slow_root_and_config(tmp_path)
    run_dir = api.new_run(str(config), root=root, name="ssh")
    terminal = Terminal([root], cwd=tmp_path, term="xterm-256color",
                        env=cli_env({"COLUMNS": "100", "LINES": "30", "RUNCTL_KEYS": str(tmp_path / "no-keys.yaml")}))
    try:
        wait_for(lambda: "ssh" in terminal.output(), WAIT_SECONDS, "the UI to show the run", alive=terminal)
        terminal.type(b"s")  # start the created run in-process
        wait_for(lambda: read_status(run_dir).get("pid") == terminal.pid and metrics_step(run_dir) >= 2,
                 WAIT_SECONDS, "the run to start in the UI", alive=terminal)
        os.kill(terminal.pid, signal.SIGHUP)
        code = terminal.wait(WAIT_SECONDS)
    finally:
        terminal.ensure_dead()
    assert code == 128 + signal.SIGHUP
    assert run_state(run_dir) == "interrupted" and not is_locked(run_dir)
    interrupted = [e for e in events(run_dir) if e["event"] == "interrupted"]
    assert interrupted and interrupted[-1].get("signal") == "SIGHUP"
    last = status_step(run_dir)
    assert read_manifest(run_dir / CHECKPOINT_DIR).files[f"step_{last:08d}.pt"].kind == "interrupt"


async def test_run_trained_elsewhere_shows_live_and_takes_c_and_x(
        tmp_path: Path, pythonpath_with_test_task: None) -> None:
    """A `runctl train` in another process: the watcher shows it running; c and x go through the
    control folder."""
    root, config = slow_root_and_config(tmp_path)
    trainer = subprocess.Popen([sys.executable, "-m", "runctl", "train", str(config), "--root", str(root),
                                "--name", "elsewhere"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = root / "elsewhere"
    try:
        app = make_test_app(root, tmp_path, watch=True)
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one(RunsTable)
            await select_run(pilot, run_dir)
            await pilot_wait_for(pilot, lambda: table.row_for(run_dir).state == "running", "the row to say running")
            assert not app.engine_host.is_training(run_dir)
            await pilot.press("c")
            await pilot_wait_for(pilot, lambda: any(e["event"] == "checkpoint" for e in events(run_dir)),
                                 "the other process's checkpoint")
            await pilot.press("x")
            await pilot_wait_for(pilot, lambda: table.row_for(run_dir).state == "stopped", "the row to say stopped")
        assert trainer.wait(timeout=WAIT_SECONDS) == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
