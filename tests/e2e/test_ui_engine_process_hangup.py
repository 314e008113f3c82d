"""An SSH drop while the UI trains a run in a child process (`runctl ROOT --engine process`).

The UI runs in a real pseudo-terminal that closes (tests/support/terminal.py), then in a tmux
session that is killed; each time `s` started the run in the UI, so a child process trains it.
The child is in a process group of its own: the terminal's SIGHUP reaches only the UI, which
relays it once. The run ends `interrupted` (signal SIGHUP) with an interrupt checkpoint at the
step it reached (or the checkpoint that step had already written), every process (the UI and the
child) is gone, and `runctl resume` continues the run: bit-exactly against a run that was never
interrupted.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.checkpoints import load_state, state_differences
from support.cli import cli_env, run_cli
from support.configs import write_yaml
from support.run_files import (
    assert_saved_at_interrupted_step,
    events,
    metrics_step,
    status,
    temp_files,
)
from support.terminal import Terminal, describe, wait_all_gone
from support.waiting import wait_for

MAX_STEPS = 300
RUN = "hupchild"
WAIT_SECONDS = 180.0


def write_config(path: Path, step_sleep: float) -> Path:
    """The test task on the digits; the steps of the hung-up runs sleep (no RNG touched), so they
    are still training at the hang-up, and the reference's do not."""
    return write_yaml(path, {
        "task": "support.tasks:factory", "max_steps": MAX_STEPS,
        "model": {"hidden": 16, "step_sleep": step_sleep}, "data": {"batch_size": 32}, "log": {"every": 1},
        "eval": {"every": 100, "batches": 2}, "checkpoint": {"every": 100, "keep_last": 10, "async": True},
        "schedule": {"warmup_steps": 5}})


def ui_env(tmp_path: Path) -> dict[str, str]:
    """COLUMNS/LINES (pytest may export them) would override the terminal's size."""
    env = cli_env({"RUNCTL_KEYS": str(tmp_path / "no-keys.yaml"), "TERM": "xterm-256color"})
    return {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}


def created_run(tmp_path: Path) -> Path:
    """A run created (never trained) under tmp_path/runs, for the UI's `s`."""
    root = tmp_path / "runs"
    root.mkdir()
    from runctl.engine import api

    return Path(api.new_run(str(write_config(tmp_path / "hangup.yaml", step_sleep=0.03)), root=root, name=RUN))


def trained_by_a_child_of(ui_pid: int, run_dir: Path) -> bool:
    pid = status(run_dir).get("pid")
    try:
        return isinstance(pid, int) and pid != ui_pid and psutil.Process(pid).ppid() == ui_pid
    except psutil.NoSuchProcess:
        return False


def check_interrupted(run_dir: Path, processes: list[psutil.Process], after: int) -> int:
    wait_all_gone(processes, WAIT_SECONDS, "the UI and its engine process")
    assert not events(run_dir, "crashed"), events(run_dir, "crashed")
    state = status(run_dir)
    assert state["state"] == "interrupted" and events(run_dir, "interrupted")[-1]["signal"] == "SIGHUP", state
    stopped_at = state["step"]
    assert stopped_at >= after, state
    assert_saved_at_interrupted_step(run_dir, stopped_at)
    assert not temp_files(run_dir), temp_files(run_dir)
    return stopped_at


