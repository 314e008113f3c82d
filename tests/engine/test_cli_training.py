"""`runctl train | resume | extend | branch | stop` as a user runs them: in a subprocess."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from runctl.engine.api import read_run_config
from runctl.engine.schedule import Schedule
from runctl.runs.lock import is_locked, read_holder
from runctl.tui.commands.training import PROGRESS_WRITE_S, HeadlessProgress
from support.checkpoints import assert_bit_identical, final_checkpoint, load_state
from support.cli import run_cli, start_runctl
from support.configs import TEST_TASK, overrides, set_args
from support.run_files import events, manifest_files, read_jsonl, status
from support.waiting import wait_for

SETS = [arg for item in overrides("digits_mlp", "max_steps=20") for arg in ("--set", item)]
# A run that goes on until it is stopped, its steps paced by a sleep (run.yaml keeps it, so the
# detached resume sleeps too): the engine is alive for the whole test without using a core.
ENDLESS = set_args([f"task={TEST_TASK}", "model={step_sleep: 0.05}", "max_steps=1000000", "checkpoint.every=100000",
                    "eval.every=100000", "eval.batches=2", "log.every=50", "data.batch_size=16",
                    "schedule.warmup_steps=5"])


def _train(root: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    result = run_cli(["train", "digits_mlp", "--root", root, "--name", name, *SETS, *extra], root)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run (20 steps, checkpoints at 10 and 20) shared by the read-only tests."""
    root = tmp_path_factory.mktemp("cli")
    result = _train(root, "base")
    assert result.stdout.splitlines()[0] == str(root / "base")  # the run path comes first, for scripts
    assert "step 10/20" in result.stdout and "finished at step 20/20" in result.stderr
    return root / "base"


def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path: Path, trained: Path) -> None:
    root = trained.parent
    before = sorted(p.name for p in root.iterdir())
    cases = [
        ["train", "no_such_config", "--root", root],
        ["train", "digits_mlp", "--root", root, "--set", "optim.lrr=1"],
        ["train", "digits_mlp", "--root", root, "--set", "max_steps=-3"],
        ["train", "digits_mlp", "--root", root, "--set", "optim.name=adam"],
        ["train", "digits_mlp", "--root", root, "--name", "base"],
        ["train", "digits_mlp", "--root", root, "--name", "a/b"],
        ["train", "digits_mlp", "--root", root, "--nproc", "0"],
        ["train", str(tmp_path / "missing.yaml"), "--root", root],
        ["resume", "nope", "--root", root],
        ["resume", "base", "--root", root, "--from", "step_00000099.pt"],
        ["extend", "base", "--root", root, "--to", "20"],
        ["extend", "base", "--root", root, "--to", "5"],
        ["extend", "base", "--root", root, "--steps", "0"],
        ["branch", "base", "--root", root, "--from", "10", "--name", "base"],
        ["branch", "base", "--root", root, "--from", "10", "--name", "x", "--set", "nope=1"],
        ["branch", "base", "--root", root, "--from", "10", "--name", "x", "--set", "model.hidden=32"],
        ["stop", "base", "--root", root],
    ]
    if not torch.cuda.is_available():  # what this machine cannot run is refused before a folder exists
        cases += [["train", "digits_mlp", "--root", root, "--set", "device=cuda"],
                  ["train", "digits_mlp", "--root", root, "--set", "precision=fp16"]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: run_cli(args, tmp_path), cases))
    for args, result in zip(cases, results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("runctl: "), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in root.iterdir()) == before
    by_case = dict(zip((" ".join(map(str, c[:2] + c[-2:])) for c in cases), results, strict=True))
    shape = by_case["branch base --set model.hidden=32"].stderr
    assert "shape mismatch" in shape and "[16,64] -> [32,64]" in shape
    assert "already exists" in by_case["train digits_mlp --name base"].stderr
    assert "current step 20" in by_case["extend base --to 5"].stderr


