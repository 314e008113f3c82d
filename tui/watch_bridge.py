"""Connects runs.watch.RunWatcher (a plain thread that knows no Textual) to the app.

The watcher's callback runs on its own thread; it only posts RunsChanged, which is thread-safe.
`poll=True` (`runctl --poll`) uses polling, for network file systems that give no inotify events.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runctl.runs.layout import DEFAULT_DEPTH
from runctl.tui.messages import MetricsAppended, RunsChanged

if TYPE_CHECKING:
    from textual.app import App


class WatchBridge:
    def __init__(self, app: App, root: Path, *, poll: bool = False, depth: int = DEFAULT_DEPTH) -> None:
        self.app = app
        self.root = root
        self.poll = poll
        self.depth = depth  # as deep as the listing looks for runs
        self._watcher: Any = None

    def start(self) -> None:
        from runctl.runs.watch import RunWatcher

        self._watcher = RunWatcher(self.root, self._on_changes, poll=self.poll, depth=self.depth)
        self._watcher.start()

    def stop(self) -> None:
        if self._watcher is not None:
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
        self.app.post_message(RunsChanged(changes))
        from runctl.runs.watch import ChangeKind

        for run_dir in {change.run_dir for change in changes if change.kind == ChangeKind.METRICS_APPENDED}:
            self.app.post_message(MetricsAppended(Path(run_dir)))


def changed_run_dirs(changes: Sequence[Any]) -> set[Path]:
    """The run folders a batch of watcher changes touch."""
    return {Path(change.run_dir) for change in changes if getattr(change, "run_dir", None) is not None}
