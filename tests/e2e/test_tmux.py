"""End to end in a real terminal: `runctl ROOT` in tmux, a run killed with kill -9 shows as
interrupted; `/`, its name, Enter, `r` resumes it, and the screen shows it finish.

Skipped when tmux is missing. Uses its own tmux server socket, so it never touches the user's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from support.cli import cli_env, start_cli
from support.configs import write_task_config
from support.run_files import events, manifest_files
from support.waiting import WaitTimeout, wait_for

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

WAIT_SECONDS = 90.0


def _config(path: Path) -> Path:
    # Sleep-paced steps: the run is still training when it is killed, and resumes in a few seconds.
    return write_task_config(path, max_steps=60, step_sleep=0.03, log_every=5, eval_every=40, checkpoint_every=10,
                             keep_last=3)


def _decoy(root: Path, name: str) -> None:
    """A finished run the filter must hide (written per the run-directory contract)."""
    run_dir = root / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.yaml").write_text(yaml.safe_dump({"run_id": name, "name": name, "max_steps": 10}))
    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "step": 10, "max_steps": 10,
                                                     "updated_at": time.time()}))


class Tmux:
    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=30, env=self.env).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "ui")

    def settle(self, quiet: float = 1.0) -> None:
        """Wait until the screen stops changing for `quiet` seconds (start-up work done)."""
        deadline = time.monotonic() + WAIT_SECONDS
        last, since = self.screen(), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.2)
            text = self.screen()
            if text != last:
                last, since = text, time.monotonic()

    def showing(self, predicate: Callable[[str], bool]) -> str | None:
        """The screen, if `predicate` holds for it."""
        text = self.screen()
        return text if predicate(text) else None

    def press_until(self, key: str, predicate: Callable[[str], bool], what: str, tries: int = 3) -> str:
        """Press `key` until the screen shows its effect. Under heavy load a key sent while the
        terminal is still answering the app's start-up queries has been seen to go missing."""
        for _ in range(tries):
            self("send-keys", "-t", "ui", key)
            try:
                return wait_for(lambda: self.showing(predicate), 10, what, interval=0.2)
            except WaitTimeout:
                continue
        raise AssertionError(f"{key!r} never showed {what}; screen:\n{self.screen()}")

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        try:
            return wait_for(lambda: self.showing(predicate), WAIT_SECONDS, what, interval=0.2)
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}; screen:\n{self.screen()}") from None


def _footer(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _row(text: str, name: str) -> str:
    """The table row of run `name` (its first cell), not the status line that may mention it."""
    return next((line for line in text.splitlines() if line.split()[:1] == [name]), "")


def test_killed_run_resumes_to_the_end_from_the_ui(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    # COLUMNS/LINES (pytest may export them) would override the pane's real size.
    base_env = {k: v for k, v in cli_env().items() if k not in ("COLUMNS", "LINES")}
    env = {**base_env, "RUNCTL_KEYS": str(tmp_path / "no-keys.yaml")}
    trainer = start_cli(["train", _config(tmp_path / "e2e.yaml"), "--root", root, "--name", "victim"],
                        cwd=tmp_path, log_dir=tmp_path / "logs", env=env)
    run_dir = root / "victim"
    try:
        wait_for(lambda: manifest_files(run_dir), WAIT_SECONDS, "the first checkpoint", interval=0.05, alive=trainer)
    finally:
        trainer.kill9()
    _decoy(root, "other")
    _decoy(root, "baseline")

    tmux = Tmux(f"runctl-e2e-{uuid.uuid4().hex[:8]}", base_env)
    command = " ".join([
        "env", "-u", "COLUMNS", "-u", "LINES", f"PYTHONPATH={env['PYTHONPATH']}", f"RUNCTL_KEYS={env['RUNCTL_KEYS']}", "TERM=xterm-256color",
        sys.executable, "-m", "runctl", str(root),
    ])
    tmux("new-session", "-d", "-s", "ui", "-x", "120", "-y", "40", command)
    try:
        tmux.wait_for(lambda t: "interrupted" in _row(t, "victim") and "other" in t,
                      "the killed run to show as interrupted")
        tmux.settle()
        tmux.press_until("/", lambda t: "filter by name" in t, "the filter box")
        tmux("send-keys", "-t", "ui", "-l", "victim")
        tmux.wait_for(lambda t: "other" not in t and "baseline" not in t, "the filter to hide the others")
        # Enter keeps the filter and moves to the table, whose keys the footer then shows
        # (while the filter box has focus it shows only the box's keys).
        tmux.press_until("Enter", lambda t: "r Resume" in _footer(t), "the table's keys in the footer")
        tmux.press_until("r", lambda t: "interrupted" not in _row(t, "victim"), "the run leaving interrupted")
        tmux.wait_for(lambda t: "finished" in _row(t, "victim") and "60/60" in _row(t, "victim"),
                      "the resumed run to finish")
        resumed = events(run_dir, "resumed")
        assert resumed and resumed[-1]["from"].startswith("step_")
        tmux("send-keys", "-t", "ui", "q")  # nothing trains now: quits at once
        wait_for(lambda: "ui" not in subprocess.run(["tmux", "-L", tmux.socket, "ls"], capture_output=True,
                                                    text=True).stdout, 30, "the UI to quit", interval=0.2)
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
