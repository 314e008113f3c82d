"""Recognising a full disk however it surfaces, and saying so with the space left.

A full file system reaches runctl as OSError(ENOSPC) or (EDQUOT) from a plain write, but torch's
zip writer turns the short write into RuntimeError("unexpected pos ...") with the OSError only in
its context chain, and a buffered writer may fail later than the write that ran out. So a failure
is a full disk when ENOSPC/EDQUOT appears anywhere in its cause/context chain, or, whatever it
says, when the file system had less free space than the write in progress still needed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from runctl.runs.humanize import human_bytes

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes an unprivileged writer may still use on the file system holding `path`."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def is_disk_full(exc: BaseException, needed: int | None = None, free: int | None = None) -> bool:
    """Whether `exc` means the disk (or a quota) is full: ENOSPC/EDQUOT anywhere in its chain, or
    `free` (measured when it failed) below `needed` (what the failed write still had to write)."""
    if any(isinstance(e, OSError) and e.errno in _FULL_ERRNOS for e in _chain(exc)):
        return True
    return needed is not None and free is not None and free < needed


def disk_full_message(folder: str | os.PathLike[str]) -> str:
    """"disk full: N free on the file system of FOLDER", N measured now."""
    free = free_bytes(folder)
    return f"disk full: {human_bytes(free) if free is not None else 'unknown space'} free on the file system of {folder}"


def disk_full_reason(exc: BaseException, folder: str | os.PathLike[str]) -> str | None:
    """disk_full_message(folder) if `exc` means the disk is full, else None."""
    return disk_full_message(folder) if is_disk_full(exc) else None