def test_pty_that_closes_while_a_child_trains_then_resume_is_exact(tmp_path: Path) -> None:
    reference_dir = tmp_path / "reference"
    done = run_cli(["train", write_config(tmp_path / "reference.yaml", step_sleep=0.0), "--root", reference_dir,
                    "--name", "ref"], cwd=tmp_path, timeout=WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    run_dir = created_run(tmp_path)
    terminal = Terminal([tmp_path / "runs", "--engine", "process"], cwd=tmp_path, env=ui_env(tmp_path),
                        term="xterm-256color")
    try:
        wait_for(lambda: RUN in terminal.output(), WAIT_SECONDS,
                 "the UI to show the run", alive=terminal)
        terminal.type(b"s")
        wait_for(lambda: trained_by_a_child_of(terminal.pid, run_dir) and metrics_step(run_dir) >= 5,
                 WAIT_SECONDS, "a child process of the UI to train the run", alive=terminal)
        processes = terminal.tree()
        assert len(processes) >= 2, describe(processes)
        after = metrics_step(run_dir)
        terminal.hang_up()
        code = terminal.wait(WAIT_SECONDS)
    finally:
        terminal.ensure_dead()
    assert code == 128 + signal.SIGHUP
    stopped_at = check_interrupted(run_dir, processes, after)
    assert stopped_at < MAX_STEPS, "the run finished before the hang-up (window too small)"
    done = run_cli(["resume", run_dir], cwd=tmp_path, timeout=WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    assert events(run_dir, "resumed")[-1]["step"] == stopped_at
    final = f"checkpoints/step_{MAX_STEPS:08d}.pt"
    differences = state_differences(load_state(run_dir / final), load_state(reference_dir / "ref" / final))
    assert not differences, f"interrupted + resumed differs from uninterrupted: {differences[:10]}"


class Tmux:
    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"runctl-ui-child-{uuid.uuid4().hex[:8]}"
        self.env = env

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30, env=self.env).stdout

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    server = Tmux(ui_env(tmp_path))
    try:
        yield server
    finally:
        server.kill_server()


def test_killed_tmux_session_while_a_child_trains(tmp_path: Path, tmux: Tmux) -> None:
    run_dir = created_run(tmp_path)
    command = shlex.join([sys.executable, "-m", "runctl", str(tmp_path / "runs"), "--engine", "process"])
    tmux("new-session", "-d", "-s", "ui", "-x", "120", "-y", "34", command)
    ui_pid = int(tmux("display-message", "-p", "-t", "ui", "#{pane_pid}").strip())
    wait_for(lambda: RUN in tmux("capture-pane", "-p", "-t", "ui"), WAIT_SECONDS, "the UI to show the run")
    tmux("send-keys", "-t", "ui", "s")
    wait_for(lambda: trained_by_a_child_of(ui_pid, run_dir) and metrics_step(run_dir) >= 5, WAIT_SECONDS,
             "a child process of the UI to train the run")
    ui = psutil.Process(ui_pid)
    processes = [ui, *ui.children(recursive=True)]
    after = metrics_step(run_dir)
    tmux("kill-session", "-t", "ui")
    stopped_at = check_interrupted(run_dir, processes, after)
    done = run_cli(["resume", run_dir], cwd=tmp_path, timeout=WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    assert events(run_dir, "resumed")[-1]["step"] == stopped_at
    assert status(run_dir)["state"] == "finished" and status(run_dir)["step"] == MAX_STEPS


def test_kill9_of_the_ui_stops_its_child_with_a_checkpoint(tmp_path: Path) -> None:
    """Nothing relays a signal when the UI is killed outright: the kernel's parent-death signal
    (SIGTERM) reaches the child, which checkpoints and ends `interrupted`; no orphan trains on."""
    run_dir = created_run(tmp_path)
    terminal = Terminal([tmp_path / "runs", "--engine", "process"], cwd=tmp_path, env=ui_env(tmp_path),
                        term="xterm-256color")
    try:
        wait_for(lambda: RUN in terminal.output(), WAIT_SECONDS, "the UI to show the run", alive=terminal)
        terminal.type(b"s")
        wait_for(lambda: trained_by_a_child_of(terminal.pid, run_dir) and metrics_step(run_dir) >= 5,
                 WAIT_SECONDS, "a child process of the UI to train the run", alive=terminal)
        processes = terminal.tree()
        after = metrics_step(run_dir)
        terminal.proc.kill()
        terminal.wait(WAIT_SECONDS)
        wait_all_gone(processes, WAIT_SECONDS, "the UI's engine process")
    finally:
        terminal.ensure_dead()
    assert not events(run_dir, "crashed"), events(run_dir, "crashed")
    state = status(run_dir)
    assert state["state"] == "interrupted" and events(run_dir, "interrupted")[-1]["signal"] == "SIGTERM", state
    assert state["step"] >= after
    assert_saved_at_interrupted_step(run_dir, state["step"])
