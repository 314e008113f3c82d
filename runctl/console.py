"""stdout and stderr that survive the terminal going away (an SSH drop, a closed tmux pane).

When the terminal disappears, every later write to it fails (EIO from a hung-up pty, EPIPE from a
closed pipe), and Python's default streams turn that into an exception in whatever code printed:
a progress line, the signal handler's notice, a warning, a traceback, the final flush at exit.
`guard_console()` swaps sys.stdout and sys.stderr for `ConsoleStream`s that write straight to the
file descriptor (no Python buffer is left holding bytes that a later flush would fail on, and a
signal handler writing while another thread writes hits no reentrant buffer) and never raise:
once the terminal is gone, what would have gone to it goes to the run's own log
(`keep_output_in(RUN/train.log)`), or nowhere when no run is known.

A terminal can also stop taking output without going away: the user pressed Ctrl-S (XOFF) in an
SSH session, or the connection stalls and sshd's buffers fill. A write to it then blocks until the
terminal drains, and a training loop that prints progress would stop with it. So output for a
terminal, a pipe or a socket is written by one background thread (`_Pump`) from a bounded queue:
a write() only queues. A full queue alone means a reader slower than the writer (`less`, `tee`
over a slow link): the write waits for room as long as the terminal keeps taking output, so a
healthy reader gets every line. A terminal that takes nothing for `STALL_S` seconds is not taking
output: from then until it takes output again, what does not fit in the queue is not shown, without
waiting: it goes to the run's log (with a note saying the terminal is not taking output) and is
counted, and once the terminal takes output again it shows one line saying how many lines it
missed and where they are. At exit
the queue is given to the terminal while it takes it; a terminal that takes nothing for
`DRAIN_STALL_S` seconds gets nothing more, and the rest goes to the run's log. Output to a regular
file (a redirect) is written directly, as it cannot block for long.

No torch here: every runctl process installs this first thing (`python -m runctl`, the console
script, torchrun's agent), before anything can print.
"""

from __future__ import annotations

import atexit
import collections
import errno
import io
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

# The terminal (or the reader of the pipe) is gone for good: stop trying it.
GONE_ERRNOS = frozenset({errno.EIO, errno.EPIPE, errno.ENXIO, errno.EBADF, errno.ECONNRESET, errno.ENODEV})
# Writes waiting for a terminal that is not taking output; beyond this, they are not shown.
QUEUE_WRITES = 1000
# Test-only: a smaller queue, so a test fills it with a few hundred lines.
QUEUE_ENV = "RUNCTL_TEST_CONSOLE_QUEUE"
# A terminal that has taken nothing for this long, with the queue full, is not taking output.
STALL_S = 1.0
# At exit, a terminal that has taken nothing for this long gets nothing more.
DRAIN_STALL_S = 2.0


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
        # A terminal, pipe or socket can block a write: written by the pump thread, not the caller.
        self.queued = fd is not None and not _is_regular_file(fd)
        self.not_shown = 0                            # lines the terminal was not taking, in total
        self._missed = 0                              # ... since it last took output
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
        pump = _pump() if self.queued else None
        while True:
            with self._lock:
                if self.gone is None and pump is not None:
                    if pump.put(self, data):
                        return len(text)
                    if not pump.stuck:
                        room = False  # a slow reader: wait for room below, without the lock
                    else:
                        room, data = True, self._not_taken(data)
                elif self.gone is None:
                    room, data = True, self._write_original(text, data)
                else:
                    room = True
                if room:
                    if data:
                        self._write_fallback(data)
                    return len(text)
            pump.wait_for_room()

    def keep_in(self, path: Path | None) -> None:
        """Where output goes once the terminal is gone (appended); None: dropped."""
        with self._lock:
            if self._fallback_fd is not None and path != self._fallback:
                os.close(self._fallback_fd)
                self._fallback_fd = None
            self._fallback = path

    # -- the pump's side (its thread) and what it could not deliver
    def deliver(self, data: bytes) -> None:
        """Write queued `data` to the descriptor (blocking; the pump's thread only). The lock is
        not held while writing: a caller never waits for the terminal."""
        assert self.fd is not None
        if self.gone is None:
            try:
                while data:
                    data = data[os.write(self.fd, data):]
                return
            except OSError as exc:
                if exc.errno not in GONE_ERRNOS:
                    return  # this write is lost; the next one tries again
                with self._lock:
                    if self.gone is None:
                        self._mark_gone(exc)
        with self._lock:
            self._write_fallback(data)

    def caught_up(self) -> None:
        """The queue is empty again: say how many lines the terminal missed, once."""
        with self._lock:
            missed, self._missed = self._missed, 0
        if missed and self.gone is None:
            where = f"; they are in {self._fallback}" if self._fallback is not None else ""
            start = "\r\x1b[2K" if self._tty else ""
            self.deliver(f"{start}runctl: {missed} line(s) of output not shown while the terminal was not "
                         f"taking output{where}\n".encode(self._encoding, "backslashreplace"))

    def _not_taken(self, data: bytes) -> bytes:
        """`data` does not fit in the queue: counted, and returned for the fallback."""
        lines = max(1, data.count(b"\n") + data.count(b"\r"))
        if self._missed == 0:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self._write_fallback(f"runctl (pid {os.getpid()}): {stamp}: {self.name} is not taking output; "
                                 "what it does not take continues here\n".encode())
        self._missed += lines
        self.not_shown += lines
        return data

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


