"""A real pseudo-terminal that closes: an SSH drop as the process in it sees it.

`Terminal` starts `runctl ARGS` with stdin, stdout and stderr on the slave side of a fresh pty,
as the leader of a new session whose controlling terminal that pty is (what sshd gives the login
shell, and bash its foreground job). A thread reads the master side, as sshd does, so the terminal
never fills up. `hang_up()` closes the master: the kernel sends SIGHUP to the session leader and
every later write to the terminal, by the process or anything that inherited it, fails with EIO.

psutil lists the process tree (under `--nproc`: torchrun's agent and every rank), so a test can
check that nothing is left running afterwards.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import termios
import threading
from collections.abc import Sequence
from pathlib import Path

import psutil

from support.cli import RUNCTL
from support.waiting import WaitTimeout, wait_for


def _take_the_terminal() -> None:
    """In the child, after setsid: make the pty on fd 0 the session's controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _take_the_terminal_ignoring_hangups() -> None:
    """The same, started the way `nohup` or `trap '' HUP` start a command: SIGHUP ignored."""
    _take_the_terminal()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class Terminal:
    """`runctl ARGS` in a pseudo-terminal; a `wait_for(alive=...)` watches it like support.cli.Engine."""

    def __init__(self, args: Sequence[str | os.PathLike[str]], *, cwd: Path, env: dict[str, str],
                 ignore_hangups: bool = False, read: bool = True, term: str = "xterm") -> None:
        """`read=False`: nobody reads the master side, as when sshd cannot send (a stalled link):
        once the pty's buffer is full, every write to the terminal blocks."""
        self.args = [str(a) for a in args]
        self.master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        self.hung_up = False
        try:
            self.proc = subprocess.Popen([*RUNCTL, *self.args], cwd=cwd, env={**env, "TERM": term},
                                         stdin=slave, stdout=slave, stderr=slave,
                                         start_new_session=True,
                                         preexec_fn=_take_the_terminal_ignoring_hangups if ignore_hangups
                                         else _take_the_terminal)
        finally:
            os.close(slave)
        self._output = bytearray()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        if read:
            self._reader.start()
        else:
            self._closing.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        while not self._closing.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every process holding the slave side has closed it
                return
            if not chunk:
                return
            with self._lock:
                self._output += chunk

    def output(self) -> str:
        """Everything the terminal showed so far."""
        with self._lock:
            return self._output.decode(errors="replace")

    def stderr(self) -> str:  # for wait_for's failure message
        return self.output()

    def running(self) -> bool:
        return self.proc.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants, as they are now."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def type(self, keys: bytes) -> None:
        """What the user types (Ctrl-S is b"\\x13", XOFF: the terminal stops taking output;
        Ctrl-Q, b"\\x11", XON, resumes it)."""
        os.write(self.master, keys)

    def fill(self) -> int:
        """Fill the terminal's output buffer (through a descriptor of our own, non-blocking) until
        it takes no more; returns the bytes it took. Nothing reads them unless `read` is on. The
        kernel moves written bytes on to the master side's buffer a moment later, which makes room
        again: it is full once five tries 20 ms apart find no room."""
        fd = os.open(self.slave_name, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
        taken, refused = 0, 0
        try:
            while refused < 5:
                try:
                    taken += os.write(fd, b"." * 512)
                    refused = 0
                except BlockingIOError:
                    refused += 1
                    select.select([], [], [], 0.02)
        finally:
            os.close(fd)
        return taken

    def hang_up(self) -> None:
        """Close the master side, as sshd does when the connection drops."""
        self._closing.set()
        if self._reader.is_alive():
            self._reader.join(timeout=10)
        if not self.hung_up:
            self.hung_up = True
            os.close(self.master)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runctl {' '.join(self.args)} did not exit within {timeout:.0f} s after "
                                 f"the hang-up; its processes: {describe(self.tree())}") from None

    def ensure_dead(self) -> None:
        """Teardown: kill whatever of the tree is left, whatever happened."""
        for process in self.tree():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.hang_up()


def alive(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for its parent to reap it has stopped running)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def describe(processes: Sequence[psutil.Process]) -> str:
    parts = []
    for process in processes:
        try:
            parts.append(f"{process.pid} {' '.join(process.cmdline())[:120]!r}")
        except psutil.Error:
            parts.append(f"{process.pid} (gone)")
    return "; ".join(parts) or "none"


def wait_all_gone(processes: Sequence[psutil.Process], timeout: float, what: str) -> None:
    try:
        wait_for(lambda: not alive(processes), timeout, f"{what} to exit")
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}; still running: {describe(alive(processes))}") from None
