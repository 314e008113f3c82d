"""SIGTERM, SIGINT, SIGHUP: finish the step, write an `interrupt` checkpoint, exit interrupted; a
second signal exits at once and leaves nothing corrupt."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from runctl.engine import api
from runctl.engine.control import Control
from runctl.engine.signals import stop_on_signals
from runctl.runs.integrity import verify_file
from support.checkpoints import assert_bit_identical, final_checkpoint
from support.cli import cli_env, runctl_here, start_runctl
from support.configs import set_args
from support.run_files import events, manifest_files, read_jsonl, status, temp_files
from support.waiting import wait_for

SETS = ["task=support.tasks:factory", "model={}", "max_steps=200", "checkpoint.every=20", "log.every=1",
        "eval.every=50", "eval.batches=2", "data.batch_size=16", "schedule.warmup_steps=5"]
SLOW_STEPS = {"TEST_TASK_STEP_SLEEP": "0.02"}




def _start(root: Path, name: str, env_extra: dict[str, str], stderr_file: Path | None = None):
    args = ["train", "digits_mlp", "--root", root, "--name", name, *set_args(SETS)]
    return start_runctl(args, root, env=cli_env(env_extra), stderr_file=stderr_file)


def test_each_signal_checkpoints_and_exits_interrupted(tmp_path: Path) -> None:
    reference = api.new_run("digits_mlp", tmp_path, name="reference", overrides=SETS)
    signals = {"term": signal.SIGTERM, "int": signal.SIGINT, "hup": signal.SIGHUP}
    procs = {name: _start(tmp_path, name, SLOW_STEPS) for name in signals}
    pending = dict(signals)

    def signal_the_ready_ones() -> bool:  # each as soon as it has trained 25 steps
        for name, signum in list(pending.items()):
            if len(read_jsonl(tmp_path / name / "metrics.jsonl")) >= 25:
                procs[name].send_signal(signum)
                del pending[name]
        return not pending

    # Signalled before the reference trains here: under load the in-process reference can outlast
    # a slowed 200-step run, which then finishes before its signal comes.
    wait_for(signal_the_ready_ones, 90, "every run to train 25 steps")
    assert api.train(reference).state == "finished"
    for name, signum in signals.items():
        run_dir = tmp_path / name
        out, err = procs[name].communicate(timeout=60)
        assert procs[name].returncode == 128 + signum, err
        st = status(run_dir)
        assert st["state"] == "interrupted" and 25 <= st["step"] < 200
        assert manifest_files(run_dir)[f"step_{st['step']:08d}.pt"]["kind"] in ("interrupt", "periodic")
        assert events(run_dir, "interrupted")[0]["signal"] == signal.Signals(signum).name
        assert "finishing this step" in err and "runctl resume" in err

    assert runctl_here(["resume", tmp_path / "term"]) == 0
    assert_bit_identical(final_checkpoint(reference, 200), final_checkpoint(tmp_path / "term", 200))


def test_second_signal_exits_at_once_without_corrupting_anything(tmp_path: Path) -> None:
    stderr = tmp_path / "twice.err"
    proc = _start(tmp_path, "twice", {**SLOW_STEPS, "RUNCTL_TEST_SLOW_WRITE": "1.0"}, stderr_file=stderr)
    run_dir = tmp_path / "twice"
    wait_for(lambda: manifest_files(run_dir), 90, "the first checkpoint")
    proc.send_signal(signal.SIGTERM)
    # Two pending signals of one kind merge into one: send the second once the first was handled.
    # The engine then spends >= 2 s on checkpoint writes (the interrupt one, or the periodic one in
    # flight), so the second signal lands while a write is under way.
    wait_for(lambda: "finishing this step" in stderr.read_text(), 60, "the first signal to be handled")
    wait_for(lambda: temp_files(run_dir), 60, "a checkpoint write under way")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "second signal" in stderr.read_text()
    for path in (run_dir / "checkpoints").glob("step_*.pt"):
        assert verify_file(path, level="full").status in ("ok", "unverified"), path
    assert status(run_dir)["state"] == "running"  # not rewritten: readers see a free lock -> interrupted
    assert runctl_here(["resume", run_dir, "--from", "latest"]) == 0
    assert status(run_dir)["state"] == "finished"


def test_no_handlers_off_the_main_thread() -> None:
    seen: list[bool] = []
    before = signal.getsignal(signal.SIGTERM)
    worker = threading.Thread(target=lambda: seen.append(stop_on_signals(Control()).__enter__()))
    worker.start()
    worker.join()
    assert seen == [False] and signal.getsignal(signal.SIGTERM) is before


def test_handlers_are_restored_after_training() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    control = Control()
    with stop_on_signals(control) as installed:
        assert installed
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: control.stop_requested, 5, "the handler to run")
    assert control.take().signal == "SIGHUP"
    assert {sig: signal.getsignal(sig) for sig in before} == before
