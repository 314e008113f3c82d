"""Connects a file watcher to the run followers it wakes (runs.run_follower), with no heavy imports:
the app creates it before its first paint."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol


def never_covered(run_dir: Path) -> bool:
    return False


class Followed(Protocol):
    """What the hub needs of a follower (runs.run_follower.RunFollower)."""

    covered: Callable[[Path], bool]

    def wake(self) -> None: ...

    def follows(self, run_dirs: set[Path]) -> bool: ...


class FollowerHub:
    """The followers a file watcher wakes. `changed(changes)` is called with each batch of the
    watcher's changes (runs.watch.Change, on the watcher's thread) and wakes the followers of the
    runs they touch; `covers` says which runs the running watcher sees (none without one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._followers: set[Followed] = set()
        self._covers: Callable[[Path], bool] = never_covered

    def watching(self, covers: Callable[[Path], bool] | None) -> None:
        """A watcher started (`covers`: the runs it sees) or stopped (None)."""
        self._covers = covers or never_covered
        with self._lock:
            followers = list(self._followers)
        for follower in followers:
            follower.wake()  # its tick may change with the watcher

    def covers(self, run_dir: Path) -> bool:
        return self._covers(run_dir)

    def add(self, follower: Followed) -> None:
        follower.covered = self.covers
        with self._lock:
            self._followers.add(follower)

    def remove(self, follower: Followed) -> None:
        follower.covered = never_covered
        with self._lock:
            self._followers.discard(follower)

    def changed(self, changes: Iterable[Any]) -> None:
        run_dirs = {Path(change.run_dir) for change in changes}
        if not run_dirs:
            return
        with self._lock:
            followers = list(self._followers)
        for follower in followers:
            if follower.follows(run_dirs):
                follower.wake()