def test_resume_of_a_finished_run_changes_nothing(trained: Path) -> None:
    before = (trained / "events.jsonl").read_bytes()
    result = run_cli(["resume", trained], trained.parent)
    assert result.returncode == 0 and "already at step 20" in result.stderr
    assert (trained / "events.jsonl").read_bytes() == before


def test_extend_a_finished_run_continues_the_schedule_without_warmup(tmp_path: Path, trained: Path) -> None:
    run_dir = tmp_path / "ext"
    shutil.copytree(trained, run_dir)
    result = run_cli(["extend", run_dir, "--steps", "10"], tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = read_run_config(run_dir)
    assert cfg["max_steps"] == 30 and cfg["extensions"] == [{"at_step": 20, "max_steps": 30, "from_max_steps": 20}]
    assert final_checkpoint(run_dir, 30)["step"] == 30
    lrs = {m["step"]: m["lr"] for m in read_jsonl(run_dir / "metrics.jsonl") if "lr" in m}
    schedule = Schedule.from_config(cfg)
    assert lrs[25] == schedule.lr(24) and lrs[30] == schedule.lr(29)
    # no second warmup: the LR only goes down from its value at the extension point
    assert lrs[20] >= schedule.lr(20) >= lrs[25] >= lrs[30] == pytest.approx(cfg["optim"]["lr"] * 0.1, rel=0.05)
    assert any(e["event"] == "extended" and e["to_max"] == 30 for e in events(run_dir))


def test_branch_full_and_weights_only(tmp_path: Path, trained: Path) -> None:
    root = tmp_path
    shutil.copytree(trained, root / "base")
    with ThreadPoolExecutor(max_workers=2) as pool:
        full, fresh = pool.map(lambda args: run_cli(args, root), [
            ["branch", "base", "--root", root, "--from", "10", "--name", "ab", "--set", "data.batch_size=32",
             "--set", "curriculum=[{at_step: 12, set: {loss.aux_weight: 0.5}}]"],
            ["branch", "base", "--root", root, "--from", "step_00000010.pt", "--name", "fresh", "--weights-only",
             "--set", "optim.lr=0.002"],
        ])
    assert full.returncode == 0, full.stderr
    assert "setting changed since the checkpoint: data.batch_size: 16 -> 32" in full.stderr
    assert fresh.returncode == 0, fresh.stderr
    import yaml

    ab = yaml.safe_load((root / "ab" / "run.yaml").read_text())
    assert ab["parent"]["run_id"] == "base" and ab["parent"]["checkpoint"] == "step_00000010.pt"
    assert events(root / "ab")[0]["event"] == "branched"
    assert [m["step"] for m in read_jsonl(root / "ab" / "metrics.jsonl") if "train/loss" in m][0] == 15
    ab_final, base_final = final_checkpoint(root / "ab", 20), final_checkpoint(root / "base", 20)
    assert ab_final["curriculum_stage"] == 1
    # the A/B branch trained steps 11-20 under another loss weight: other weights than the parent's
    assert any(not torch.equal(ab_final["model"][key], base_final["model"][key]) for key in base_final["model"])
    # the branch point itself is shared: same weights at step 10 as the parent's checkpoint
    started = events(root / "ab", "started")[0]
    assert started["step"] == 10 and started["from"] == "step_00000010.pt"

    fresh_events = events(root / "fresh", "started")
    assert fresh_events[0]["step"] == 0
    fresh_final = final_checkpoint(root / "fresh", 20)
    assert fresh_final["optimizer"]["state"][0]["step"].item() == 20  # a fresh optimizer: 20 updates
    assert base_final["optimizer"]["state"][0]["step"].item() == 20
    lrs = [m["lr"] for m in read_jsonl(root / "fresh" / "metrics.jsonl") if "lr" in m]
    assert lrs[0] == pytest.approx(0.002 * 5 / 5)  # warmup again (5 steps) at the new peak


def test_checkpoint_without_optimizer_state_needs_weights_only(tmp_path: Path, trained: Path) -> None:
    run_dir = tmp_path / "bare"
    shutil.copytree(trained, run_dir)
    state = load_state(run_dir / "checkpoints" / "step_00000010.pt")
    del state["optimizer"]
    torch.save(state, run_dir / "checkpoints" / "step_00000011.pt")
    result = run_cli(["resume", run_dir, "--from", "step_00000011.pt"], tmp_path)
    assert result.returncode == 2 and "--weights-only" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_newest_checkpoint_is_skipped_and_named(tmp_path: Path, trained: Path) -> None:
    run_dir = tmp_path / "corrupt"
    shutil.copytree(trained, run_dir)
    original_final = load_state(run_dir / "checkpoints" / "step_00000020.pt")
    path = run_dir / "checkpoints" / "step_00000020.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = run_cli(["resume", run_dir], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "skipped checkpoint step_00000020.pt" in result.stderr
    skipped = events(run_dir, "skipped_checkpoint")
    assert skipped and skipped[0]["file"] == "step_00000020.pt" and skipped[0]["reason"]
    assert events(run_dir, "resumed")[-1]["step"] == 10
    assert_bit_identical(original_final, final_checkpoint(run_dir, 20))


def test_detach_then_stop_wait_and_live_extend(tmp_path: Path) -> None:
    result = run_cli(["train", "digits_mlp", "--root", tmp_path, "--name", "bg", "--detach", *ENDLESS], tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip())
    assert run_dir == tmp_path / "bg"
    try:
        wait_for(lambda: (run_dir / "status.json").exists() and status(run_dir)["step"] > 0, 90,
                   "training to start")
        checkpoint = run_cli(["stop", "bg", "--root", tmp_path, "--checkpoint-only", "--wait", "60"], tmp_path)
        assert checkpoint.returncode == 0, checkpoint.stderr
        extend = run_cli(["extend", "bg", "--root", tmp_path, "--to", "2000000"], tmp_path)
        assert extend.returncode == 0 and "asked the running engine" in extend.stderr, extend.stderr
        wait_for(lambda: events(run_dir, "extended"), 60, "the engine to extend")
        stop = run_cli(["stop", "bg", "--root", tmp_path, "--wait", "60"], tmp_path)
        assert stop.returncode == 0, stop.stderr
    finally:  # never leave a million-step engine behind
        if is_locked(run_dir):
            os.kill(int(read_holder(run_dir)["pid"]), signal.SIGKILL)
    final = status(run_dir)
    assert final["state"] == "stopped" and final["max_steps"] == 2000000
    kinds = {entry["kind"] for entry in manifest_files(run_dir).values()}
    assert kinds == {"periodic", "interrupt"}
    assert final["checkpoint"] == f"step_{final['step']:08d}.pt"
    assert "training from step 0" in (run_dir / "train.log").read_text()
    assert not list((run_dir / "control").iterdir())  # every command consumed


def test_second_engine_on_a_running_run_is_refused(tmp_path: Path) -> None:
    first = start_runctl(["train", "digits_mlp", "--root", tmp_path, "--name", "busy", *ENDLESS], tmp_path)
    try:
        run_dir = tmp_path / "busy"
        wait_for(lambda: (run_dir / "status.json").exists(), 90, "the first engine to start")
        second = run_cli(["resume", run_dir], tmp_path)
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr and "host" in second.stderr
    finally:
        stop = run_cli(["stop", tmp_path / "busy", "--wait", "60"], tmp_path)
        first.communicate(timeout=60)
    assert stop.returncode == 0 and first.returncode == 0


def test_progress_is_one_updating_line_on_a_tty_and_plain_lines_otherwise() -> None:
    line = {"step": 50, "train/loss": 0.5, "step_time": 0.01}
    tty, plain = io.StringIO(), io.StringIO()
    for stream, is_tty in ((tty, True), (plain, False)):
        progress = HeadlessProgress(100, stream=stream, tty=is_tty)
        progress.on_metrics(line)
        progress.on_metrics({**line, "step": 60})
        progress.on_event({"event": "checkpoint", "step": 60, "file": "step_00000060.pt", "kind": "periodic",
                           "bytes": 2048})
        progress.close()
    assert tty.getvalue().count("\r\x1b[2K") == 2 and tty.getvalue().count("\n") == 2
    assert "step 60/100  loss 0.5000  100.0 it/s  ETA 0:00:00" in tty.getvalue()
    assert plain.getvalue().splitlines() == [
        "step 50/100  loss 0.5000  100.0 it/s  ETA 0:00:00",
        "step 60/100  loss 0.5000  100.0 it/s  ETA 0:00:00",
        "checkpoint step_00000060.pt (periodic, 2.0 KiB)",
    ]


def test_progress_is_written_at_most_ten_times_a_second_and_never_late() -> None:
    def line(step: int, loss: float = 0.5) -> dict:
        return {"step": step, "train/loss": loss, "step_time": 0.001}

    checkpoint = {"event": "checkpoint", "step": 320, "file": "step_00000320.pt", "kind": "periodic", "bytes": 2048}
    now = [100.0]
    tty, plain = io.StringIO(), io.StringIO()
    for stream, is_tty in ((tty, True), (plain, False)):
        now[0] = 100.0
        progress = HeadlessProgress(1000, stream=stream, tty=is_tty, clock=lambda: now[0])
        for step in range(10, 310, 10):  # 30 lines in 0.03 s: one write
            progress.on_metrics(line(step))
            now[0] += 0.001
        assert stream.getvalue() == ("\r\x1b[2K" if is_tty else "") + "step 10/1000  loss 0.5000  1000.0 it/s  ETA 0:00:01" \
            + ("" if is_tty else "\n")
        now[0] += PROGRESS_WRITE_S
        progress.on_metrics(line(310))  # a write: the lines since the last one, or on a tty the newest
        progress.on_metrics(line(320, 0.25))  # too soon: waits
        progress.on_event(checkpoint)  # ... but not past another line
        progress.on_metrics(line(330, 0.125))
        progress.close()  # ... nor past the end
    assert tty.getvalue().split("\r\x1b[2K") == [
        "", "step 10/1000  loss 0.5000  1000.0 it/s  ETA 0:00:01",
        "step 310/1000  loss 0.5000  1000.0 it/s  ETA 0:00:01",
        "step 320/1000  loss 0.2500  1000.0 it/s  ETA 0:00:01\ncheckpoint step_00000320.pt (periodic, 2.0 KiB)\n",
        "step 330/1000  loss 0.1250  1000.0 it/s  ETA 0:00:01\n"]
    steps = [int(text.split()[1].split("/")[0]) for text in plain.getvalue().splitlines() if text.startswith("step ")]
    assert steps == list(range(10, 340, 10))  # a file or pipe gets every line, in order
    assert plain.getvalue().splitlines()[-3:] == [
        "step 320/1000  loss 0.2500  1000.0 it/s  ETA 0:00:01", "checkpoint step_00000320.pt (periodic, 2.0 KiB)",
        "step 330/1000  loss 0.1250  1000.0 it/s  ETA 0:00:01"]


def test_a_crash_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_cli(["train", "digits_mlp", "--root", tmp_path, "--name", "boom", "--set", "task=support.tasks:factory",
                     "--set", "model={}", "--set", "max_steps=20", "--set", "loss={poison: 0}",
                     "--set", "curriculum=[{at_step: 3, set: {loss.poison: 3}}]"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"runctl: {tmp_path / 'boom'}: crashed at step 3: RuntimeError: poisoned batch (traceback in events.jsonl)"]
    assert status(tmp_path / "boom")["state"] == "crashed"
    assert "poisoned batch" in events(tmp_path / "boom", "crashed")[0]["traceback"]
