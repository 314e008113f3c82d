"""The run view: one run's live loss plot, checkpoints, events, config and system stats, and its keys.

File reading happens off the UI thread. A `RunFollower` (no Textual) polls the run's files
incrementally from one thread worker: it wakes on change messages (RunsChanged, EngineEvent), on
a 0.5 s tick while the run is live, and on a slow tick otherwise, and posts one `RunUpdate` with
whatever changed. Checkpoint verification (full in the background, deep on `v`) runs in its own
thread workers and updates badges row by row.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.text import Text
from runctl.runs import integrity
from runctl.runs.checkpoints import (
    expected_checkpoints,
    list_checkpoints,
    missing_checkpoints,
    newest_valid,
    quarantined_checkpoints,
)
from runctl.runs.discovery import detect, metrics_reader, run_checkpoints, summarize
from runctl.runs.errors import RunctlError
from runctl.runs.events import EventsReader
from runctl.runs.layout import CHECKPOINT_DIR, LIVE_STATES, MANIFEST_JSON, RUN_YAML, STATUS_JSON
from runctl.runs.manifest import read_manifest
from runctl.runs.metrics import MetricsReader
from runctl.runs.model import CheckpointInfo, RunSummary
from runctl.runs.store import RunStore
from runctl.tui.commands.inspect import stalled_note
from runctl.tui.messages import EngineEvent, EngineFinished, MetricsAppended, RunsChanged
from runctl.tui.screens.branch_dialog import BranchDialog, BranchRequest
from runctl.tui.screens.checkpoint_diff import CheckpointDiffScreen
from runctl.tui.screens.confirm_delete import ConfirmDeleteScreen, delete_checkpoint
from runctl.tui.screens.extend_dialog import ExtendDialog
from runctl.tui.widgets.checkpoint_table import MARKS, USABLE_STATUSES, CheckpointTable
from runctl.tui.widgets.config_view import ConfigView
from runctl.tui.widgets.events_log import EventsLog
from runctl.tui.widgets.loss_plot import Curve, LossPlot, Overlay, PlotData
from runctl.tui.widgets.system_stats import SystemStats
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

LIVE_POLL_SECONDS = 0.5
# Keys that write into the run's folder: never offered on a run another tool wrote.
# The config a branch from another tool's checkpoint starts from in the dialog (edited to fit).
FOREIGN_BRANCH_STARTER = "digits_mlp"
HF_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")
WRITING_ACTIONS = frozenset({"resume", "resume_from", "extend", "checkpoint_now", "stop", "delete"})
IDLE_POLL_SECONDS = 2.0
# Columns from which the plot and the tabs sit side by side instead of stacked.
WIDE_COLUMNS = 150

STATE_BADGES: dict[str, tuple[str, str]] = {
    "running": ("▶", "bold green"),
    "stalled": ("‖", "bold white on magenta"),
    "stopped": ("■", "yellow"),
    "interrupted": ("⚡", "bold yellow"),
    "crashed": ("✗", "bold red"),
    "finished": ("✓", "green"),
    "unknown": ("?", "dim"),
}


# ------------------------------------------------------------------------------ reading (thread)

class RunUpdate(Message):
    """What changed in the run's files since the follower's last look; None fields did not change."""

    def __init__(self) -> None:
        super().__init__()
        self.summary: RunSummary | None = None
        self.config: dict[str, Any] | None = None
        self.config_text: str | None = None
        self.plot: PlotData | None = None
        self.new_events: list[dict[str, Any]] = []
        self.events_reset = False
        self.checkpoints: list[CheckpointInfo] | None = None
        self.note: str | None = None  # said once: e.g. the package a reader of the run's metrics needs


class CheckpointVerified(Message):
    def __init__(self, info: CheckpointInfo, level: str) -> None:
        super().__init__()
        self.info = info
        self.level = level


class DeleteChecked(Message):
    """The newest valid checkpoint was determined for a delete request of `info`."""

    def __init__(self, info: CheckpointInfo, newest: CheckpointInfo | None) -> None:
        super().__init__()
        self.info = info
        self.newest = newest


class CheckpointDeleted(Message):
    def __init__(self, name: str, error: str | None) -> None:
        super().__init__()
        self.name = name
        self.error = error


def _curve(reader: Any, name: str) -> Curve | None:
    steps, values = reader.series(name)
    if not len(steps):
        return None
    # The reader's arrays are views valid only until its next poll, on another thread: copy.
    return Curve(steps.copy(), values.copy())


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class RunFollower:
    """Incremental reader of one run's files (plus overlay runs' metrics); used from one thread.

    `poll()` returns a RunUpdate with only what changed, or None when nothing did.
    """

    def __init__(self, run_dir: Path, root: Path | None = None) -> None:
        self.run_dir = run_dir
        self.root = root
        detector = detect(run_dir)
        # Another tool's run: read with its layout's readers, never written.
        self.foreign = detector is not None and not detector.writable
        self.layout = detector.name if detector is not None else "unknown"
        self.metrics: Any = metrics_reader(run_dir) if self.foreign else MetricsReader(run_dir)
        self.events = EventsReader(run_dir)
        self.overlay_dirs: tuple[Path, ...] = ()
        self.live = False
        self._overlay_readers: dict[Path, Any] = {}
        self._sizes: dict[str, int] = {}
        self._note_sent = False
        self._overlay_labels: dict[Path, str] = {}
        self._plot_versions: tuple[int, ...] | None = None
        self._status_key: Any = None
        self._config_key: Any = None
        self._checkpoints_key: Any = None
        self._events_generation = 0
        self._config: dict[str, Any] = {}
        self._summary: RunSummary | None = None

    def poll(self) -> RunUpdate | None:
        update = RunUpdate()
        changed = False

        config_key = _stat_key(self.run_dir / RUN_YAML)
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

        # The time term re-reads a quiet run now and then: a stale heartbeat turns running into interrupted.
        status_key = (_stat_key(self.run_dir / STATUS_JSON), config_key, int(time.time() // 10))
        if status_key != self._status_key or self.live:
            summary = summarize(self.run_dir, self.root)
            if self._summary is None or summary.to_json() != self._summary.to_json():
                self._summary = summary
                update.summary = summary
                changed = True
            self._status_key = status_key
        summary = self._summary
        self.live = summary is not None and summary.state in LIVE_STATES

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
            plot = self._poll_plot()
            if plot is not None:
                update.plot = plot
                changed = True
            if self.metrics.note and not self._note_sent:
                self._note_sent = True
                update.note = self.metrics.note
                changed = True
            return update if changed else None

        ckpt_dir = self.run_dir / CHECKPOINT_DIR
        expected = self._expected(summary)
        # Not the step itself: a training run's step changes every poll, its expected list rarely.
        checkpoints_key = (_stat_key(ckpt_dir), _stat_key(ckpt_dir / MANIFEST_JSON), tuple(expected))
        if checkpoints_key != self._checkpoints_key:
            self._checkpoints_key = checkpoints_key
            infos = list_checkpoints(self.run_dir, level="quick")
            # Files on disk (a best one, say) compete for keep_last places, as in the engine.
            present = [info.step for info in infos if info.step is not None]
            expected = self._expected(summary, present)
            update.checkpoints = (infos + missing_checkpoints(expected, infos, ckpt_dir)
                                  + quarantined_checkpoints(self.run_dir))
            changed = True

        plot = self._poll_plot()
        if plot is not None:
            update.plot = plot
            changed = True
        return update if changed else None

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

    def _poll_plot(self) -> PlotData | None:
        self.metrics.poll()
        parent = self._parent_dir()
        wanted = [d for d in (parent, *self.overlay_dirs) if d is not None and d != self.run_dir]
        wanted = list(dict.fromkeys(wanted))
        for stale in set(self._overlay_readers) - set(wanted):
            del self._overlay_readers[stale]
        for run_dir in wanted:
            if run_dir not in self._overlay_readers:
                self._overlay_readers[run_dir] = metrics_reader(run_dir)
                label, _ = RunStore(run_dir).read_config()
                prefix = "parent " if run_dir == parent else ""
                self._overlay_labels[run_dir] = prefix + str(label.get("name") or self._relative_name(run_dir))
            self._overlay_readers[run_dir].poll()
        versions = (self.metrics.version, *(hash(d) for d in wanted),
                    *(self._overlay_readers[d].version for d in wanted))
        if versions == self._plot_versions:
            return None
        self._plot_versions = versions
        overlays = tuple(
            Overlay(self._overlay_labels[d], _curve(self._overlay_readers[d], "train/loss"),
                    _curve(self._overlay_readers[d], "val/loss"))
            for d in wanted
        )
        return PlotData(train=_curve(self.metrics, "train/loss"), val=_curve(self.metrics, "val/loss"),
                        lr=_curve(self.metrics, "lr"), overlays=overlays)

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


# ------------------------------------------------------------------------------ the screen

def state_text(summary: RunSummary | None) -> Text:
    if summary is None:
        return Text("loading…", style="dim")
    symbol, style = STATE_BADGES.get(summary.state, STATE_BADGES["unknown"])
    text = Text()
    text.append(summary.name, style="bold")
    text.append("  ")
    text.append(f"{symbol} {summary.state}", style=style)
    if summary.step is not None:
        text.append(f"  step {summary.step}" + (f"/{summary.max_steps}" if summary.max_steps else ""))
    if summary.last_loss is not None:
        text.append(f"  loss {summary.last_loss:.4g}")
    if summary.best and isinstance(summary.best.get("value"), int | float):
        text.append(f"  best {summary.best.get('metric', '?')} {summary.best['value']:.4g}"
                    f" @ {summary.best.get('step', '?')}")
    if summary.parent:
        text.append(f"  ⑂ {summary.parent.get('run_id', '?')}", style="dim")
    if summary.layout not in ("runctl", "unknown"):
        text.append(f"  {summary.layout} · read-only", style="dim italic")
    if summary.world_size > 1:
        nodes = f" on {summary.nodes} nodes" if summary.nodes > 1 else ""
        text.append(f"  {summary.world_size} ranks{nodes}", style="dim")
    for silent in summary.silent_ranks:
        text.append(f"\n{silent}", style="yellow")
    if summary.error:
        text.append(f"\n{summary.error}", style="red")
    if summary.stalled:
        text.append(f"\n{stalled_note(summary.stalled, time.time())} (stacks: Events tab)", style="magenta")
    return text


class RunViewScreen(Screen):
    """One run: Enter on the runs list pushes it, escape pops it."""

    CSS_PATH = "../styles/run_view.tcss"

    BINDINGS = [
        Binding("escape", "back", "Back", id="runctl.back"),
        Binding("r", "resume", "Resume", id="runctl.resume"),
        Binding("R", "resume_from", "Resume from", id="runctl.resume_from"),
        Binding("e", "extend", "Extend", id="runctl.extend"),
        Binding("b", "branch", "Branch", id="runctl.branch"),
        Binding("c", "checkpoint_now", "Checkpoint", id="runctl.checkpoint"),
        Binding("x", "stop", "Stop", id="runctl.stop"),
        Binding("v", "verify", "Verify", id="runctl.verify"),
        Binding("d", "delete", "Delete ckpt", id="runctl.delete"),
        Binding("space", "mark", "Mark", id="runctl.mark", tooltip="Mark a checkpoint (two for a diff)"),
        Binding("D", "diff", "Diff", id="runctl.diff", tooltip="Compare the two marked checkpoints"),
        Binding("m", "smoothing", "Smooth", id="runctl.plot.smoothing"),
        Binding("l", "log_y", "Log-y", id="runctl.plot.log_y"),
        Binding("w", "window", "Window", id="runctl.plot.window"),
        Binding("L", "lr", "LR", id="runctl.plot.lr"),
    ]

    state: reactive[str] = reactive("unknown", bindings=True)
    selected_name: reactive[str | None] = reactive(None, bindings=True)

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.summary: RunSummary | None = None
        self.run_cfg: dict[str, Any] = {}
        self._follower = RunFollower(self.run_dir)
        self._wake = threading.Event()
        self._closing = False
        self._bindings_key: tuple[str, str] | None = None

    # --- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(state_text(None), id="run-header")
        with Vertical(id="run-body"):
            yield LossPlot(id="loss-plot")
            with TabbedContent(id="run-tabs", initial="tab-checkpoints"):
                with TabPane("Checkpoints", id="tab-checkpoints"):
                    yield CheckpointTable(id="checkpoints")
                with TabPane("Events", id="tab-events"):
                    yield EventsLog(id="events")
                with TabPane("Config", id="tab-config"):
                    yield ConfigView(id="config")
                with TabPane("System", id="tab-system"):
                    yield SystemStats(id="system")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.run_dir)
        self._follower.root = getattr(self.app, "root", None)
        self._follower.overlay_dirs = self._selected_overlays()
        self._follow()
        self.query_one(CheckpointTable).focus()

    def on_unmount(self) -> None:
        # Let the follower thread see its cancellation now rather than at the end of its wait.
        self._closing = True
        self._wake.set()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE_COLUMNS, "-wide")

    def on_screen_resume(self) -> None:
        # Back from a dialog or from the runs list with a new selection for the overlay.
        self._follower.overlay_dirs = self._selected_overlays()
        self.wake()

    def _selected_overlays(self) -> tuple[Path, ...]:
        selected: Iterable[Any] = getattr(self.app, "selected_runs", None) or ()
        return tuple(Path(p) for p in selected if Path(p) != self.run_dir)

    def _now(self) -> float:
        now: Callable[[], float] | None = getattr(self.app, "now", None)
        return now() if callable(now) else time.time()

    @property
    def engine_host(self) -> Any:
        return self.app.engine_host  # type: ignore[attr-defined]

    # --- following the run's files --------------------------------------------------------
    def wake(self) -> None:
        """Ask the follower thread to look at the files now."""
        self._wake.set()

    @work(thread=True, exclusive=True, group="follow", exit_on_error=False)
    def _follow(self) -> None:
        worker = get_current_worker()
        while not (worker.is_cancelled or self._closing):
            self._wake.clear()
            update = self._follower.poll()
            if update is not None and not worker.is_cancelled:
                self.post_message(update)
            live = self._follower.live or self._is_training_here()
            self._wake.wait(LIVE_POLL_SECONDS if live else IDLE_POLL_SECONDS)

    def _is_training_here(self) -> bool:
        host = getattr(self.app, "engine_host", None)
        return bool(host is not None and host.is_training(self.run_dir))

    # The app forwards its news to the active screen; stop() keeps a copy from bubbling back to it.
    @on(RunsChanged)
    def _runs_changed(self, message: RunsChanged) -> None:
        message.stop()
        self.wake()

    @on(EngineEvent)
    @on(MetricsAppended)
    @on(EngineFinished)
    def _run_news(self, message: EngineEvent | MetricsAppended | EngineFinished) -> None:
        message.stop()
        if Path(message.run_dir) != self.run_dir:
            return
        if isinstance(message, EngineFinished) and self.summary is not None:
            # The final summary often arrives while the engine thread is still registered, so it
            # set "running"; when nothing on disk changes after that, no later update would clear
            # it and r/R would stay disabled.
            self.state = self._shown_state(self.summary)
            self.refresh_bindings()
        self.wake()

    @on(RunUpdate)
    def _apply_update(self, update: RunUpdate) -> None:
        if update.config is not None:
            self.run_cfg = update.config
        if update.config_text is not None:
            self.query_one(ConfigView).show_text(update.config_text)
        if update.summary is not None:
            self.summary = update.summary
            self.state = self._shown_state(update.summary)
            self.query_one("#run-header", Static).update(state_text(update.summary))
        if update.events_reset:
            self.query_one(EventsLog).reset()
        if update.new_events:
            self.query_one(EventsLog).add_events(update.new_events)
        if update.plot is not None:
            self.query_one(LossPlot).set_data(update.plot)
        if update.note is not None:
            self.notify(update.note, severity="warning", markup=False)
        if update.checkpoints is not None:
            table = self.query_one(CheckpointTable)
            table.show(update.checkpoints, self._now())
            self._sync_selection()
            self._verify_all([i for i in update.checkpoints
                              if i.status not in ("missing", "partial", "quarantined")])

    # --- checkpoint verification ----------------------------------------------------------
    @work(thread=True, exclusive=True, group="verify", exit_on_error=False)
    def _verify_all(self, infos: list[CheckpointInfo]) -> None:
        """Full verification (CRC of every record + sha256), newest first: it is the one resume needs."""
        worker = get_current_worker()
        manifest = read_manifest(self.run_dir / CHECKPOINT_DIR)
        for info in sorted(infos, key=lambda i: i.step or 0, reverse=True):
            if worker.is_cancelled:
                return
            if info.status == "corrupt" or info.level in ("full", "deep"):
                continue
            verified = integrity.verify_file(info.path, "full", manifest.files.get(info.name))
            self.post_message(CheckpointVerified(self._as_listed(info, verified), "full"))

    @work(thread=True, group="deep-verify", exit_on_error=False)
    def _verify_deep(self, info: CheckpointInfo, others: list[Path]) -> None:
        """Load `info` (weights_only) and compare it with the newest other intact checkpoint's identity
        (run_id, model shapes), so a file from another run or model shows as incompatible."""
        if self.foreign:
            # Another tool's files: no run identity to compare with, no manifest.
            verified = integrity.verify_file(info.path, "deep")
            self.post_message(CheckpointVerified(self._as_listed(info, verified), "deep"))
            return
        manifest = read_manifest(self.run_dir / CHECKPOINT_DIR)
        reference = None
        for path in others:
            # identity_of answers from the deep-verify cache: make sure the reference was read.
            if integrity.verify_file(path, "deep", manifest.files.get(path.name)).status == "ok":
                reference = integrity.identity_of(path)
                break
        verified = integrity.verify_file(info.path, "deep", manifest.files.get(info.name), reference=reference)
        self.post_message(CheckpointVerified(verified, "deep"))

    @property
    def foreign(self) -> bool:
        return self._follower.foreign

    def _as_listed(self, listed: CheckpointInfo, verified: CheckpointInfo) -> CheckpointInfo:
        """A verification of another tool's file keeps what its layout said (the table's name
        for it, its step and role, the copy it is); no manifest is expected beside it."""
        if not self.foreign:
            return verified
        reason = None if verified.reason == "no manifest entry" else verified.reason
        return replace(verified, name=listed.name, step=listed.step if listed.step is not None else verified.step,
                       kind=listed.kind, copy_of=listed.copy_of, reason=reason)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A file-reading worker that failed says so instead of leaving a badge or a plot stale."""
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.name}: {event.worker.error}", severity="error", markup=False)

    @on(CheckpointVerified)
    def _checkpoint_verified(self, message: CheckpointVerified) -> None:
        table = self.query_one(CheckpointTable)
        current = table.infos.get(message.info.name)
        # A background full pass must not overwrite a deep result that arrived first.
        if current is not None and current.level == "deep" and message.level == "full":
            return
        table.update_info(message.info)
        if message.level == "deep":
            info = message.info
            severity = "information" if info.status in USABLE_STATUSES else "error"
            reason = f": {info.reason}" if info.reason else ""
            self.notify(f"{info.name}: {info.status} (deep){reason}", severity=severity, markup=False)
        self.refresh_bindings()

    # --- selection and key availability ---------------------------------------------------
    @on(DataTable.RowHighlighted, "#checkpoints")
    def _row_highlighted(self) -> None:
        self._sync_selection()

    def _sync_selection(self) -> None:
        selected = self.query_one(CheckpointTable).selected
        self.selected_name = selected.name if selected else None
        # Only when the keys' availability can change: every refresh makes the Footer recompose
        # all its keys, and this runs on each table refresh (several a second while training).
        key = (selected.name, selected.status) if selected else None
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()

    @property
    def selected_checkpoint(self) -> CheckpointInfo | None:
        return self.query_one(CheckpointTable).selected

    def _training(self) -> bool:
        return self.state in LIVE_STATES or self._is_training_here()

    def _shown_state(self, summary: RunSummary | None) -> str:
        """The files' state, except that a run training in this process is live whatever they say."""
        state = summary.state if summary is not None else "unknown"
        if self._is_training_here() and state not in LIVE_STATES:
            return "running"
        return state

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        selected = self.selected_checkpoint if self.is_mounted else None
        # A quarantined file lies outside checkpoints/: `runctl verify` of its folder checks it.
        on_disk = selected is not None and selected.status not in ("missing", "quarantined")
        usable = selected is not None and selected.status in USABLE_STATUSES
        training = self._training()
        if self.foreign and action in WRITING_ACTIONS:
            return None  # another tool's run: runctl never writes into its folder
        available = {
            "resume": not training and self.summary is not None and self.state != "finished",
            "resume_from": not training and usable,
            "extend": bool(self.run_cfg.get("max_steps")),
            "branch": usable and (bool(self.run_cfg) or self.foreign),
            "checkpoint_now": training,
            "stop": training,
            "verify": on_disk and selected is not None and selected.status != "partial",
            "delete": on_disk and selected is not None and selected.status != "partial",
            "mark": on_disk and selected is not None and selected.status != "partial",
            "diff": self.is_mounted and len(self.query_one(CheckpointTable).marked_infos()) == MARKS,
        }.get(action, True)
        return True if available else None

    # --- actions --------------------------------------------------------------------------
    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def _after_command(self, message: str | None) -> None:
        if message:
            self.notify(message, markup=False)
        self.state = self._shown_state(self.summary)
        self.wake()

    def action_resume(self) -> None:
        self._after_command(self.engine_host.resume(self.run_dir))

    def action_resume_from(self) -> None:
        selected = self.selected_checkpoint
        if selected is None:
            return
        self._after_command(self.engine_host.resume(self.run_dir, from_ckpt=selected.path))

    def action_extend(self) -> None:
        step = self.summary.step if self.summary and self.summary.step is not None else 0
        name = self.summary.name if self.summary else self.run_dir.name

        def extend(max_steps: int | None) -> None:
            if max_steps is not None:
                self._after_command(self.engine_host.extend(self.run_dir, max_steps))

        self.app.push_screen(ExtendDialog(name, self.run_cfg, step), extend)

    def action_branch(self) -> None:
        selected = self.selected_checkpoint
        if selected is None:
            return
        name = self.summary.name if self.summary else self.run_dir.name
        if self.foreign:
            self._ask_foreign_branch(selected, name)
            return

        def branch(request: BranchRequest | None) -> None:
            if request is not None:
                self.notify(f"branching {name} @ {selected.name}…", markup=False)
                self._branch(selected, request, name)

        self.app.push_screen(BranchDialog(name, selected.name, selected.step, self.run_cfg), branch)

    @work(thread=True, group="branch", exit_on_error=False)
    def _branch(self, selected: CheckpointInfo, request: BranchRequest, name: str) -> None:
        """Creating the branch verifies and reads the checkpoint (seconds for a big one): off the
        UI thread. Training it and opening its view happen back on the UI thread."""
        new_dir = self.engine_host.branch(self.run_dir, selected.path, request.name,
                                          overrides=request.overrides, config_yaml=request.config_yaml,
                                          weights_only=request.weights_only, start=False)
        if new_dir is not None:
            self.app.call_from_thread(self._open_branch, Path(new_dir), f"{name} @ {selected.name}")

    def _ask_foreign_branch(self, selected: CheckpointInfo, name: str) -> None:
        """Another tool's checkpoint: the dialog starts from a built-in config for the user to fit
        to the checkpoint's model (task, model sizes); a file of a checkpoint-N/ folder means the folder."""
        from runctl.engine.config import load_config
        from runctl.tui.screens.branch_dialog import config_text

        starter = load_config(FOREIGN_BRANCH_STARTER)
        source = selected.path.parent if HF_CHECKPOINT_DIR.match(selected.path.parent.name) else selected.path

        def branch(request: BranchRequest | None) -> None:
            if request is not None:
                self.notify(f"branching {name} @ {selected.name}…", markup=False)
                self._branch_foreign(source, request, request.config_yaml or config_text(starter),
                                     f"{name} @ {selected.name}")

        self.app.push_screen(BranchDialog(name.replace("/", "-"), selected.name, selected.step, starter), branch)

    @work(thread=True, group="branch", exit_on_error=False)
    def _branch_foreign(self, source: Path, request: BranchRequest, config_yaml: str, origin: str) -> None:
        new_dir = self.engine_host.branch_foreign(source, request.name, config_yaml, request.overrides,
                                                  weights_only=request.weights_only)
        if new_dir is not None:
            self.app.call_from_thread(self._open_branch, Path(new_dir), origin)

    def _open_branch(self, new_dir: Path, origin: str) -> None:
        self.engine_host.start(new_dir)
        self.notify(f"branched {origin} -> {new_dir.name}", markup=False)
        view = RunViewScreen(new_dir)
        if self.app.screen is self:
            self.app.switch_screen(view)
        else:  # the user moved on while the branch was made: do not replace what they look at
            self.app.push_screen(view)

    def action_checkpoint_now(self) -> None:
        self._after_command(self.engine_host.checkpoint_now(self.run_dir))

    def action_stop(self) -> None:
        self._after_command(self.engine_host.stop(self.run_dir))

    def action_verify(self) -> None:
        selected = self.selected_checkpoint
        if selected is None or selected.status == "missing":
            return
        self.notify(f"deep-verifying {selected.name}…", markup=False)
        table = self.query_one(CheckpointTable)
        others = [i.path for i in sorted(table.infos.values(), key=lambda i: i.step or 0, reverse=True)
                  if i.name != selected.name and i.status == "ok"]
        self._verify_deep(selected, others)

    def action_delete(self) -> None:
        selected = self.selected_checkpoint
        if selected is None or selected.status == "missing":
            return
        if self._training():
            self.notify("refusing to delete a checkpoint while the run trains: the engine owns its "
                        "manifest; stop it first (x)", severity="warning", markup=False)
            return
        self._check_delete(selected)

    def action_mark(self) -> None:
        selected = self.selected_checkpoint
        if selected is None or selected.status in ("missing", "partial"):
            return
        self.query_one(CheckpointTable).toggle_mark(selected.name)
        self.refresh_bindings()

    def action_diff(self) -> None:
        marked = self.query_one(CheckpointTable).marked_infos()
        if len(marked) != MARKS:
            self.notify("mark two checkpoints with space first", severity="warning", markup=False)
            return
        self.app.push_screen(CheckpointDiffScreen(marked[0].path, marked[1].path))

    @work(thread=True, group="delete", exit_on_error=False)
    def _check_delete(self, info: CheckpointInfo) -> None:
        newest, _ = newest_valid(self.run_dir)
        self.post_message(DeleteChecked(info, newest))

    @on(DeleteChecked)
    def _ask_delete(self, message: DeleteChecked) -> None:
        info, newest = message.info, message.newest
        if newest is not None and newest.name == info.name:
            self.notify(f"refusing to delete {info.name}: it is the newest valid checkpoint, the one "
                        "resume (r) would use", severity="error", markup=False)
            return
        detail = f"step {info.step}, {info.kind or 'unknown kind'}, status {info.status}"
        if newest is not None:
            detail += f"; resume will still use {newest.name}"

        def delete(confirmed: bool | None) -> None:
            if confirmed:
                self._delete(info.name)

        self.app.push_screen(ConfirmDeleteScreen(info.name, detail), delete)

    @work(thread=True, group="delete", exit_on_error=False)
    def _delete(self, name: str) -> None:
        try:
            delete_checkpoint(self.run_dir, name)
        except (RunctlError, OSError) as err:
            self.post_message(CheckpointDeleted(name, str(err)))
            return
        self.post_message(CheckpointDeleted(name, None))

    @on(CheckpointDeleted)
    def _deleted(self, message: CheckpointDeleted) -> None:
        if message.error:
            self.notify(f"could not delete {message.name}: {message.error}", severity="error", markup=False)
        else:
            self.notify(f"deleted {message.name}", markup=False)
        self.wake()

    # --- plot keys ------------------------------------------------------------------------
    def action_smoothing(self) -> None:
        factor = self.query_one(LossPlot).cycle_smoothing()
        self.notify(f"smoothing: EMA {factor:g}" if factor else "smoothing: off", timeout=2)

    def action_log_y(self) -> None:
        plot = self.query_one(LossPlot)
        plot.log_y = not plot.log_y

    def action_window(self) -> None:
        self.query_one(LossPlot).toggle_window()

    def action_lr(self) -> None:
        plot = self.query_one(LossPlot)
        plot.show_lr = not plot.show_lr
