"""runs.status: what state a reader believes, from status.json, the lock and the heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runctl.runs.atomic import atomic_write_json
from runctl.runs.lock import RunLock
from runctl.runs.status import HEARTBEAT_STALE_SECONDS, effective_state, error_line, read_status


def _status(run: Path, **fields: object) -> dict:
    atomic_write_json(run / "status.json", {"state": "running", "step": 5, "max_steps": 10,
                                            "heartbeat_at": time.time(), **fields})
    return read_status(run)


def test_running_with_held_lock_and_fresh_heartbeat_is_running(tmp_path: Path) -> None:
    status = _status(tmp_path)
    with RunLock(tmp_path):
        assert effective_state(status, tmp_path) == "running"


def test_running_with_free_lock_is_interrupted(tmp_path: Path) -> None:
    assert effective_state(_status(tmp_path), tmp_path) == "interrupted"


def test_running_with_stale_heartbeat_is_interrupted_even_if_locked(tmp_path: Path) -> None:
    status = _status(tmp_path, heartbeat_at=time.time() - HEARTBEAT_STALE_SECONDS - 1)
    with RunLock(tmp_path):
        assert effective_state(status, tmp_path) == "interrupted"


def test_lock_held_by_a_killed_process_is_free(tmp_path: Path) -> None:
    # The OS drops a flock when its holder dies: a kill -9'd engine shows as interrupted.
    status = _status(tmp_path)
    code = ("import sys, time; from runctl.runs.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert effective_state(status, tmp_path) == "running"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert effective_state(status, tmp_path) == "interrupted"


@pytest.mark.parametrize("state", ["stopped", "interrupted", "crashed", "finished"])
def test_other_states_are_taken_as_written(tmp_path: Path, state: str) -> None:
    assert effective_state(_status(tmp_path, state=state), tmp_path) == state


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"state": "exploded"}', "unknown state 'exploded'"),
    (b"\xff\xfe\x00", "not valid JSON"),
])
def test_garbage_status_is_unknown_with_a_problem(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "status.json").write_bytes(content)
    status = read_status(tmp_path)
    assert status["state"] == "unknown" and problem in status["problem"]
    assert str(tmp_path / "status.json") in status["problem"]
    assert effective_state(status, tmp_path) == "unknown"


def test_missing_status_is_empty(tmp_path: Path) -> None:
    assert read_status(tmp_path) == {}
    assert effective_state({}, tmp_path) == "unknown"


def test_status_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "status.json").mkdir()
    assert "not a regular file: directory" in read_status(tmp_path)["problem"]


def test_unreadable_status(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of permissions")
    (tmp_path / "status.json").write_text("{}")
    (tmp_path / "status.json").chmod(0)
    assert "unreadable" in read_status(tmp_path)["problem"]


def test_crash_error_keeps_only_the_last_line() -> None:
    error = "Traceback (most recent call last):\n  File x\nValueError: loss is nan\n"
    assert error_line({"error": error}) == "ValueError: loss is nan"
    assert error_line({"error": None}) is None
    assert error_line({"error": 3}) is None
