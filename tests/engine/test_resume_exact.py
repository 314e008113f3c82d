"""Resume is exact: 0 -> N in one go equals 0 -> k, stop or kill -9, resume -> N, to the last bit of
the weights and the optimizer state, for every built-in task family."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from runctl.engine import api
from runctl.engine.control import Control
from support.checkpoints import assert_bit_identical, final_checkpoint
from support.cli import cli_env, runctl_here, start_runctl
from support.configs import FAMILIES, overrides
from support.run_files import events, manifest_files, read_jsonl, status
from support.waiting import wait_for

VARIANTS = {
    **{family: (family, []) for family in FAMILIES},
    # Everything else a checkpoint must carry: EMA, accumulation, a curriculum stage, SGD momentum.
    "mlp_ema_accum_curriculum": ("digits_mlp", ["ema.enabled=true", "ema.decay=0.9", "optim.grad_accum=2",
                                                "curriculum=[{at_step: 12, set: {optim.weight_decay: 0.3}}]"]),
    "mlp_sgd_constant": ("digits_mlp", ["optim.name=sgd", "optim.lr=0.05", "schedule.name=constant"]),
}





@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs (0 -> 30 in one go, in this process) to compare the others against."""
    root = tmp_path_factory.mktemp("references")
    runs = {}
    for variant, (family, extra) in VARIANTS.items():
        runs[variant] = api.new_run(family, root, name=variant, overrides=overrides(family, *extra))
        assert api.train(runs[variant]).state == "finished"
    return runs


def _stop_at(control: Control, step: int):
    def on_metrics(line: dict) -> None:
        if line.get("step") == step and "train/loss" in line:
            control.request_stop()
    return on_metrics


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_stop_and_resume_equals_one_go(tmp_path: Path, references: dict[str, Path], variant: str) -> None:
    family, extra = VARIANTS[variant]
    split = api.new_run(family, tmp_path, name="split", overrides=overrides(family, *extra))
    control = Control()
    first = api.train(split, control=control, on_metrics=_stop_at(control, 15))
    assert (first.state, first.step) == ("stopped", 15)
    assert manifest_files(split)["step_00000015.pt"]["kind"] == "interrupt"
    second = api.train(split)
    assert (second.state, second.step) == ("finished", 30)

    assert_bit_identical(final_checkpoint(references[variant], 30), final_checkpoint(split, 30))
    resumed = events(split, "resumed")
    assert len(resumed) == 1 and resumed[0]["step"] == 15 and resumed[0]["from"] == "step_00000015.pt"
    steps = [m["step"] for m in read_jsonl(split / "metrics.jsonl") if "train/loss" in m]
    assert steps == [5, 10, 15, 20, 25, 30]  # the resumed attempt went on with step 16


def test_kill9_mid_run_then_resume_is_bit_identical_for_every_family(
        tmp_path: Path, references: dict[str, Path]) -> None:
    """Real processes: SIGKILL once a checkpoint exists (checkpoint writes slowed down so the kill
    lands mid-run, often mid-write), then `runctl resume` (in this process, like the references):
    all families run side by side, and exactness holds across processes."""
    common = ["--root", tmp_path, "--set", "checkpoint.every=5"]
    slow = cli_env({"RUNCTL_TEST_SLOW_WRITE": "0.15"})
    killed = {f: start_runctl(["train", f, "--name", f"{f}-kill", *common, *_sets(f)], tmp_path, env=slow)
              for f in FAMILIES}
    pending = dict(killed)

    def kill_those_with_a_checkpoint() -> bool:
        """Kill each run as soon as its first checkpoint is listed, all polled together."""
        for family, proc in list(pending.items()):
            run_dir = tmp_path / f"{family}-kill"
            if manifest_files(run_dir):
                os.killpg(proc.pid, signal.SIGKILL)
                assert proc.wait(timeout=30) == -signal.SIGKILL
                del pending[family]
            else:
                assert proc.poll() is None, f"{family}: exited before its first checkpoint: {proc.stderr.read()}"
        return not pending

    wait_for(kill_those_with_a_checkpoint, 180, "every run's first checkpoint", interval=0.005)
    for family in FAMILIES:
        run_dir = tmp_path / f"{family}-kill"
        assert status(run_dir)["state"] == "running"  # as a kill -9 leaves it
        assert max(e["step"] for e in manifest_files(run_dir).values()) < 30
    for family in FAMILIES:
        assert runctl_here(["resume", f"{family}-kill", "--root", tmp_path]) == 0
        run_dir = tmp_path / f"{family}-kill"
        assert_bit_identical(final_checkpoint(references[family], 30), final_checkpoint(run_dir, 30))
        resumed = events(run_dir, "resumed")
        assert len(resumed) == 1 and 5 <= resumed[0]["step"] < 30
        assert status(run_dir)["state"] == "finished"


def test_killed_before_first_checkpoint_starts_again_from_step_zero(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sets = ["--set", "task=support.tasks:factory", "--set", "model={}", "--set", "checkpoint.every=1000",
            "--set", "max_steps=30", "--set", "log.every=1", "--set", "data.batch_size=16"]
    reference = api.new_run("digits_mlp", tmp_path, name="ref", overrides=sets[1::2])
    assert api.train(reference).state == "finished"
    slow = cli_env({"TEST_TASK_STEP_SLEEP": "0.05"})
    proc = start_runctl(["train", "digits_mlp", "--root", tmp_path, "--name", "early", *sets], tmp_path, env=slow)
    run_dir = tmp_path / "early"
    wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 3, timeout=90, what="three metrics lines")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not manifest_files(run_dir)
    assert runctl_here(["resume", run_dir]) == 0
    assert "resumed at step 0" in capsys.readouterr().out
    assert events(run_dir, "resumed")[0]["step"] == 0 and events(run_dir, "resumed")[0]["from"] is None
    assert_bit_identical(final_checkpoint(reference, 30), final_checkpoint(run_dir, 30))


def _sets(family: str) -> list[str]:
    return [arg for item in overrides(family) if not item.startswith("checkpoint.every") for arg in ("--set", item)]
