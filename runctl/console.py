"""stdout and stderr that survive the terminal going away (an SSH drop, a closed tmux pane).

When the terminal disappears, every later write to it fails (EIO from a hung-up pty, EPIPE from a
closed pipe), and Python's default streams turn that into an exception in whatever code printed:
a progress line, the signal handler's notice, a warning, a traceback, the final flush at exit.
`guard_console()` swaps sys.stdout and sys.stderr for `ConsoleStream`s that write straight to the
file descriptor (no Python buffer is left holding bytes that a later flush would fail on, and a
signal handler writing while another thread writes hits no reentrant buffer) and never raise:
once the terminal is gone, what would have gone to it goes to the run's own log
(`keep_output_in(RUN/train.log)`), or nowhere when no run is known.

No torch here: every runctl process installs this first thing (`python -m runctl`, the console
script, torchrun's agent), before anything can print.
"""

from __future__ import annotations

import errno
import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

# The terminal (or the reader of the pipe) is gone for good: stop trying it.
GONE_ERRNOS = frozenset({errno.EIO, errno.EPIPE, errno.ENXIO, errno.EBADF, errno.ECONNRESET, errno.ENODEV})


class ConsoleStream(io.TextIOBase):
    """A text stream over a file descriptor that drops what it cannot write instead of raising.

    A write that fails with one of GONE_ERRNOS marks the descriptor gone; that write and every
    later one go to the fallback file when there is one. Any other failure (a full disk under a
    redirected stdout, a non-blocking descriptor that is full) loses only that write.
    """

    def __init__(self, original: TextIO, fd: int | None) -> None:
        super().__init__()
        self.original = original
        self.fd = fd
        self.gone: str | None = None                  # why the descriptor is no longer written
        self._tty = _isatty(original)
        self._encoding = getattr(original, "encoding", None) or "utf-8"
        self._errors = getattr(original, "errors", None) or "backslashreplace"
        self._lock = threading.RLock()                # reentrant: a signal handler may print mid-write
        self._fallback: Path | None = None
        self._fallback_fd: int | None = None

    # -- what callers of a text stream look at
    @property
    def encoding(self) -> str:
        return self._encoding

    @property
    def errors(self) -> str:
        return self._errors

    @property
    def name(self) -> str:
        return getattr(self.original, "name", "<console>")

    def isatty(self) -> bool:
        return self._tty and self.gone is None

    def fileno(self) -> int:
        if self.fd is None:
            raise io.UnsupportedOperation("fileno")
        return self.fd

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing is buffered here; a wrapped stream without a descriptor is flushed quietly."""
        if self.fd is None and self.gone is None:
            try:
                self.original.flush()
            except (OSError, ValueError) as exc:
                self._mark_gone(exc)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        try:
            data = text.encode(self._encoding, self._errors)
        except UnicodeEncodeError:  # a terminal that cannot show a character gets its escape
            data = text.encode(self._encoding, "backslashreplace")
        with self._lock:
            if self.gone is None:
                data = self._write_original(text, data)
            if data:
                self._write_fallback(data)
        return len(text)

    def keep_in(self, path: Path | None) -> None:
        """Where output goes once the terminal is gone (appended); None: dropped."""
        with self._lock:
            if self._fallback_fd is not None and path != self._fallback:
                os.close(self._fallback_fd)
                self._fallback_fd = None
            self._fallback = path

    # -- internals
    def _write_original(self, text: str, data: bytes) -> bytes:
        """Write to the terminal; returns the bytes it did not take because it is gone."""
        try:
            if self.fd is None:
                self.original.write(text)
                self.original.flush()
                return b""
            while data:
                data = data[os.write(self.fd, data):]
            return b""
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno not in GONE_ERRNOS:
                return b""  # this write is lost; the next one tries again
            self._mark_gone(exc)
            return data if self.fd is not None else text.encode(self._encoding, "backslashreplace")

    def _mark_gone(self, exc: BaseException) -> None:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        self.gone = reason
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._write_fallback(f"runctl (pid {os.getpid()}): {stamp}: {self.name} is gone ({reason}); "
                             "its output continues here\n".encode())

    def _write_fallback(self, data: bytes) -> None:
        if self._fallback is None:
            return
        try:
            if self._fallback_fd is None:
                self._fallback_fd = os.open(self._fallback, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fallback_fd, data)  # O_APPEND: lines of several processes stay whole
        except OSError:
            pass  # the run folder is unwritable too (a full disk): nothing is left to tell


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (OSError, ValueError):
        return False


def _fd_of(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def guard_console() -> None:
    """Make sys.stdout and sys.stderr ConsoleStreams (idempotent). Call it once, at process start.

    Whatever the original streams had buffered is flushed first, so nothing is written twice
    or out of order."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, ConsoleStream):
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
        setattr(sys, name, ConsoleStream(stream, _fd_of(stream)))


def keep_output_in(path: Path | None) -> None:
    """Send what the terminal can no longer take to `path` (the run's train.log) from now on."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, ConsoleStream):
            stream.keep_in(path)


def tell(text: str) -> None:
    """Write `text` to stderr, best effort: for code that must go on whatever the terminal does
    (a signal handler, a warning from the training loop), also where no guard is installed (the
    engine called from a user's own script)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a reentrant write to a buffered stream
        pass
