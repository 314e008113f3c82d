"""SIGTERM, SIGINT and SIGHUP while training, while evaluating and while an async save is in flight.

The first signal: the engine finishes the step, writes an `interrupt` checkpoint at the current
step, records `interrupted` (status.json and events.jsonl) and exits 128 + signal number, within a
bounded time. Resuming then ends bit-identical to a run that was never interrupted. A second
signal exits at once (no checkpoint), and every checkpoint already on disk still verifies.

The runs use the test task (tests/support/tasks.py): a digits MLP whose steps and eval batches sleep a little,
which opens the windows without touching any RNG, and which marks when evaluation is under way.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from support.checkpoints import load_state, state_differences
from support.cli import Engine, cli_env, run_cli, start_cli, verify_json, wait_run_dir
from support.run_files import (
    assert_saved_at_interrupted_step,
    events,
    find_run_dir,
    manifest,
    metrics_step,
    records_by_name,
    status,
    temp_files,
)
from support.waiting import wait_for

MAX_STEPS = 60
EVAL_EVERY = 20
CKPT_EVERY = 25
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGHUP": signal.SIGHUP}
PHASES = ("training", "evaluating", "saving")
# Exit within this after the signal: the step, the interrupt checkpoint (slowed to ~2 s while
# "saving"), the in-flight save it waits for, and teardown. A hang fails instead of blocking.
EXIT_BOUND = 60.0


def write_config(tmp: Path, marker_dir: Path | None = None, step_sleep: float = 0.0, eval_sleep: float = 0.0,
                 ckpt_every: int = CKPT_EVERY) -> Path:
    marker = f", marker_dir: '{marker_dir}'" if marker_dir else ""
    config = tmp / "config.yaml"
    config.write_text(
        'task: "support.tasks:factory"\n'
        f"max_steps: {MAX_STEPS}\n"
        f"model: {{hidden: 16, step_sleep: {step_sleep}, eval_sleep: {eval_sleep}{marker}}}\n"
        "data: {batch_size: 32}\n"
        "log: {every: 1}\n"
        f"eval: {{every: {EVAL_EVERY}, batches: 2}}\n"
        f"checkpoint: {{every: {ckpt_every}, keep_last: 10, async: true}}\n"
        "schedule: {warmup_steps: 5}\n")
    return config


def env(slow_write: float | None = None) -> dict[str, str]:
    return cli_env({"RUNCTL_TEST_SLOW_WRITE": str(slow_write)} if slow_write else None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The final checkpoint of the same run, never interrupted (and without the sleeps)."""
    tmp = tmp_path_factory.mktemp("signals-reference")
    done = run_cli(["train", write_config(tmp), "--root", tmp / "runs"], cwd=tmp,
                   env=env(), timeout=180)
    assert done.returncode == 0, done.stderr
    run_dir = find_run_dir(tmp / "runs")
    assert run_dir is not None
    return run_dir / "checkpoints" / f"step_{MAX_STEPS:08d}.pt"


def start_sleepy_run(tmp: Path, slow_write: float | None, eval_sleep: float = 0.25,
                     ckpt_every: int = CKPT_EVERY) -> tuple[Engine, Path, Path]:
    markers = tmp / "markers"
    markers.mkdir()
    config = write_config(tmp, markers, step_sleep=0.03, eval_sleep=eval_sleep, ckpt_every=ckpt_every)
    engine = start_cli(["train", config, "--root", tmp / "runs"], cwd=tmp,
                       log_dir=tmp / "logs", env=env(slow_write))
    return engine, wait_run_dir(tmp / "runs", engine), markers


def wait_for_phase(phase: str, engine: Engine, run_dir: Path, markers: Path) -> None:
    if phase == "training":
        wait_for(lambda: metrics_step(run_dir) >= 8, timeout=120, what="step 8", alive=engine)
    elif phase == "evaluating":
        wait_for(lambda: (markers / "evaluating").exists(), timeout=120, what="the first evaluation",
                 alive=engine)
    else:
        wait_for(lambda: temp_files(run_dir), timeout=120, what="an async checkpoint write", alive=engine)


def check_interrupted(run_dir: Path, engine: Engine, code: int, signum: int, in_flight: list[str],
                      cwd: Path) -> int:
    """The run after one signal: interrupt checkpoint at the step it stopped at, state interrupted."""
    assert code == 128 + signum, f"exit {code} after {signal.Signals(signum).name}: {engine.stderr()[-2000:]}"
    state = status(run_dir)
    assert state.get("state") == "interrupted", state
    step = state.get("step")
    assert isinstance(step, int) and 0 < step < MAX_STEPS, state
    interrupted = events(run_dir, "interrupted")
    assert interrupted and interrupted[-1].get("signal") == signal.Signals(signum).name, interrupted
    assert_saved_at_interrupted_step(run_dir, step)
    assert not temp_files(run_dir), f"temp files after a clean interrupt: {temp_files(run_dir)}"
    code, document = verify_json(run_dir, cwd=cwd)
    statuses = {n: r["status"] for n, r in records_by_name(document).items()}
    assert code == 0 and set(statuses.values()) == {"ok"}, statuses
    for name in in_flight:  # the save in flight when the signal came was completed, not lost
        assert statuses.get(name) == "ok", (name, statuses)
    return step


