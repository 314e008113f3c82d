"""Follow one run's files on a thread of its own and hand what changed to a callback.

The plot follows the files, whoever trains the run: an engine in this process, `runctl train` in
a shell, torchrun, another tool. A `RunFollower` reads the run incrementally (status, run.yaml,
events, checkpoints, metrics and the metrics of overlay runs) and calls `on_update(RunUpdate)` on
its thread with only what changed; the plotted metrics travel as a `PlotDelta` (new points, see
runs.plot_series), so the receiver never reads a file.

What makes it look:
- `wake()`: a `RunWatcher` saw the run's files change (runs.follower_hub.FollowerHub is the
  watcher's callback side: it wakes the followers of the runs in a batch of changes).
- A tick for what the watcher cannot see. A run the watcher covers needs no tick for its files;
  only its state can change without a write (a killed engine frees its lock, a heartbeat goes
  stale), so while it is live its status is re-read every `live_poll` seconds. A run the watcher
  does not cover (no watcher, another tool's files, a run deeper than the watcher looks) is read
  whole every `live_poll` seconds while live and every `idle_poll` seconds otherwise.
- Looks woken by changes are at least `min_look` seconds apart; what changes in between is read
  by the next look, together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runctl.runs.checkpoints import (
    expected_checkpoints,
    list_checkpoints,
    missing_checkpoints,
    quarantined_checkpoints,
)
from runctl.runs.discovery import detect, metrics_reader, run_checkpoints, summarize
from runctl.runs.events import EventsReader
from runctl.runs.follower_hub import never_covered
from runctl.runs.layout import CHECKPOINT_DIR, LIVE_STATES, MANIFEST_JSON, RUN_YAML, STATUS_JSON
from runctl.runs.metrics import MetricsReader
from runctl.runs.model import CheckpointInfo, RunSummary
from runctl.runs.plot_series import (
    OVERLAY_SERIES,
    RUN_SERIES,
    PlotDelta,
    SeriesDelta,
    SeriesKey,
    SeriesSender,
)
from runctl.runs.store import RunStore

log = logging.getLogger(__name__)

LIVE_POLL_SECONDS = 0.5
IDLE_POLL_SECONDS = 2.0
# Looks woken by file changes are at least this far apart: a run that writes metrics many times a
# second (digits_mlp logs ~70 lines a second) is read, and its update handled by the UI thread, a
# few times a second, as often as the plot redraws (tui.widgets.loss_plot.MAX_REDRAWS_PER_SECOND),
# rather than once per line; the changes in between are read together.
MIN_LOOK_SECONDS = 0.2


@dataclass
class RunUpdate:
    """What changed in the run's files since the follower's last look; None fields did not change."""

    summary: RunSummary | None = None
    config: dict[str, Any] | None = None
    config_text: str | None = None
    plot: PlotDelta | None = None
    new_events: list[dict[str, Any]] = field(default_factory=list)
    events_reset: bool = False
    checkpoints: list[CheckpointInfo] | None = None
    # Said once, a line each: what reading the run left out (a log too large to read whole, a line
    # too long) or needs (the package a reader of another tool's metrics needs).
    note: str | None = None


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class RunFollower:
    """Incremental reader of one run's files (plus overlay runs' metrics).

    `poll()` reads once and returns a RunUpdate, or None when nothing changed; `start()` runs the
    polls on a thread that calls `on_update` (and `on_error` with an exception that ends it).
    `covered(run_dir)` says whether a running watcher reports that run's file changes.
    """

    def __init__(
        self,
        run_dir: Path,
        root: Path | None = None,
        *,
        on_update: Callable[[RunUpdate], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        live_poll: float = LIVE_POLL_SECONDS,
        idle_poll: float = IDLE_POLL_SECONDS,
        min_look: float = MIN_LOOK_SECONDS,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.root = root
        self.on_update = on_update
        self.on_error = on_error
        self.live_poll = live_poll
        self.idle_poll = idle_poll
        self.min_look = min_look
        self.covered: Callable[[Path], bool] = never_covered
        detector = detect(self.run_dir)
        # Another tool's run: read with its layout's readers, never written.
        self.foreign = detector is not None and not detector.writable
        self.layout = detector.name if detector is not None else "unknown"
        self.metrics: Any = metrics_reader(self.run_dir) if self.foreign else MetricsReader(self.run_dir)
        self.events = EventsReader(self.run_dir)
        self.live = False
        self._overlay_dirs: tuple[Path, ...] = ()
        self._overlay_readers: dict[Path, Any] = {}
        self._overlay_labels: dict[Path, str] = {}
        self._overlay_foreign: dict[Path, bool] = {}
        # The runs whose changes concern this follower; replaced whole (read by the watcher's thread).
        self._followed: frozenset[Path] = frozenset({self.run_dir})
        self._overlays_sent: tuple[tuple[str, str], ...] | None = None
        self._plot = SeriesSender()
        self._plot_versions: tuple[int, ...] | None = None
        self._sizes: dict[str, int] = {}
        self._notes_sent: set[str] = set()
        self._status_key: Any = None
        self._config_key: Any = None
        self._checkpoints_key: Any = None
        self._events_generation = 0
        self._config: dict[str, Any] = {}
        self._summary: RunSummary | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the thread -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=f"runctl-follow:{self.run_dir.name}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end; with a timeout, wait for it that long."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and timeout is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wake(self) -> None:
        """Look at the files now (the watcher saw them change, or the user acted on the run)."""
        self._wake.set()

    def set_overlays(self, run_dirs: Iterable[Path]) -> None:
        """Other runs whose train/val loss the plot draws too; takes effect at the next look."""
        self._overlay_dirs = tuple(Path(d) for d in run_dirs)
        self.wake()

    def follows(self, run_dirs: set[Path]) -> bool:
        """Whether a change in any of `run_dirs` concerns this follower."""
        return not self._followed.isdisjoint(run_dirs)

    def _run(self) -> None:
        woken = True
        looked_at = float("-inf")
        try:
            while not self._stopping.is_set():
                early = looked_at + self.min_look - time.monotonic()
                if woken and early > 0 and self._stopping.wait(early):
                    break
                self._wake.clear()  # after the wait: what changed meanwhile is read by this look
                looked_at = time.monotonic()
                if woken or not self._watched():
                    update = self.poll()
                else:
                    update = self.poll_status()
                    if update is not None:
                        # The state changed: what depends on it (the expected checkpoints) may too.
                        rest = self.poll()
                        if rest is not None:
                            rest.summary = rest.summary or update.summary
                            update = rest
                if update is not None and not self._stopping.is_set() and self.on_update is not None:
                    self.on_update(update)
                woken = self._wake.wait(self._interval())
        except Exception as exc:
            log.exception("following %s failed", self.run_dir)
            if self.on_error is not None and not self._stopping.is_set():
                self.on_error(exc)

    def _watched(self) -> bool:
        """A watcher reports every file change of the run and of its overlay runs."""
        if self.foreign or not self.covered(self.run_dir):
            return False
        return all(self.covered(d) and not self._overlay_foreign.get(d, False) for d in self._followed)

    def _interval(self) -> float | None:
        if self._watched():
            return self.live_poll if self.live else None
        return self.live_poll if self.live else self.idle_poll

    # --- one look ---------------------------------------------------------------------------
    def poll_status(self) -> RunUpdate | None:
        """Re-read only the run's state (for what changes without a write: a stale heartbeat)."""
        update = RunUpdate()
        return update if self._poll_summary(update, self._read_config_key()) else None

    def poll(self) -> RunUpdate | None:
        update = RunUpdate()
        changed = False

        config_key = self._read_config_key()
        if self.foreign and self._config_key is None:
            self._config_key = "foreign"
            update.config = {}
            update.config_text = (f"# {self.run_dir}\n# A {self.layout} run written by another tool: runctl reads "
                                  "its files and never writes into its folder.\n")
            changed = True
        elif not self.foreign and config_key != self._config_key:
            self._config_key = config_key
            store = RunStore(self.run_dir)
            self._config, _ = store.read_config()
            update.config = self._config
            update.config_text = store.config_text()
            changed = True

        changed = self._poll_summary(update, config_key) or changed
        summary = self._summary

        new_events = self.events.poll()
        if self.events.generation != self._events_generation:
            self._events_generation = self.events.generation
            update.events_reset = True
            update.new_events = list(self.events.events)
            changed = True
        elif new_events:
            update.new_events = new_events
            changed = True

        if self.foreign:
            changed = self._poll_foreign_checkpoints(update) or changed
        else:
            changed = self._poll_checkpoints(update, summary) or changed

        update.plot = self._poll_plot()
        notes = [note for note in (getattr(self.metrics, "note", None), self.events.note)
                 if note and note not in self._notes_sent]
        if notes:
            self._notes_sent.update(notes)
            update.note = "\n".join(dict.fromkeys(notes))
        changed = changed or update.plot is not None or update.note is not None
        return update if changed else None

    def _read_config_key(self) -> tuple[int, int] | None:
        return _stat_key(self.run_dir / RUN_YAML)

    def _poll_summary(self, update: RunUpdate, config_key: Any) -> bool:
        changed = False
        # The time term re-reads a quiet run now and then: a stale heartbeat turns running into interrupted.
        status_key = (_stat_key(self.run_dir / STATUS_JSON), config_key, int(time.time() // 10))
        if status_key != self._status_key or self.live:
            summary = summarize(self.run_dir, self.root)
            if self._summary is None or summary.to_json() != self._summary.to_json():
                self._summary = summary
                update.summary = summary
                changed = True
            self._status_key = status_key
        self.live = self._summary is not None and self._summary.state in LIVE_STATES
        return changed

    def _poll_checkpoints(self, update: RunUpdate, summary: RunSummary | None) -> bool:
        ckpt_dir = self.run_dir / CHECKPOINT_DIR
        expected = self._expected(summary)
        # Not the step itself: a training run's step changes every poll, its expected list rarely.
        checkpoints_key = (_stat_key(ckpt_dir), _stat_key(ckpt_dir / MANIFEST_JSON), tuple(expected))
        if checkpoints_key == self._checkpoints_key:
            return False
        self._checkpoints_key = checkpoints_key
        infos = list_checkpoints(self.run_dir, level="quick")
        # Files on disk (a best one, say) compete for keep_last places, as in the engine.
        present = [info.step for info in infos if info.step is not None]
        expected = self._expected(summary, present)
        update.checkpoints = (infos + missing_checkpoints(expected, infos, ckpt_dir)
                              + quarantined_checkpoints(self.run_dir))
        return True

    def _poll_foreign_checkpoints(self, update: RunUpdate) -> bool:
        """Another tool's checkpoints: stat them all (cheap), read them again when any changed. A
        file whose size changed since the last look is still being written."""
        listed = run_checkpoints(self.run_dir, None)
        key = tuple((i.name, i.bytes, i.mtime, i.status) for i in listed)
        if key == self._checkpoints_key:
            return False
        self._checkpoints_key = key
        infos = run_checkpoints(self.run_dir, "quick")
        growing = {i.name for i in listed if i.name in self._sizes and self._sizes[i.name] != i.bytes}
        self._sizes = {i.name: i.bytes for i in listed}
        for index, info in enumerate(infos):
            if info.name in growing:
                infos[index] = replace(info, status="partial", reason="still being written (it grew since the last look)")
        update.checkpoints = infos
        return True

    def _expected(self, summary: RunSummary | None, present: list[int] = ()) -> list[int]:
        """Steps whose checkpoints should exist now (runs.checkpoints' rule, which also allows for
        a save still in flight on a running run), for the missing rows."""
        if not self._config or summary is None:
            return []
        return expected_checkpoints(self._config, summary.state, summary.step, present=present)

    # --- the plot ---------------------------------------------------------------------------
    def _poll_plot(self) -> PlotDelta | None:
        self.metrics.poll()
        parent = self._parent_dir()
        wanted = [d for d in (parent, *self._overlay_dirs) if d is not None and d != self.run_dir]
        wanted = list(dict.fromkeys(wanted))
        for stale in set(self._overlay_readers) - set(wanted):
            del self._overlay_readers[stale]
            self._overlay_foreign.pop(stale, None)
            self._plot.forget((str(stale), metric) for metric in OVERLAY_SERIES)
        for run_dir in wanted:
            if run_dir not in self._overlay_readers:
                self._overlay_readers[run_dir] = metrics_reader(run_dir)
                detector = detect(run_dir)
                self._overlay_foreign[run_dir] = detector is not None and not detector.writable
                label, _ = RunStore(run_dir).read_config()
                prefix = "parent " if run_dir == parent else ""
                self._overlay_labels[run_dir] = prefix + str(label.get("name") or self._relative_name(run_dir))
            self._overlay_readers[run_dir].poll()
        self._followed = frozenset({self.run_dir, *wanted})
        versions = (self.metrics.version, *(hash(d) for d in wanted),
                    *(self._overlay_readers[d].version for d in wanted))
        if versions == self._plot_versions:
            return None
        self._plot_versions = versions
        series: dict[SeriesKey, SeriesDelta] = {}
        self._series_deltas(series, "", self.metrics, RUN_SERIES)
        for run_dir in wanted:
            self._series_deltas(series, str(run_dir), self._overlay_readers[run_dir], OVERLAY_SERIES)
        overlays = tuple((str(d), self._overlay_labels[d]) for d in wanted)
        listed = None if overlays == self._overlays_sent else overlays
        self._overlays_sent = overlays
        if not series and listed is None:
            return None
        return PlotDelta(series, listed)

    def _series_deltas(self, into: dict[SeriesKey, SeriesDelta], run: str, reader: Any,
                       metrics: tuple[str, ...]) -> None:
        for metric in metrics:
            steps, values = reader.series(metric)
            delta = self._plot.delta((run, metric), steps, values)
            if delta is not None:
                into[(run, metric)] = delta

    def _relative_name(self, run_dir: Path) -> str:
        if self.root is not None:
            try:
                return run_dir.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return run_dir.name

    def _parent_dir(self) -> Path | None:
        parent = self._config.get("parent")
        if not isinstance(parent, dict) or not parent.get("run_id"):
            return None
        candidate = self.run_dir.parent / str(parent["run_id"])
        return candidate if candidate.is_dir() else None
