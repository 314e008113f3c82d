"""Killing a runs.store write at one of its pause points (RUNCTL_TEST_PAUSE_AT), outside any CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.cli import cli_env

PAUSE_ENV = "RUNCTL_TEST_PAUSE_AT"
_DELETE = "import sys; from runctl.runs.store import RunStore; RunStore(sys.argv[1]).delete_checkpoint(sys.argv[2])"


def delete_checkpoint(run_dir: Path, name: str) -> subprocess.CompletedProcess[str]:
    """RunStore(run_dir).delete_checkpoint(name) in its own process, to its end."""
    return subprocess.run([sys.executable, "-c", _DELETE, str(run_dir), name],
                          capture_output=True, text=True, timeout=60, check=False)


def delete_killed_at(run_dir: Path, name: str, point: str) -> int:
    """Start RunStore(run_dir).delete_checkpoint(name) in its own process, SIGKILL it once it
    pauses at `point`, and return its pid."""
    proc = subprocess.Popen([sys.executable, "-c", _DELETE, str(run_dir), name], env=cli_env({PAUSE_ENV: point}),
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"paused at {point}" in line, line
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return proc.pid
