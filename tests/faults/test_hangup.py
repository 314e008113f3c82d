"""An SSH drop while `runctl train | resume | extend | branch` runs in a terminal.

Each command runs in a real pseudo-terminal (tests/support/terminal.py) that closes while it
trains: SIGHUP to the session leader, and EIO for every later write to the terminal, by runctl,
torchrun's agent or any rank. Each time the run ends `interrupted` (never `crashed`) with an
interrupt checkpoint at the step it reached, the whole process tree is gone within a bounded time,
what could not be shown any more is in RUN/train.log, and `runctl resume` (the UI's `r`) continues
the run: bit-exactly, for the single process, against a run that was never interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import psutil
import pytest
from support.cli import run_cli, start_cli, verify_json
from support.run_files import (
    assert_saved_at_interrupted_step,
    events,
    metrics_step,
    records_by_name,
    status,
    temp_files,
)
from support.terminal import Terminal, describe, wait_all_gone
from support.waiting import wait_for

from .test_signals import (
    CKPT_EVERY,
    MAX_STEPS,
    check_resume_is_exact,
    env,
    write_config,
)

# From the hang-up to the last process gone: the step, the interrupt checkpoint, teardown (and
# under --nproc torchrun's agent stopping its ranks) on a loaded 2-core box. A hang fails instead.
EXIT_BOUND = 90.0
START_BOUND = 180.0
EXTEND_BY = 40


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final checkpoint of the same run, never interrupted (and without the sleeps)."""
    tmp = tmp_path_factory.mktemp("hangup-reference")
    done = run_cli(["train", write_config(tmp), "--root", tmp / "runs", "--name", "ref"], cwd=tmp, env=env(),
                   timeout=180)
    assert done.returncode == 0, done.stderr
    return tmp / "runs" / "ref" / "checkpoints" / f"step_{MAX_STEPS:08d}.pt"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run "r" with sleep-paced steps (run.yaml keeps them, so an extension or a branch of
    a copy is still training at the hang-up), trained once for the tests that start from one."""
    tmp = tmp_path_factory.mktemp("hangup-finished")
    run_dir = tmp / "runs" / "r"
    done = run_cli(["train", write_config(tmp, step_sleep=0.03), "--root", tmp / "runs", "--name", "r"],
                   cwd=tmp, env=env(), timeout=180)
    assert done.returncode == 0 and status(run_dir)["state"] == "finished", done.stderr
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of `run_dir` as tmp_path/runs/<its name>, for a test to change."""
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy, symlinks=True)
    return copy


def hang_up_while_training(args: list[str | Path], run_dir: Path, cwd: Path, *, past_step: int,
                           nproc: int = 1, branched_at: int = 0) -> int:
    """Run `runctl ARGS` in a terminal, close the terminal once the run is past `past_step`, and
    check what an SSH drop must leave; returns the step the run stopped at."""
    terminal = Terminal([*args, *(["--nproc", str(nproc)] if nproc > 1 else [])], cwd=cwd, env=env())
    try:
        wait_for(lambda: run_dir.is_dir() and metrics_step(run_dir) > past_step + 3, timeout=START_BOUND,
                 what=f"{run_dir.name} past step {past_step + 3}", alive=terminal)
        wait_for(lambda: "step " in terminal.output(), timeout=30, what="progress on the terminal",
                 alive=terminal)
        processes = terminal.tree()
        assert len(processes) >= (1 if nproc == 1 else 2 + nproc), describe(processes)
        terminal.hang_up()
        code = terminal.wait(timeout=EXIT_BOUND)
        wait_all_gone(processes, EXIT_BOUND, "the launcher, torchrun's agent and every rank")
    finally:
        terminal.ensure_dead()
    return check_hung_up(run_dir, code, cwd, after=past_step, branched_at=branched_at)


def check_hung_up(run_dir: Path, code: int, cwd: Path, after: int, branched_at: int = 0) -> int:
    state = status(run_dir)
    crashed = events(run_dir, "crashed")
    assert not crashed, f"the hang-up crashed the run: {crashed[-1].get('error')}"
    assert code == 128 + signal.SIGHUP, f"exit {code}; status {state}"
    assert state.get("state") == "interrupted", state
    step = state["step"]
    assert isinstance(step, int) and step > after, state
    assert events(run_dir, "interrupted")[-1].get("signal") == "SIGHUP"
    assert_saved_at_interrupted_step(run_dir, step)
    assert not temp_files(run_dir), temp_files(run_dir)
    verified, document = verify_json(run_dir, cwd=cwd)
    # A branch has no files of its own before its branch point (verify lists them missing).
    statuses = {name: record["status"] for name, record in records_by_name(document).items()
                if not (record["status"] == "missing" and (record.get("step") or 0) <= branched_at)}
    assert verified == 0 and set(statuses.values()) == {"ok"}, statuses
    # What the terminal could no longer show is in the run's own log.
    log = (run_dir / "train.log").read_text()
    assert "is gone (Input/output error)" in log, log
    assert f"interrupted (SIGHUP) at step {step}" in log, log
    return step


