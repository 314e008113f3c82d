"""An SSH drop as tmux sees it: `runctl train` in a tmux session that is killed (`tmux
kill-session`: SIGHUP to the pane's processes and its terminal closed), with one process and with
`--nproc 2`; and the shell running `runctl train` in the foreground killed with kill -9 (the kernel
hangs up its foreground job). Each time the run ends `interrupted` with an interrupt checkpoint,
every process is gone, and `runctl resume` finishes it.

Skipped when tmux is missing. Uses its own tmux server socket, so it never touches the user's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

TESTS_TUI = Path(__file__).resolve().parent.parent / "tui"  # tui_test_task.py lives there
WAIT_SECONDS = 180.0
MAX_STEPS = 200


def _config(path: Path) -> Path:
    # Sleep-paced steps: still training at the hang-up, and the resume ends in seconds.
    cfg = {"task": "tui_test_task:factory", "seed": 0, "max_steps": MAX_STEPS, "model": {"step_sleep": 0.02},
           "data": {"batch_size": 32}, "log": {"every": 1}, "eval": {"every": 1000, "batches": 1},
           "checkpoint": {"every": 1000, "keep_last": 3, "keep_best": False, "async": True},
           "schedule": {"name": "constant", "warmup_steps": 0}, "device": "cpu"}
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "RUNCTL_TEST_SLOW_WRITE")}
    env.update({"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_TUI), os.environ.get("PYTHONPATH")])),
                "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TERM": "xterm-256color"})
    return env


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _status(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "status.json").read_text())


def _wait(condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


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
    _wait(lambda: len(_read_jsonl(run_dir / "metrics.jsonl")) > 5, f"{run_dir.name} past step 5")
    shell = psutil.Process(tmux.pane_pid(session))
    processes = [shell, *shell.children(recursive=True)]
    assert len(processes) >= (1 if nproc == 1 else 4), processes
    return processes


def _check_interrupted_and_resume(run_dir: Path, processes: list[psutil.Process], tmp_path: Path) -> None:
    _wait(lambda: not _running(processes), f"every process to exit (left: {_running(processes)})")
    events = _read_jsonl(run_dir / "events.jsonl")
    assert not [e for e in events if e["event"] == "crashed"], events[-1]
    status = _status(run_dir)
    assert status["state"] == "interrupted", status
    assert [e for e in events if e["event"] == "interrupted"][-1]["signal"] == "SIGHUP"
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())["files"]
    assert manifest[f"step_{status['step']:08d}.pt"]["kind"] == "interrupt", manifest
    done = subprocess.run([sys.executable, "-m", "runctl", "resume", str(run_dir)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    assert _status(run_dir)["state"] == "finished" and _status(run_dir)["step"] == MAX_STEPS


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
