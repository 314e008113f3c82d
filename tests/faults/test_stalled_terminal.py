"""A terminal that stops taking output without going away never stops training.

The user presses Ctrl-S (XOFF) in an SSH terminal and forgets it, or the link stalls and sshd
stops reading: the terminal stays open, and once its buffer is full every write to it blocks. Each
test runs `runctl train` in a real pseudo-terminal (tests/support/terminal.py) in one of those
states; the run must reach its steps and exit, what the terminal did not take must be in the run's
train.log, and once the terminal takes output again it says how many lines it missed.

The console queue is made small (RUNCTL_TEST_CONSOLE_QUEUE) so that a short run fills it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from support.cli import run_cli
from support.run_files import find_run_dir, metrics_step, status
from support.terminal import Terminal
from support.waiting import wait_for

from .test_signals import env, write_config

QUEUE = "8"
BOUND = 240.0
XOFF, XON = b"\x13", b"\x11"


def _env() -> dict[str, str]:
    return {**env(), "RUNCTL_TEST_CONSOLE_QUEUE": QUEUE}


def _train_log(run_dir: Path | None) -> str:
    path = run_dir / "train.log" if run_dir is not None else None
    return path.read_text(errors="replace") if path is not None and path.is_file() else ""


def test_a_terminal_nobody_reads_does_not_stop_training(tmp_path: Path) -> None:
    """The pty's buffer is full and nothing reads it (a stalled link): the run trains to its last
    step, finishes and exits, and the run's log has what the terminal never showed."""
    terminal = Terminal(["train", write_config(tmp_path), "--root", tmp_path / "runs"], cwd=tmp_path,
                        env=_env(), read=False)
    try:
        assert terminal.fill() > 0
        code = terminal.wait(timeout=BOUND)
    finally:
        terminal.ensure_dead()
    run_dir = find_run_dir(tmp_path / "runs")
    assert run_dir is not None
    final = status(run_dir)
    assert code == 0 and final["state"] == "finished" and final["step"] == final["max_steps"], (code, final)
    log = _train_log(run_dir)
    assert "is not taking output; what it does not take continues here" in log, log
    assert f"finished at step {final['step']}/{final['max_steps']}" in log, log


def test_ctrl_s_does_not_stop_training_and_ctrl_q_says_what_was_missed(tmp_path: Path) -> None:
    """Ctrl-S (XOFF) while training: the run goes on while the terminal shows nothing; Ctrl-Q
    (XON): the terminal shows output again, with one line counting what it missed and naming the
    log that has it; `runctl stop` then ends the run as usual."""
    config = write_config(tmp_path, step_sleep=0.05)
    config.write_text(config.read_text().replace("max_steps: 60", "max_steps: 100000"))
    terminal = Terminal(["train", config, "--root", tmp_path / "runs"], cwd=tmp_path, env=_env())
    try:
        wait_for(lambda: "step " in terminal.output(), timeout=BOUND, what="progress on the terminal",
                 alive=terminal)
        terminal.type(XOFF)
        run_dir = find_run_dir(tmp_path / "runs")
        assert run_dir is not None
        wait_for(lambda: "is not taking output" in _train_log(run_dir), timeout=BOUND,
                 what="output the stopped terminal did not take, in train.log", alive=terminal)
        stopped_at = metrics_step(run_dir)
        wait_for(lambda: metrics_step(run_dir) >= stopped_at + 20, timeout=BOUND,
                 what="20 more steps while the terminal is stopped", alive=terminal)
        shown = len(terminal.output())
        terminal.type(XON)
        wait_for(lambda: "line(s) of output not shown while the terminal was not taking output; they are in "
                 in terminal.output()[shown:], timeout=BOUND, what="the count of missed lines", alive=terminal)
        assert str(run_dir / "train.log") in terminal.output()[shown:]
        done = run_cli(["stop", run_dir], cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        code = terminal.wait(timeout=BOUND)
    finally:
        terminal.ensure_dead()
    final = status(run_dir)
    assert code == 0 and final["state"] == "stopped" and final["step"] > stopped_at + 20, (code, final)


def test_a_slow_reader_gets_every_line(tmp_path: Path) -> None:
    """A pipe whose reader is slower than the writer (`runctl ... | less`, `tee` over a slow link)
    is a terminal that takes output: with the queue full, writes wait for room instead of being
    set aside, so the reader gets every line and no "not shown" note."""
    lines, width = 3000, 100  # far more than a pipe's buffer, so the writer outruns the reader
    program = ("import sys; from runctl.console import guard_console; guard_console()\n"
               f"for i in range({lines}): print(str(i).rjust({width}, '.'))\n")
    process = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "RUNCTL_TEST_CONSOLE_QUEUE": "3"}, cwd=tmp_path)
    assert process.stdout is not None and process.stderr is not None
    received = bytearray()
    while chunk := process.stdout.read1(4096):
        received += chunk
        time.sleep(0.002)  # a slow reader, never a stalled one
    error = process.stderr.read().decode()
    assert process.wait(timeout=BOUND) == 0, error
    shown = received.decode().splitlines()
    expected = [str(i).rjust(width, ".") for i in range(lines)]
    missing = sorted(set(expected) - set(shown))
    assert shown == expected, (len(shown), missing[:3], [line for line in shown if "not shown" in line])
    assert "not shown" not in error