def test_train_and_resume_in_a_terminal_that_closes_then_resume_is_exact(tmp_path: Path, uninterrupted: Path) -> None:
    run_dir = tmp_path / "runs" / "r"
    trained = ["train", write_config(tmp_path, step_sleep=0.03), "--root", tmp_path / "runs", "--name", "r"]
    stopped = hang_up_while_training(trained, run_dir, tmp_path, past_step=5)
    stopped = hang_up_while_training(["resume", run_dir], run_dir, tmp_path, past_step=stopped)
    assert stopped < MAX_STEPS, "the run finished before the second hang-up (window too small)"
    check_resume_is_exact(run_dir, uninterrupted, tmp_path, stopped)


def test_extend_and_branch_in_a_terminal_that_closes(tmp_path: Path, finished: Path) -> None:
    run_dir = copy_run(finished, tmp_path)
    stopped = hang_up_while_training(["extend", run_dir, "--steps", str(EXTEND_BY)], run_dir, tmp_path,
                                     past_step=MAX_STEPS)
    branch_dir = tmp_path / "runs" / "b"
    hang_up_while_training(["branch", run_dir, "--from", "latest", "--name", "b"], branch_dir, tmp_path,
                           past_step=stopped, branched_at=stopped)
    for folder in (run_dir, branch_dir):
        done = run_cli(["resume", folder], cwd=tmp_path, env=env(), timeout=180)
        assert done.returncode == 0, done.stderr
        assert status(folder)["state"] == "finished" and status(folder)["step"] == MAX_STEPS + EXTEND_BY


@pytest.mark.parametrize("nproc", [2])
def test_train_under_torchrun_in_a_terminal_that_closes(tmp_path: Path, nproc: int) -> None:
    run_dir = tmp_path / "runs" / "r"
    trained = ["train", write_config(tmp_path, step_sleep=0.03), "--root", tmp_path / "runs", "--name", "r"]
    stopped = hang_up_while_training(trained, run_dir, tmp_path, past_step=5, nproc=nproc)
    assert status(run_dir)["world_size"] == nproc
    done = run_cli(["resume", run_dir], cwd=tmp_path, env=env(), timeout=180)
    assert done.returncode == 0, done.stderr
    assert events(run_dir, "resumed")[-1]["step"] == stopped
    assert status(run_dir)["state"] == "finished"


# Four processes with torch each: resume (the UI's `r`) in the CI tier, extend and branch with --long.
@pytest.mark.parametrize("command", ["resume", pytest.param("extend", marks=pytest.mark.slow),
                                     pytest.param("branch", marks=pytest.mark.slow)])
def test_resume_extend_branch_under_torchrun_in_a_terminal_that_closes(tmp_path: Path, finished: Path,
                                                                       command: str) -> None:
    """The other training commands with `--nproc 2`, each from a finished single-process run."""
    run_dir = copy_run(finished, tmp_path)
    branch_dir, longer = tmp_path / "runs" / "b", f"max_steps={MAX_STEPS + EXTEND_BY}"
    if command == "resume":  # a branch that has not trained yet: resume starts it from the parent's file
        created = run_cli(["branch", run_dir, "--from", "latest", "--name", "b", "--set", longer, "--no-start"],
                          cwd=tmp_path, env=env())
        assert created.returncode == 0, created.stderr
        args, target = ["resume", branch_dir], branch_dir
    elif command == "extend":
        args, target = ["extend", run_dir, "--steps", str(EXTEND_BY)], run_dir
    else:
        args, target = ["branch", run_dir, "--from", "latest", "--name", "b", "--set", longer], branch_dir
    stopped = hang_up_while_training(args, target, tmp_path, past_step=MAX_STEPS, nproc=2,
                                     branched_at=0 if target == run_dir else MAX_STEPS)
    assert status(target)["world_size"] == 2
    done = run_cli(["resume", target], cwd=tmp_path, env=env(), timeout=180)
    assert done.returncode == 0, done.stderr
    assert events(target, "resumed")[-1]["step"] == stopped
    assert status(target)["state"] == "finished" and status(target)["step"] == MAX_STEPS + EXTEND_BY


