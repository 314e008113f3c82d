"""Disk full: a checkpoint save that fails with ENOSPC, on a real (small) tmpfs.

The run lives on a tmpfs mounted for the test (root only; skipped where mount is not allowed).
It trains to step 4, the disk is filled to less than one checkpoint's size, and `runctl extend`
trains on until the next save fails. Expected: the earlier checkpoints are byte-for-byte intact,
the temp file is removed, an event says the disk is full, the run ends `crashed` (exit 1), and
once space is freed `runctl resume` finishes the run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import (
    TINY_MLP,
    events,
    find_run_dir,
    manifest,
    records_by_name,
    run_cli,
    status,
    temp_files,
    verify_json,
)

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


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


def test_disk_full_during_a_save(tmp_path: Path, small_disk: Path) -> None:
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
    filler = fill(small_disk, leave=max(4 * PAGE, checkpoint_bytes - 3 * PAGE))
    done = run_cli(["extend", run_dir, "--to", "8"], cwd=tmp_path, timeout=180)
    assert done.returncode == 1, f"a save that fails on a full disk fails the run: {done.returncode} {done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert "disk full" in done.stderr.lower() or "no space" in done.stderr.lower(), done.stderr

    failed = events(run_dir, "checkpoint_failed")
    assert failed, f"no checkpoint_failed event: {events(run_dir)[-5:]}"
    assert "disk full" in str(failed[0].get("error", "")).lower(), failed
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
