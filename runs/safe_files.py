"""Opening and reading files in run folders without hanging, slurping or following a link away.

A run folder is written by anyone: a FIFO named `status.json` blocks a plain open() forever, a
link to /dev/zero never ends, a 10 GB log would be read whole. Every read of a run-folder file goes
through here: the file is stat'ed first and must be a regular file, it is opened non-blocking
(a FIFO swapped in after the stat cannot block the open) and fstat'ed again against the race, and
whole-file reads stop at a size limit. Failures are OSError subclasses naming the file, so the
readers' existing `except OSError` paths report them as unreadable files.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from typing import BinaryIO

# status.json, manifest.json, run.yaml, a config, a control file: kilobytes in practice.
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
# Logs (metrics.jsonl, events.jsonl): a 50,000-step run logging 20 metrics writes ~36 MB; history
# beyond this much before a log's end is left unread.
MAX_HISTORY_BYTES = 1 << 30
# No record runctl writes comes near this; a longer "line" is garbage and is skipped.
MAX_LINE_BYTES = 16 << 20

_KINDS = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"))


class NotRegularFile(OSError):
    """The path is a FIFO, socket, device, directory or a link that leads to none or away."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file: {kind}", str(path))
        self.kind = kind


class FileTooLarge(OSError):
    def __init__(self, path: str | os.PathLike[str], size: int, limit: int) -> None:
        super().__init__(errno.EFBIG, f"too large to read ({_mib(size)}; the limit is {_mib(limit)})", str(path))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def kind_of(mode: int) -> str | None:
    """None for a regular file, else what it is ("fifo", "socket", "character device", ...)."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def irregularity(path: str | os.PathLike[str], *, within: str | os.PathLike[str] | None = None) -> str | None:
    """Why `path` must not be opened for reading, or None if it is a regular file (or missing).

    Reads no bytes. A symlink is judged by its target: dangling, a special file, or (with `within`)
    a file outside that folder is named as such ("link to fifo", "link leaving the run folder").
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    if not stat.S_ISLNK(st.st_mode):
        return kind_of(st.st_mode)
    try:
        target = os.stat(path)
    except OSError:
        return "dangling link"
    kind = kind_of(target.st_mode)
    if kind is not None:
        return f"link to {kind}"
    if within is not None:
        real, folder = os.path.realpath(path), os.path.realpath(within)
        if os.path.commonpath([real, folder]) != folder:
            return "link leaving the run folder"
    return None


def open_regular(path: str | os.PathLike[str], *, within: str | os.PathLike[str] | None = None,
                 buffering: int = -1) -> BinaryIO:
    """`open(path, "rb", buffering)` for a regular file only; NotRegularFile otherwise, whatever the timing."""
    problem = irregularity(path, within=within)
    if problem is not None:
        raise NotRegularFile(path, problem)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket swapped in after the check
            raise NotRegularFile(path, "socket") from None
        raise
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind is not None:  # swapped between the check and the open
            raise NotRegularFile(path, kind)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def sha256_of(path: str | os.PathLike[str], *, within: str | os.PathLike[str] | None = None) -> str:
    """The sha256 of a regular file (NotRegularFile for anything else, never opened)."""
    with open_regular(path, within=within, buffering=0) as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_bytes(path: str | os.PathLike[str], limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """A whole regular file of at most `limit` bytes (FileTooLarge beyond, read no further)."""
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise FileTooLarge(path, size, limit)
        data = file.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise FileTooLarge(path, len(data), limit)
    return data


def read_text(path: str | os.PathLike[str], limit: int = MAX_DOCUMENT_BYTES) -> str:
    """read_bytes decoded as UTF-8 (UnicodeDecodeError as from Path.read_text)."""
    return read_bytes(path, limit).decode("utf-8")


def read_tail(path: str | os.PathLike[str], limit: int) -> bytes:
    """The last `limit` bytes at most of a regular file (a log's tail)."""
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            file.seek(size - limit)
        return file.read(limit)


def read_json(path: str | os.PathLike[str], limit: int = MAX_DOCUMENT_BYTES) -> object:
    """A bounded JSON document; ValueError for anything that is not JSON, nesting too deep included."""
    import json

    raw = read_bytes(path, limit)
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
