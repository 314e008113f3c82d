"""One engine per run: an advisory flock on ROOT/<run>/lock.

The OS drops a flock when its process dies, so a lock left by `kill -9` never blocks.
The file's content (pid, host) only says who holds it; the flock is the truth.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from runctl.runs import safe_files
from runctl.runs.errors import RunctlError
from runctl.runs.layout import LOCK_FILE


def read_holder(run_dir: Path) -> dict:
    try:
        holder = safe_files.read_json(run_dir / LOCK_FILE, limit=64 * 1024)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def is_locked(run_dir: Path) -> bool:
    """True while some engine holds the run's lock (works across processes and within one)."""
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class RunLock:
    """Held while an engine writes a run. Raises RunctlError (exit 2) naming the holder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, wait: float = 1.0) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A reader's brief shared probe (is_locked) can collide with us: retry a moment.
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = read_holder(self.path.parent)
                    who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
                    raise RunctlError(f"{self.path.parent}: run is locked by another engine ({who})") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
