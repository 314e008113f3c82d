"""Connects runs.watch.RunWatcher (a plain thread that knows no Textual) to the app.

The watcher's callback runs on its own thread: it wakes the followers of the changed runs
(through runs.follower_hub.FollowerHub; the followers read the files and post what they found) and posts
RunsChanged for the runs list; post_message is thread-safe.
`poll=True` (`runctl --poll`) uses polling, for network file systems that give no inotify events.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runctl.runs.follower_hub import FollowerHub
from runctl.runs.layout import DEFAULT_DEPTH
from runctl.tui.messages import RunsChanged

if TYPE_CHECKING:
    from textual.app import App


class WatchBridge:
    def __init__(self, app: App, root: Path, followers: FollowerHub, *, poll: bool = False,
                 depth: int = DEFAULT_DEPTH) -> None:
        self.app = app
        self.root = root
        self.followers = followers
        self.poll = poll
        self.depth = depth  # as deep as the listing looks for runs
        self._watcher: Any = None

    def start(self) -> None:
        from runctl.runs.watch import RunWatcher

        self._watcher = RunWatcher(self.root, self._on_changes, poll=self.poll, depth=self.depth)
        self._watcher.start()
        self.followers.watching(self._watcher.covers)

    def stop(self) -> None:
        if self._watcher is not None:
            self.followers.watching(None)
            self._watcher.stop()
            self._watcher = None

    @property
    def mode(self) -> str:
        """"native", "polling" (asked, or the fallback when inotify fails) or "off"."""
        if self._watcher is None:
            return "off"
        return self._watcher.mode or "off"

    @property
    def fallback_reason(self) -> str | None:
        return None if self._watcher is None else self._watcher.fallback_reason

    def _on_changes(self, changes: Sequence[Any]) -> None:
        if not changes:
            return
        self.followers.changed(changes)
        self.app.post_message(RunsChanged(changes))


def changed_run_dirs(changes: Sequence[Any]) -> set[Path]:
    """The run folders a batch of watcher changes touch."""
    return {Path(change.run_dir) for change in changes if getattr(change, "run_dir", None) is not None}
