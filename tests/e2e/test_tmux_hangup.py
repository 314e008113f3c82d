"""An SSH drop as tmux sees it: `runctl train` in a tmux session that is killed (`tmux
kill-session`: SIGHUP to the pane's processes and its terminal closed), with one process and with
`--nproc 2`; and the shell running `runctl train` in the foreground killed with kill -9 (the kernel
hangs up its foreground job). Each time the run ends `interrupted` with an interrupt checkpoint,
every process is gone, and `runctl resume` finishes it.

Skipped when tmux is missing. Uses its own tmux server socket, so it never touches the user's.
"""

from __future__ import annotations

import os
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
from support.cli import cli_env, run_cli
from support.configs import write_task_config
from support.run_files import manifest_files, read_jsonl, status
from support.terminal import wait_all_gone
from support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

WAIT_SECONDS = 180.0
MAX_STEPS = 200


def _env() -> dict[str, str]:
    """COLUMNS/LINES (pytest may export them) would override the pane's real size."""
    return {k: v for k, v in cli_env({"TERM": "xterm-256color"}).items() if k not in ("COLUMNS", "LINES")}


def _config(path: Path) -> Path:
    # Sleep-paced steps: still training at the hang-up, and the resume ends in seconds.
    return write_task_config(path, max_steps=MAX_STEPS, step_sleep=0.02, eval_every=1000, checkpoint_every=1000,
                             keep_last=3, checkpoint_async=True)


class Tmux:
    def __init__(self) -> None:
        self.socket = f"runctl-hangup-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=30, env=_env()).stdout

    def pane_pid(self, session: str) -> int:
        return int(self("display-message", "-p", "-t", session, "#{pane_pid}").strip())

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.kill_server()


def _train_command(tmp_path: Path, nproc: int) -> str:
    args = [sys.executable, "-m", "runctl", "train", str(_config(tmp_path / "hangup.yaml")),
            "--root", str(tmp_path / "runs"), "--name", "r", *(["--nproc", str(nproc)] if nproc > 1 else [])]
    return shlex.join(args)


def _training_tree(tmux: Tmux, session: str, run_dir: Path, nproc: int) -> list[psutil.Process]:
    """Once the run is past step 5: the pane's process and everything under it (launcher, agent, ranks)."""
    wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) > 5, WAIT_SECONDS, f"{run_dir.name} past step 5")
    shell = psutil.Process(tmux.pane_pid(session))
    processes = [shell, *shell.children(recursive=True)]
    assert len(processes) >= (1 if nproc == 1 else 4), processes
    return processes


def _check_interrupted_and_resume(run_dir: Path, processes: list[psutil.Process], tmp_path: Path) -> None:
    wait_all_gone(processes, WAIT_SECONDS, "every process")
    events = read_jsonl(run_dir / "events.jsonl")
    assert not [e for e in events if e["event"] == "crashed"], events[-1]
    st = status(run_dir)
    assert st["state"] == "interrupted", st
    assert [e for e in events if e["event"] == "interrupted"][-1]["signal"] == "SIGHUP"
    manifest = manifest_files(run_dir)
    assert manifest[f"step_{st['step']:08d}.pt"]["kind"] == "interrupt", manifest
    done = run_cli(["resume", run_dir], tmp_path, env=_env(), timeout=WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    assert status(run_dir)["state"] == "finished" and status(run_dir)["step"] == MAX_STEPS


@pytest.mark.parametrize("nproc", [1, 2])
def test_killed_tmux_session_interrupts_the_run(tmp_path: Path, tmux: Tmux, nproc: int) -> None:
    run_dir = tmp_path / "runs" / "r"
    tmux("new-session", "-d", "-s", "train", "-x", "120", "-y", "30", _train_command(tmp_path, nproc))
    processes = _training_tree(tmux, "train", run_dir, nproc)
    tmux("kill-session", "-t", "train")
    _check_interrupted_and_resume(run_dir, processes, tmp_path)


def test_kill9_of_the_shell_interrupts_its_foreground_run(tmp_path: Path, tmux: Tmux) -> None:
    run_dir = tmp_path / "runs" / "r"
    tmux("new-session", "-d", "-s", "shell", "-x", "120", "-y", "30", "bash --norc --noprofile")
    tmux("send-keys", "-t", "shell", "-l", _train_command(tmp_path, 1))
    tmux("send-keys", "-t", "shell", "Enter")
    processes = _training_tree(tmux, "shell", run_dir, 1)
    os.kill(processes[0].pid, signal.SIGKILL)  # the shell; its terminal stays open in tmux
    _check_interrupted_and_resume(run_dir, processes, tmp_path)
