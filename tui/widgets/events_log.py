"""The run view's events log: one line per lifecycle event, a crash's traceback in full beneath it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.widgets import RichLog

# event -> style of its name; events not listed use the default style.
EVENT_STYLES: dict[str, str] = {
    "started": "green", "finished": "bold green", "resumed": "cyan", "extended": "cyan",
    "branched": "cyan", "checkpoint": "dim", "stopped": "yellow", "interrupted": "bold yellow",
    "crashed": "bold red", "checkpoint_failed": "red", "nan": "red", "warning": "yellow",
    "skipped_checkpoint": "yellow", "stalled": "bold magenta", "unstalled": "cyan",
}


def format_time(seconds: Any) -> str:
    """UTC, so the same run reads the same on every machine it is opened from."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(float(seconds)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "????-??-?? ??:??:??Z"


def describe(event: dict[str, Any]) -> str:
    """The human part of one event line (what happened beyond its name)."""
    name = event.get("event")
    if name == "checkpoint":
        return f"{event.get('file', '?')} ({event.get('kind', '?')})"
    if name == "resumed":
        source = event.get("from") or "scratch (no valid checkpoint)"
        return f"from {source}"
    if name == "extended":
        return f"max_steps {event.get('from_max', '?')} -> {event.get('to_max', '?')}"
    if name == "branched":
        return f"from {event.get('parent', '?')} @ {event.get('checkpoint', '?')}"
    if name == "interrupted":
        return f"signal {event['signal']}" if event.get("signal") else ""
    if name == "skipped_checkpoint":
        return f"{event.get('file', '?')}: {event.get('reason', '?')}"
    if name in ("crashed", "checkpoint_failed"):
        return str(event.get("error", ""))
    if name == "warning":
        return str(event.get("message", ""))
    if name == "nan":
        return f"value {event.get('value')}"
    if name == "stalled":
        where = f" in {event['where']}" if event.get("where") else ""
        if event.get("rank"):  # another rank's stacks, logged by rank 0
            return f"rank {event['rank']} ({event.get('host', '?')}, pid {event.get('pid', '?')}){where}"
        return f"no step for {event.get('seconds', '?')} s (threshold {event.get('after_s', '?')} s){where}"
    if name == "unstalled":
        return f"moving again after {event.get('seconds', '?')} s"
    return ""


def event_lines(event: dict[str, Any]) -> list[Text]:
    """The log lines for one event: a header line, then the traceback for a crash."""
    name = str(event.get("event", "?"))
    step = event.get("step")
    line = Text(format_time(event.get("time")), style="dim")
    line.append(f"  {'step ' + str(step) if step is not None else '':>11}  ")
    line.append(f"{name:<12}", style=EVENT_STYLES.get(name, ""))
    detail = describe(event)
    if detail:
        line.append(f" {detail}")
    lines = [line]
    traceback = event.get("traceback")
    if traceback:
        lines.extend(Text("    " + row, style="red") for row in str(traceback).rstrip().splitlines())
    stacks = event.get("stacks")
    if name == "stalled" and isinstance(stacks, list):
        lines.extend(_stack_lines(stacks))
    return lines


def _stack_lines(stacks: list[Any]) -> list[Text]:
    """Each thread's stack, innermost call last, as Python prints a traceback."""
    lines = []
    for item in stacks:
        if not isinstance(item, dict):
            continue
        lines.append(Text(f"    thread {item.get('thread', '?')}:", style="bold magenta"))
        lines.extend(Text("      " + row) for row in str(item.get("stack", "")).rstrip().splitlines())
    return lines


class EventsLog(RichLog):
    """Append-only view of events.jsonl; `add_events` takes the new events since the last call."""

    DEFAULT_CSS = """
    EventsLog { height: 1fr; }
    """

    class Read(Message):
        """New events read by a follower thread (runs.run_follower); `reset`: the file was
        replaced, and `events` is all of it."""

        def __init__(self, events: list[dict[str, Any]], reset: bool) -> None:
            super().__init__()
            self.events = events
            self.reset = reset

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, wrap=False, markup=False, highlight=False,
                         auto_scroll=True, max_lines=10_000)
        self.event_count = 0
        # What reading the run's logs left out ("metrics.jsonl: 1100 MiB; only its last 1024 MiB
        # are read"): shown where the events are, and again after a reset.
        self.notes: list[str] = []

    def on_events_log_read(self, message: Read) -> None:
        if message.reset:
            self.reset()
        self.add_events(message.events)

    def add_events(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            self.event_count += 1
            for line in event_lines(event):
                self.write(line)

    def add_notes(self, notes: Iterable[str]) -> None:
        for note in notes:
            if note not in self.notes:
                self.notes.append(note)
                self.write(note_line(note))

    def reset(self) -> None:
        """Forget the events shown (events.jsonl shrank: it was replaced); the notes stay."""
        self.clear()
        self.event_count = 0
        for note in self.notes:
            self.write(note_line(note))


def note_line(note: str) -> Text:
    return Text(f"note: {note}", style="yellow")
