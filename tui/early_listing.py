"""The first listing of a root, read by a forked child while the UI imports and starts.

On a big root the first listing is the longest wait before the full runs table paints: reading
1,000 runs takes about half a second of Python, and so do the UI's imports and first layout. In one
process the two share the GIL and run one after the other; a child forked as soon as `runctl` knows
its root reads the listing on another core meanwhile and hands the rows over a pipe: the newest
screenful first, then all of them (`tui.run_rows.load_rows`, the same call the runs list makes).

The fork happens before the UI starts a thread (it is refused otherwise, and off Linux): the child
is a copy of a small single-threaded process and runs only `load_rows`. Anything that goes wrong
with it (an error, a crash, a torn message) only means the runs list reads the listing itself.
The pipe carries pickles between this program and its own child; no file is unpickled.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from runctl.tui.run_rows import RunRow, load_rows

NEWEST = "newest"
ALL = "all"


class EarlyListing:
    """A listing of `root` being read by a child process; `messages` gives its rows as they come."""

    def __init__(self, root: Path, pid: int, pipe: int) -> None:
        self.root = root
        self._pid: int | None = pid
        self._pipe = os.fdopen(pipe, "rb")
        self._lock = threading.Lock()

    @classmethod
    def start(cls, root: Path, *, newest: int, depth: int) -> EarlyListing | None:
        """Fork the reader of `root`'s listing; None where forking is not safe (not Linux, or
        threads already running) or fails: the runs list then reads the listing itself."""
        if not sys.platform.startswith("linux") or threading.active_count() > 1:
            return None
        try:
            read_end, write_end = os.pipe()
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            return None
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _read_listing(root, newest, depth, write_end)
        os.close(write_end)
        return cls(root, pid, read_end)

    def read(self, on_newest: Callable[[list[RunRow]], None]) -> list[RunRow] | None:
        """Every row, as `load_rows(root, newest=..., on_newest=...)` returns them (blocking): the
        newest screenful goes to `on_newest` first. None if the child ended short; the child is
        reaped either way."""
        for kind, rows in self.messages():
            if kind == ALL:
                return rows
            on_newest(rows)
        return None

    def messages(self) -> Iterator[tuple[str, list[RunRow]]]:
        """(NEWEST, the newest screenful) then (ALL, every row), blocking until each arrives.

        Ends early, without ALL, if the child failed or was stopped: the caller then reads the
        listing itself."""
        try:
            while True:
                try:
                    kind, rows = pickle.load(self._pipe)
                except (EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
                    return
                if kind not in (NEWEST, ALL) or not isinstance(rows, list):
                    return
                yield kind, rows
                if kind == ALL:
                    return
        finally:
            self.close()
            self._pipe.close()

    def close(self) -> None:
        """Stop the child if it still reads, and reap it (idempotent; a reader blocked in
        `messages` then sees the pipe end)."""
        with self._lock:
            pid, self._pid = self._pid, None
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _read_listing(root: Path, newest: int, depth: int, pipe: int) -> None:
    """The child's whole life: read the listing, send it, exit without running the parent's
    exit handlers or flushing its buffers (they are the parent's to flush)."""
    code = 0
    try:
        # A short-lived process that keeps what it allocates until it exits.
        gc.disable()
        with os.fdopen(pipe, "wb") as out:
            def send(kind: str, rows: list[RunRow]) -> None:
                pickle.dump((kind, rows), out, protocol=pickle.HIGHEST_PROTOCOL)
                out.flush()

            rows = load_rows(root, newest=newest, on_newest=lambda head: send(NEWEST, head), depth=depth)
            send(ALL, rows)
    except BaseException:  # noqa: BLE001 - the parent reads the listing itself on a short message
        code = 1
    os._exit(code)
