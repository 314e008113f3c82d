"""Read a run's events.jsonl (the lifecycle log) incrementally, and find its resume points.

Lines are `{"time", "event", "step", ...}` (docs/ARCHITECTURE.md). Garbage lines and lines that
are not JSON objects are counted and skipped; a torn last line waits for its newline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.runs.jsonl_tail import JsonlTail, parse_json_line
from runctl.runs.layout import EVENTS_JSONL


@dataclass(frozen=True)
class ResumePoint:
    """A `resumed` event: the run continued from checkpoint step `step` at wall time `time`.

    Points a killed attempt logged past `step` before `time` belong to a discarded future.
    `time` is NaN when the event carries none (then only the order of reading tells).
    """

    step: int
    time: float
    source: str | None


class EventsReader:
    """Incremental reader of one events.jsonl; `poll()` returns the events appended since last time."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        # A run directory (even one not created yet) or the events file itself.
        self.path = path / EVENTS_JSONL if path.is_dir() or path.suffix != ".jsonl" else path
        self.events: list[dict[str, Any]] = []
        self.malformed = 0
        # Bumped whenever the file was truncated or replaced and `events` was rebuilt.
        self.generation = 0
        self._tail = JsonlTail(self.path)
        self._new: list[dict[str, Any]] = []

    @property
    def error(self) -> str | None:
        return self._tail.error

    @property
    def note(self) -> str | None:
        """What reading left out (a file too large to read whole, a line too long), else None."""
        return self._tail.note

    def poll(self) -> list[dict[str, Any]]:
        self._new = []
        self._tail.poll(self._on_restart, self._on_lines)
        new, self._new = self._new, []
        return new

    def resume_points(self) -> list[ResumePoint]:
        return resume_points(self.events)

    def _on_restart(self) -> None:
        self.events = []
        self._new = []
        self.malformed = 0
        self.generation += 1

    def _on_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            if not line.strip():
                continue
            try:
                event = parse_json_line(line)
            except ValueError:
                self.malformed += 1
                continue
            if not isinstance(event, dict):
                self.malformed += 1
                continue
            self.events.append(event)
            self._new.append(event)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """All well-formed events of a run (or of an events.jsonl path); [] when there is none."""
    reader = EventsReader(run_dir)
    reader.poll()
    return reader.events


def resume_point(event: dict[str, Any]) -> ResumePoint | None:
    """The resume point of a `resumed` event, or None for other events and unusable ones."""
    if event.get("event") != "resumed":
        return None
    step = event.get("step")
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return None
    when = event.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        when = math.nan
    source = event.get("from")
    return ResumePoint(step=step, time=float(when), source=source if isinstance(source, str) else None)


def resume_points(events: list[dict[str, Any]]) -> list[ResumePoint]:
    points = (resume_point(event) for event in events)
    return [point for point in points if point is not None]
