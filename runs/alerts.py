"""Events worth waking for, found in the run directories under a root (no textual, no torch).

`AlertScanner.scan()` reads only what each run's events.jsonl gained since the last scan, and turns
crashed, stalled, finished, checkpoint_failed and nan events into `Alert`s. It also watches the
free space of the root's file system: under the threshold while a run writes checkpoints, that run
gets a `disk_low` alert. At most one alert per run and kind goes out within `window_s` (a run that
stalls and recovers every minute wakes the user once). Events already in the files when the scanner
starts are history, not news; a run that appears later is news from its first line.

The runs are runctl's runs anywhere under the root, found as runs.discovery finds them for a
listing (down to `depth`, tool folders skipped) and named by their path relative to the root. The
root is walked again at each scan while a walk is cheap, else after WALK_SHARE times the last
walk's duration: a run that appears meanwhile is read from its first line when it is found.

Both the headless `runctl watch` and the UI use it; how an alert is delivered is theirs.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.runs.discovery import find_run_folders
from runctl.runs.errors import RunctlError
from runctl.runs.events import EventsReader
from runctl.runs.humanize import human_bytes
from runctl.runs.layout import DEFAULT_DEPTH
from runctl.runs.status import effective_state, read_status

KINDS = ("crashed", "stalled", "finished", "checkpoint_failed", "nan", "disk_low")
# Alerts whose event is itself the run's new state.
EVENT_STATES = ("crashed", "stalled", "finished")
DEFAULT_WINDOW_S = 600.0
# Free space under which a growing checkpoint folder is worth an alert: the smaller of 5 % of the
# file system and 10 GiB, so a big disk warns while several checkpoints still fit.
DEFAULT_DISK_FREE_FRACTION = 0.05
DEFAULT_DISK_FREE_CAP = 10 * 1024**3
# A walk of the root for runs takes at most about 1/WALK_SHARE of the time between walks.
WALK_SHARE = 20


@dataclass(frozen=True)
class Alert:
    run_dir: Path
    run: str          # the run's path relative to the root, as a listing names it
    kind: str         # one of KINDS
    state: str        # the run's state as a reader believes it now
    step: int | None
    message: str      # one line, naming the run

    def environment(self) -> dict[str, str]:
        """The variables `runctl watch --exec` hands its command."""
        return {"RUNCTL_RUN": self.run, "RUNCTL_RUN_DIR": str(self.run_dir), "RUNCTL_EVENT": self.kind,
                "RUNCTL_STATE": self.state, "RUNCTL_STEP": "" if self.step is None else str(self.step),
                "RUNCTL_MESSAGE": self.message}

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "run_dir": str(self.run_dir), "event": self.kind, "state": self.state,
                "step": self.step, "message": self.message}


def describe_event(run: str, event: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, message) for an event worth an alert, else None."""
    name = event.get("event")
    step = event.get("step")
    at = f" at step {step}" if step is not None else ""
    if name == "crashed":
        return "crashed", f"{run} crashed{at}: {event.get('error') or 'unknown error'}"
    if name == "stalled":
        where = f" in {event['where']}" if event.get("where") else ""
        return "stalled", f"{run} stalled{at}: no step for {event.get('seconds', '?')} s{where}"
    if name == "finished":
        return "finished", f"{run} finished{at}"
    if name == "checkpoint_failed":
        return "checkpoint_failed", f"{run}: checkpoint failed{at}: {event.get('error') or 'unknown error'}"
    if name == "nan":
        return "nan", f"{run}: non-finite loss {event.get('value')}{at}"
    return None


class RateLimit:
    """At most one alert per (run, kind) within `window_s`."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, run_dir: Path, kind: str) -> bool:
        now = self._clock()
        key = (str(run_dir), kind)
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            return False
        self._last[key] = now
        return True


class AlertScanner:
    """Scans runctl's runs under `root` (or `root` itself if it is a run), down to `depth`."""

    def __init__(self, root: Path, *, window_s: float = DEFAULT_WINDOW_S, disk_free_bytes: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 disk_usage: Callable[[Path], Any] = shutil.disk_usage, depth: int = DEFAULT_DEPTH) -> None:
        self.root = Path(root)
        self.depth = depth
        self.limit = RateLimit(window_s, clock)
        self.disk_free_bytes = disk_free_bytes
        self._disk_usage = disk_usage
        self._readers: dict[Path, EventsReader] = {}
        self._started = False
        self._runs: list[Path] = []
        self._walk_due = 0.0

    def scan(self) -> list[Alert]:
        """The alerts since the last scan (the first scan only learns where the files end)."""
        alerts: list[Alert] = []
        checkpointing: list[tuple[Path, int | None]] = []
        for run_dir in self._run_dirs():
            reader = self._readers.get(run_dir)
            if reader is None:
                reader = self._readers[run_dir] = EventsReader(run_dir)
                if not self._started:
                    reader.poll()  # history
                    reader.events.clear()
                    continue
            new = reader.poll()
            reader.events.clear()  # only the new lines matter here; do not keep a run's history
            for event in new:
                if event.get("event") == "checkpoint":
                    checkpointing.append((run_dir, event.get("step")))
                described = describe_event(self._name(run_dir), event)
                if described is not None:
                    alerts.append(self._alert(run_dir, *described, event.get("step")))
        self._started = True
        alerts.extend(self._disk_alerts(checkpointing))
        return [a for a in alerts if self.limit.allow(a.run_dir, a.kind)]

    def _run_dirs(self) -> list[Path]:
        started = time.perf_counter()
        if started < self._walk_due:
            return self._runs
        try:
            found = find_run_folders(self.root, self.depth)
        except RunctlError:
            found = []
        self._runs = sorted(path for path, detector in found if detector.writable)
        self._walk_due = started + WALK_SHARE * (time.perf_counter() - started)
        return self._runs

    def _name(self, run_dir: Path) -> str:
        """The run as a listing names it: its path relative to the root."""
        try:
            relative = run_dir.relative_to(self.root).as_posix()
        except ValueError:
            return run_dir.name
        return relative if relative != "." else run_dir.name

    def _disk_alerts(self, checkpointing: list[tuple[Path, int | None]]) -> list[Alert]:
        if not checkpointing:
            return []
        try:
            usage = self._disk_usage(self.root)
        except OSError:
            return []
        threshold = self.disk_free_bytes
        if threshold is None:
            threshold = min(int(usage.total * DEFAULT_DISK_FREE_FRACTION), DEFAULT_DISK_FREE_CAP)
        if usage.free >= threshold:
            return []
        share = usage.free / usage.total * 100 if usage.total else 0.0
        alerts = []
        for run_dir, step in dict(checkpointing).items():
            message = (f"{self._name(run_dir)}: disk filling: {human_bytes(usage.free)} free ({share:.1f} %) on "
                       f"{self.root} while it writes checkpoints")
            alerts.append(self._alert(run_dir, "disk_low", message, step))
        return alerts

    def _alert(self, run_dir: Path, kind: str, message: str, step: Any) -> Alert:
        # The event is written before status.json changes: it, not the file, says the state now.
        state = kind if kind in EVENT_STATES else effective_state(read_status(run_dir), run_dir)
        return Alert(run_dir, self._name(run_dir), kind, state, step if isinstance(step, int) else None, message)