def check_resume_is_exact(run_dir: Path, reference: Path, cwd: Path, stopped_at: int) -> None:
    done = run_cli(["resume", run_dir], cwd=cwd, env=env(), timeout=180)
    assert done.returncode == 0, done.stderr
    resumed = events(run_dir, "resumed")
    assert resumed and resumed[-1].get("step") == stopped_at, resumed
    final = run_dir / "checkpoints" / f"step_{MAX_STEPS:08d}.pt"
    differences = state_differences(load_state(final), load_state(reference))
    assert not differences, f"interrupted + resumed differs from uninterrupted: {differences[:10]}"


def signal_case(tmp: Path, reference: Path, signame: str, phase: str) -> None:
    signum = SIGNALS[signame]
    engine, run_dir, markers = start_sleepy_run(tmp, slow_write=1.0 if phase == "saving" else None)
    try:
        wait_for_phase(phase, engine, run_dir, markers)
        engine.signal(signum)
        in_flight = sorted({p.name.split(".tmp.")[0] for p in temp_files(run_dir)})
        code = engine.wait(timeout=EXIT_BOUND)
    finally:
        engine.ensure_dead()
    if phase == "saving":
        assert in_flight, "the save had finished before the signal (window too small)"
    stopped_at = check_interrupted(run_dir, engine, code, signum, in_flight, tmp)
    if phase == "evaluating":
        assert stopped_at == EVAL_EVERY, f"stopped at {stopped_at}, not at the evaluation of step {EVAL_EVERY}"
    check_resume_is_exact(run_dir, reference, tmp, stopped_at)


# CI: every signal and every phase once (a Latin square); --long: all nine pairs.
QUICK_CASES = [("SIGTERM", "training"), ("SIGINT", "evaluating"), ("SIGHUP", "saving")]
LONG_CASES = [(s, p) for s in SIGNALS for p in PHASES if (s, p) not in QUICK_CASES]


@pytest.mark.parametrize(("signame", "phase"), QUICK_CASES)
def test_signal_interrupts_and_resume_is_exact(tmp_path: Path, reference: Path, signame: str, phase: str) -> None:
    signal_case(tmp_path, reference, signame, phase)


@pytest.mark.slow
@pytest.mark.parametrize(("signame", "phase"), LONG_CASES)
def test_signal_interrupts_and_resume_is_exact_long(tmp_path: Path, reference: Path, signame: str,
                                                    phase: str) -> None:
    signal_case(tmp_path, reference, signame, phase)


@pytest.mark.parametrize("signame", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow)])
def test_second_signal_exits_at_once_and_checkpoints_stay_valid(tmp_path: Path, signame: str) -> None:
    """The second signal lands while a (slowed) checkpoint write is in flight after the first."""
    signum = SIGNALS[signame]
    engine, run_dir, _ = start_sleepy_run(tmp_path, slow_write=1.0, eval_sleep=0.0, ckpt_every=4)
    try:
        wait_for(lambda: manifest(run_dir)["files"], timeout=120, what="the first checkpoint", alive=engine)
        engine.signal(signum)
        # Two signals sent back to back can merge into one in the kernel: wait until the first
        # was handled (the engine says so), then send the second inside a checkpoint write.
        wait_for(lambda: f"{signame}:" in engine.stderr(), timeout=60, what="the first signal handled",
                 alive=engine)
        wait_for(lambda: temp_files(run_dir), timeout=60, what="a checkpoint write after the signal",
                 alive=engine)
        engine.signal(signum)
        code = engine.wait(timeout=EXIT_BOUND)
    finally:
        engine.ensure_dead()
    assert code == 128 + signum, f"exit {code}: {engine.stderr()[-2000:]}"
    assert "second signal" in engine.stderr(), engine.stderr()
    # It left at once: no interrupt checkpoint was completed and no `interrupted` was recorded.
    kinds = {e["kind"] for e in manifest(run_dir)["files"].values()}
    assert "interrupt" not in kinds and not events(run_dir, "interrupted"), (kinds, events(run_dir, "interrupted"))
    code, document = verify_json(run_dir, cwd=tmp_path)
    records = records_by_name(document)
    finals = {n: r for n, r in records.items() if ".tmp." not in n and r["status"] != "missing"}
    assert finals, f"no checkpoint survived: {records}"
    bad = {n: r["status"] for n, r in finals.items() if r["status"] not in ("ok", "unverified")}
    assert not bad, f"a checkpoint broke on the second signal: {bad}"
    assert all(r["status"] == "partial" for n, r in records.items() if ".tmp." in n)
    # The run resumes from what survived, and the aborted write's temp file is cleaned up.
    done = run_cli(["resume", run_dir], cwd=tmp_path, env=env(), timeout=180)
    assert done.returncode == 0, done.stderr
    assert status(run_dir).get("state") == "finished"
    assert not temp_files(run_dir), temp_files(run_dir)
