"""Real file systems for the tests: a small tmpfs to fill up, and "nothing changed" snapshots."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

Snapshot = dict[str, tuple[str, int, int]]


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real small file system at `mount_point` (a tmpfs of `size`, e.g. "4m"), unmounted after;
    the test skips where mounting is not allowed."""
    mount_point.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def tree_snapshot(root: Path) -> Snapshot:
    """Every path under root (root included) -> (kind, size, mtime_ns): detects any change."""
    snap: Snapshot = {}
    if not root.exists():
        return snap
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        kind = "dir" if path.is_dir() else "file"
        snap[str(path.relative_to(root.parent))] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns)
    return snap


def diff_snapshots(before: Snapshot, after: Snapshot) -> list[str]:
    changes = [f"created {p}" for p in after.keys() - before.keys()]
    changes += [f"removed {p}" for p in before.keys() - after.keys()]
    changes += [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(changes)
