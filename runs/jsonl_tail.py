"""Follow an append-only JSONL file by byte offset, handing out complete lines only.

The writer (runs.atomic.append_jsonl) appends whole lines, but a reader can still catch a line
half-written, so the bytes after the last newline wait for the next poll. A file that shrinks,
is replaced (new inode) or no longer ends a line where we stopped is read again from the start.

Reads are bounded: only a regular file is opened (never a FIFO or a device), a file larger than
`max_history_bytes` is read from that far before its end, and a line longer than MAX_LINE_BYTES
is skipped whole instead of held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import orjson
from runctl.runs import safe_files

# Read big files in slices so the first load of a long run does not hold it all in memory twice.
DEFAULT_CHUNK_BYTES = 8 << 20
MAX_HISTORY_BYTES = safe_files.MAX_HISTORY_BYTES
MAX_LINE_BYTES = safe_files.MAX_LINE_BYTES


def history_note(path: Path, size: int, limit: int = MAX_HISTORY_BYTES) -> str | None:
    """What a reader says of a log larger than `limit`: only its end is read (None when it fits)."""
    if size <= limit:
        return None
    return (f"{path}: {size / 2**20:.0f} MiB; only its last {limit / 2**20:.0f} MiB are read "
            "(older lines are left out)")


def long_line_note(path: Path) -> str:
    """What a reader says when it skipped a line longer than MAX_LINE_BYTES."""
    return f"{path}: skipped a line longer than {MAX_LINE_BYTES >> 20} MiB"


def parse_json_line(line: bytes) -> object:
    """Parse one JSON line; raises ValueError when it is not JSON.

    orjson rejects the NaN/Infinity tokens the engine writes (json.dumps(allow_nan=True)), so
    only those rare lines pay for the standard parser.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        import json

        try:
            return json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(str(err)) from None


class JsonlTail:
    """Incremental reader of the complete lines appended to one file since the last poll."""

    def __init__(self, path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 max_history_bytes: int = MAX_HISTORY_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.max_history_bytes = max_history_bytes
        self.offset = 0
        self.restarts = 0
        # The last error opening or reading the file (e.g. permission denied), None when fine.
        self.error: str | None = None
        # Set when the file was too large to read whole, or a line too long was skipped.
        self.note: str | None = None
        self._identity: tuple[int, int] | None = None
        self._skipping_line = False

    def poll(self, on_restart: Callable[[], None], on_lines: Callable[[list[bytes]], None]) -> int:
        """Deliver new complete lines in batches; returns the number of bytes consumed.

        `on_restart()` is called first when the file was truncated, replaced or removed, so the
        caller can forget what it built from the old contents before new lines arrive.
        """
        try:
            f = safe_files.open_regular(self.path)
        except FileNotFoundError:
            self.error = None
            if self._identity is not None or self.offset:
                self._restart(on_restart)
                self._identity = None
            return 0
        except OSError as err:
            self.error = f"{self.path}: {err.strerror or err}"
            return 0
        with f:
            try:
                return self._read(f, on_restart, on_lines)
            except OSError as err:
                self.error = f"{self.path}: {err.strerror or err}"
                return 0

    def _restart(self, on_restart: Callable[[], None]) -> None:
        self.offset = 0
        self._skipping_line = False
        self.restarts += 1
        on_restart()

    def _read(
        self, f: BinaryIO, on_restart: Callable[[], None], on_lines: Callable[[list[bytes]], None]
    ) -> int:
        st = os.fstat(f.fileno())
        identity = (st.st_dev, st.st_ino)
        self.error = None
        if self._identity is not None and identity != self._identity:
            self._restart(on_restart)
        elif st.st_size < self.offset or not self._still_ends_a_line(f):
            # Shrunk, or rewritten in place: what we consumed is no longer what the file holds.
            self._restart(on_restart)
        self._identity = identity
        consumed = 0
        if self.offset == 0 and st.st_size > self.max_history_bytes:
            # Too long a history to hold: start that far before the end, at the next line.
            self.offset = consumed = st.st_size - self.max_history_bytes
            self._skipping_line = True
            self.note = history_note(self.path, st.st_size, self.max_history_bytes)
        f.seek(self.offset)
        pending = b""
        while True:
            data = f.read(self.chunk_bytes)
            if not data:
                break
            if pending:
                data = pending + data
            if self._skipping_line:
                end = data.find(b"\n")
                skip = len(data) if end < 0 else end + 1
                self.offset += skip
                consumed += skip
                data, pending = data[skip:], b""
                self._skipping_line = end < 0
            cut = data.rfind(b"\n")
            if cut < 0:
                # One line longer than a chunk: keep reading until it ends (or stays torn), up to
                # MAX_LINE_BYTES, past which the line is dropped unread to its end.
                pending = data
                if len(pending) > MAX_LINE_BYTES:
                    self.offset += len(pending)
                    consumed += len(pending)
                    pending = b""
                    self._skipping_line = True
                    self.note = long_line_note(self.path)
                continue
            pending = data[cut + 1 :]
            lines = data[:cut].split(b"\n")
            self.offset += cut + 1
            consumed += cut + 1
            on_lines(lines)
        return consumed

    def _still_ends_a_line(self, f: BinaryIO) -> bool:
        if self.offset == 0:
            return True
        f.seek(self.offset - 1)
        return f.read(1) == b"\n"