@pytest.mark.parametrize("victim", ["launcher", pytest.param("agent", marks=pytest.mark.slow)])
def test_kill9_of_the_launcher_or_agent_stops_every_rank_with_a_checkpoint(tmp_path: Path, victim: str) -> None:
    """`kill -9` of the `runctl train --nproc 2` the user started, or of torchrun's agent under it:
    nothing is left to relay a signal, yet every process below it stops (each holds a lifeline to
    its parent), the run ends interrupted with a checkpoint, and resume continues it."""
    run_dir = tmp_path / "runs" / "r"
    launcher = start_cli(["train", write_config(tmp_path, step_sleep=0.03), "--root", tmp_path / "runs",
                          "--name", "r", "--nproc", "2"], cwd=tmp_path, log_dir=tmp_path / "logs", env=env())
    try:
        wait_for(lambda: run_dir.is_dir() and metrics_step(run_dir) > 8, timeout=START_BOUND,
                 what="step 8 on two ranks", alive=launcher)
        front = psutil.Process(launcher.pid)
        if victim == "agent":
            front = front.children()[0]
        processes = front.children(recursive=True)
        assert len(processes) >= (3 if victim == "launcher" else 2), describe(processes)
        front.kill()
        launcher.wait(timeout=EXIT_BOUND)
        wait_all_gone(processes, EXIT_BOUND, "every process under the killed one")
    finally:
        launcher.ensure_dead()
    state = status(run_dir)
    assert not events(run_dir, "crashed"), events(run_dir, "crashed")
    assert state["state"] == "interrupted" and events(run_dir, "interrupted")[-1]["signal"] == "SIGTERM", state
    assert_saved_at_interrupted_step(run_dir, state["step"])
    done = run_cli(["resume", run_dir], cwd=tmp_path, env=env(), timeout=180)
    assert done.returncode == 0, done.stderr
    assert events(run_dir, "resumed")[-1]["step"] == state["step"] and status(run_dir)["state"] == "finished"


def test_with_hangups_ignored_the_run_trains_on_after_its_terminal_is_gone(tmp_path: Path) -> None:
    """`nohup` / `trap '' HUP`: the user asked the run to outlive its terminal. It does, and every
    progress line it writes to the dead terminal from then on fails (EIO) without failing the run;
    they land in train.log, and the run stops normally when asked."""
    run_dir = tmp_path / "runs" / "r"
    config = write_config(tmp_path, step_sleep=0.03)
    terminal = Terminal(["train", config, "--root", tmp_path / "runs", "--name", "r"], cwd=tmp_path, env=env(),
                        ignore_hangups=True)
    try:
        wait_for(lambda: run_dir.is_dir() and metrics_step(run_dir) > 5, timeout=START_BOUND,
                 what="step 5", alive=terminal)
        terminal.hang_up()
        after = metrics_step(run_dir)
        later = [step for step in (*range(CKPT_EVERY, MAX_STEPS, CKPT_EVERY), MAX_STEPS) if step > after]
        assert later, "the run finished before the hang-up (window too small)"
        # The next checkpoint, reported on the dead terminal, is in train.log.
        wait_for(lambda: f"checkpoint step_{later[0]:08d}.pt" in train_log(run_dir), timeout=START_BOUND,
                 what=f"step {later[0]}'s checkpoint line in train.log", alive=terminal)
        assert "is gone (Input/output error)" in train_log(run_dir)
        if terminal.running():
            stopped = run_cli(["stop", run_dir, "--wait", "60"], cwd=tmp_path, env=env())
            # The run may reach max_steps while the stop is on its way: then it finished instead.
            assert stopped.returncode == 0 or status(run_dir).get("state") == "finished", stopped.stderr
        assert terminal.wait(timeout=EXIT_BOUND) == 0
    finally:
        terminal.ensure_dead()
    assert not events(run_dir, "crashed") and not events(run_dir, "interrupted")
    assert status(run_dir)["state"] in ("stopped", "finished")


def train_log(run_dir: Path) -> str:
    try:
        return (run_dir / "train.log").read_text()
    except FileNotFoundError:
        return ""


def test_console_stream_sends_what_a_closed_pipe_cannot_take_to_the_run_log(tmp_path: Path) -> None:
    """The stream itself, on a pipe whose reader is gone (EPIPE): no exception, ever, and the
    text that could not be shown is in the fallback file after a one-line note."""
    from runctl.console import ConsoleStream, wait_delivered

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as original:
        stream = ConsoleStream(original, write_end)
        stream.keep_in(tmp_path / "train.log")
        stream.write("shown\n")
        assert os.read(read_end, 100) == b"shown\n"
        # A terminal that cannot show a character (an ASCII locale) gets its escape, not an error.
        with open(write_end, "w", encoding="ascii", closefd=False) as ascii_original:
            ConsoleStream(ascii_original, write_end).write("loss \u2193\n")
        assert os.read(read_end, 100) == b"loss \\u2193\n"
        os.close(read_end)
        for line in ("lost on the terminal\n", "and this\n"):
            assert stream.write(line) == len(line)
        stream.flush()
        assert wait_delivered(10)  # a pipe's writes are the console's thread's (never the caller's)
        assert stream.gone == "Broken pipe" and not stream.isatty()
        stream.keep_in(None)
    log = (tmp_path / "train.log").read_text().splitlines()
    assert "is gone (Broken pipe)" in log[0] and log[1:] == ["lost on the terminal", "and this"], log
