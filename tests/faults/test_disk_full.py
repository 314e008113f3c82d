"""Disk full: a checkpoint save that fails with ENOSPC, on a real (small) tmpfs.

The run lives on a tmpfs mounted for the test (root only; skipped where mount is not allowed).
It trains to step 4, the disk is filled to less than one checkpoint's size, and `runctl extend`
trains on until the next save fails. Expected: the earlier checkpoints are byte-for-byte intact,
the temp file is removed, an event says the disk is full, the run ends `crashed` (exit 1), and
once space is freed `runctl resume` finishes the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import cli_env, run_cli, start_cli, verify_json
from support.configs import TINY_MLP
from support.filesystems import tmpfs
from support.run_files import (
    events,
    find_run_dir,
    manifest,
    metrics_step,
    records_by_name,
    status,
    temp_files,
)
from support.waiting import wait_for

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "4m") as mount_point:
        yield mount_point


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill(disk: Path, leave: int) -> Path:
    """Take all free space on `disk` but about `leave` bytes."""
    filler = disk / "filler.bin"
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def assert_says_disk_full(text: str, disk: Path) -> None:
    """The full disk named as such, with the space left, not torch's internal error text."""
    assert "disk full: " in text and f"free on the file system of {disk}" in text, text
    assert "unexpected pos" not in text and "enforce fail" not in text and "RuntimeError" not in text, text


# How much room the save finds: a few pages (the zip's first records do not fit) or most of a
# checkpoint (torch's writer fails mid-file with RuntimeError("unexpected pos"), the OSError only
# in its context).
@pytest.mark.parametrize("room", ["pages", "most"])
def test_disk_full_during_a_save(tmp_path: Path, small_disk: Path, room: str) -> None:
    root = small_disk / "runs"
    sets = [*TINY_MLP, "max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=10", "eval.every=100",
            "eval.batches=1"]
    done = run_cli(["train", "digits_mlp", "--root", root, "--name", "full",
                    *[a for s in sets for a in ("--set", s)]], cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    run_dir = find_run_dir(root)
    assert run_dir is not None
    before = {p.name: sha256(p) for p in (run_dir / "checkpoints").glob("step_*.pt")}
    assert sorted(before) == ["step_00000002.pt", "step_00000004.pt"], before
    checkpoint_bytes = (run_dir / "checkpoints" / "step_00000004.pt").stat().st_size

    # Room for status/events/metrics updates, not for another checkpoint.
    leave = 4 * PAGE if room == "pages" else max(4 * PAGE, checkpoint_bytes - 3 * PAGE)
    filler = fill(small_disk, leave=leave)
    done = run_cli(["extend", run_dir, "--to", "8"], cwd=tmp_path, timeout=180)
    assert done.returncode == 1, f"a save that fails on a full disk fails the run: {done.returncode} {done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert_says_disk_full(done.stderr, run_dir / "checkpoints")

    failed = events(run_dir, "checkpoint_failed")
    assert failed, f"no checkpoint_failed event: {events(run_dir)[-5:]}"
    assert_says_disk_full(str(failed[0].get("error", "")), run_dir / "checkpoints")
    assert status(run_dir).get("state") == "crashed", status(run_dir)
    assert not temp_files(run_dir), f"temp file left on the full disk: {temp_files(run_dir)}"
    after = {p.name: sha256(p) for p in (run_dir / "checkpoints").glob("step_*.pt")}
    assert {n: after.get(n) for n in before} == before, "an earlier checkpoint changed"
    listed = manifest(run_dir)["files"]
    assert set(after) == set(listed), f"manifest {sorted(listed)} vs files {sorted(after)}"
    code, document = verify_json(run_dir, cwd=tmp_path)
    assert code == 0 and all(r["status"] in ("ok", "missing") for r in records_by_name(document).values()), document

    filler.unlink()
    done = run_cli(["resume", run_dir], cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    assert status(run_dir).get("state") == "finished" and status(run_dir).get("step") == 8
    code, document = verify_json(run_dir, cwd=tmp_path)
    records = records_by_name(document)
    assert code == 0 and records["step_00000008.pt"]["status"] == "ok", records
    assert not temp_files(run_dir)


def test_disk_filling_up_while_training_loses_log_lines_not_the_run(tmp_path: Path, small_disk: Path) -> None:
    """The disk fills while the engine trains: metrics lines stop fitting. Training goes on with
    one warning, and once there is room again the lines are whole again and the run finishes."""
    root = small_disk / "runs"
    config = tmp_path / "slow.yaml"
    config.write_text('task: "support.tasks:factory"\nmax_steps: 300\nmodel: {hidden: 16, step_sleep: 0.02}\n'
                      "data: {batch_size: 32}\nlog: {every: 1}\neval: {every: 1000, batches: 1}\n"
                      "checkpoint: {every: 1000, keep_last: 3}\n")
    env = cli_env()
    engine = start_cli(["train", config, "--root", root, "--name", "filling"], cwd=tmp_path,
                       log_dir=tmp_path / "logs", env=env)
    try:
        run_dir = root / "filling"
        wait_for(lambda: metrics_step(run_dir) >= 5, timeout=120, what="five steps", alive=engine)
        filler = fill(small_disk, leave=0)
        wait_for(lambda: "metrics.jsonl: not written" in engine.stderr(), timeout=120,
                 what="the full disk to refuse a metrics line", alive=engine)
        gap_from = metrics_step(run_dir)
        filler.unlink()
        wait_for(lambda: "written again" in engine.stderr(), timeout=120, what="room again", alive=engine)
        assert engine.proc.wait(timeout=180) == 0, engine.stderr()
    finally:
        engine.ensure_dead()
    assert engine.stderr().count("metrics.jsonl: not written") == 1, engine.stderr()
    assert "metrics.jsonl: not written (disk full: " in engine.stderr(), engine.stderr()
    assert status(run_dir).get("state") == "finished" and status(run_dir).get("step") == 300
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append(None)  # at most the one line the disk cut short
    assert records.count(None) <= 1, lines
    train_steps = [r["step"] for r in records if r is not None and "train/loss" in r]
    assert train_steps == sorted(train_steps) and gap_from < 300
    assert len(train_steps) < 300  # the gap's lines are lost...
    assert train_steps[-20:] == list(range(281, 301))  # ...and after it every line is there, whole
    code, document = verify_json(run_dir, cwd=tmp_path)
    assert code == 0 and records_by_name(document)["step_00000300.pt"]["status"] == "ok"
