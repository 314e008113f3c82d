"""Messages that carry news from threads (the watcher, engine workers, file readers) to the UI.

Threads never touch widgets: they `post_message` one of these to the app, which is thread-safe.
Messages that arrive in bursts set `can_replace` so a flood collapses to the newest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual.message import Message

# Engine events that change what a run is (its state, its checkpoints); never collapsed.
LIFECYCLE_EVENTS = frozenset({
    "started", "checkpoint", "checkpoint_failed", "resumed", "extended", "branched", "stopped",
    "interrupted", "crashed", "finished", "warning", "nan", "skipped_checkpoint", "engine_exited",
})


class RunsChanged(Message):
    """The watcher saw files change under the root; `changes` are runs.watch's typed changes."""

    def __init__(self, changes: Sequence[Any]) -> None:
        super().__init__()
        self.changes = list(changes)


class WatchStarted(Message):
    """The watcher is running: anything that changed before it started is found by one re-list."""


class EngineEvent(Message):
    """An in-process engine reported something about `run_dir` (an events.jsonl-style dict)."""

    def __init__(self, run_dir: Path, event: dict[str, Any]) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.event = event

    @property
    def name(self) -> str:
        return str(self.event.get("event", ""))

    def can_replace(self, message: Message) -> bool:
        # Progress ticks of one run collapse to the newest; lifecycle events are all delivered.
        return (
            isinstance(message, EngineEvent)
            and message.run_dir == self.run_dir
            and self.name not in LIFECYCLE_EVENTS
            and message.name not in LIFECYCLE_EVENTS
        )


class RunRowsLoaded(Message):
    """A file-reading worker built table rows: the whole root (`complete`) or just some runs."""

    def __init__(self, rows: Sequence[Any], complete: bool, removed: Sequence[Path] = ()) -> None:
        super().__init__()
        self.rows = list(rows)
        self.complete = complete
        self.removed = list(removed)


class EngineFinished(Message):
    """An in-process engine's worker ended (normally, stopped, or by an exception)."""

    def __init__(self, run_dir: Path, error: str | None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.error = error