class _Pump:
    """The one thread that writes queued output to terminals, pipes and sockets, in order.

    Callers (any thread, a signal handler included) only append to a deque and write one byte to a
    non-blocking wake-up pipe: no lock is shared with the thread, which may block in write() for as
    long as the terminal does not drain."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[tuple[ConsoleStream, bytes]] = collections.deque()
        self.in_flight: tuple[ConsoleStream, bytes] | None = None
        self.delivered = 0                            # writes done: how a waiting writer sees progress
        self.stuck = False                            # nothing delivered for STALL_S with the queue full
        self.abandoned: tuple[ConsoleStream, bytes] | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._thread = threading.Thread(target=self._run, name="runctl-console", daemon=True)
        self._thread.start()
        atexit.register(self.drain)

    def put(self, stream: ConsoleStream, data: bytes) -> bool:
        """Queue `data` for `stream`; False when the queue is full (nothing queued)."""
        if len(self.items) >= self.limit:
            return False
        self.items.append((stream, data))
        try:
            os.write(self._wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already
        return True

    def wait_for_room(self, stall_s: float = STALL_S) -> None:
        """Wait while the queue is full and the terminal takes output; sets `stuck` when it takes
        nothing for `stall_s` seconds. Polls, holding no lock: a signal handler may print while
        its own thread waits here, and the pump's thread blocks in write() for as long as the
        terminal does."""
        if threading.current_thread() is self._thread:
            self.stuck = True  # the pump cannot wait for itself
            return
        seen, since = self.delivered, time.monotonic()
        while len(self.items) >= self.limit and not self.stuck:
            if self.delivered != seen:
                seen, since = self.delivered, time.monotonic()
            elif time.monotonic() - since > stall_s:
                self.stuck = True
                return
            time.sleep(0.002)

    def _run(self) -> None:
        waiting: set[ConsoleStream] = set()
        while True:
            os.read(self._wake_read, 4096)
            while True:
                try:
                    self.in_flight = self.items.popleft()
                except IndexError:
                    break
                stream, data = self.in_flight
                stream.deliver(data)
                waiting.add(stream)
                self.in_flight = None
                self.delivered += 1
                self.stuck = False
            for stream in waiting:
                stream.caught_up()
            waiting.clear()

    def drain(self, stall_s: float = DRAIN_STALL_S) -> None:
        """At exit: let the queue reach the terminal while it takes it; what a terminal that takes
        nothing for `stall_s` seconds would have shown goes to the fallback instead."""
        seen, since = self.delivered, time.monotonic()
        while self.items or (self.in_flight is not None and self.in_flight is not self.abandoned):
            if self.delivered != seen:
                seen, since = self.delivered, time.monotonic()
            elif time.monotonic() - since > stall_s:
                break
            time.sleep(0.01)
        stuck = self.in_flight
        left = [stuck] if stuck is not None and stuck is not self.abandoned else []
        self.abandoned = stuck  # given up on: a later drain neither waits for it nor logs it again
        while True:
            try:
                left.append(self.items.popleft())
            except IndexError:
                break
        for stream, data in left:
            with stream._lock:
                stream._write_fallback(stream._not_taken(data))


_the_pump: _Pump | None = None
_pump_lock = threading.Lock()


def _pump() -> _Pump:
    global _the_pump
    if _the_pump is None:
        with _pump_lock:
            if _the_pump is None:
                _the_pump = _Pump(_queue_limit())
    return _the_pump


def _forget_pump() -> None:
    """In a forked child the pump's thread does not exist: the child starts its own."""
    global _the_pump, _pump_lock
    _the_pump = None
    _pump_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_pump)


def _queue_limit() -> int:
    try:
        return max(1, int(os.environ.get(QUEUE_ENV, QUEUE_WRITES)))
    except ValueError:
        return QUEUE_WRITES


def _is_regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


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


def wait_delivered(timeout: float) -> bool:
    """Wait (at most `timeout` seconds) until every queued write has been written or set aside;
    False if the terminal still holds some back. For a caller that must know the terminal has
    been tried (a test, a last message before the process is replaced)."""
    pump = _the_pump
    deadline = time.monotonic() + timeout
    while pump is not None and (pump.items or pump.in_flight is not None):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


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
