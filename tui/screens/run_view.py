"""The run view: one run's live loss plot, checkpoints, events, config and system stats, and its keys.

File reading happens off the UI thread. A `runs.run_follower.RunFollower` (no Textual) reads the
run's files on its own thread when the file watcher saw them change (and on a tick for what the
watcher cannot see); its callback posts the new points to the plot, new events to the events log
and the rest (state, config, checkpoint rows) to this screen. Checkpoint verification (full in the background, deep on
`v`) runs in thread workers and updates badges row by row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runctl.runs.layout import LIVE_STATES
from runctl.runs.model import CheckpointInfo, RunSummary
from runctl.runs.run_follower import RunFollower, RunUpdate
from runctl.tui.frame_timer import SteadyFrames
from runctl.tui.messages import EngineFinished
from runctl.tui.screens.branching import ask_branch
from runctl.tui.screens.checkpoint_diff import CheckpointDiffScreen
from runctl.tui.screens.confirm_delete import ask_delete
from runctl.tui.screens.extend_dialog import ExtendDialog
from runctl.tui.widgets.checkpoint_table import MARKS, USABLE_STATUSES, CheckpointTable
from runctl.tui.widgets.config_view import ConfigView
from runctl.tui.widgets.events_log import EventsLog
from runctl.tui.widgets.loss_plot import LossPlot
from runctl.tui.widgets.run_header import RunHeader
from runctl.tui.widgets.system_stats import SystemStats
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

# Keys that write into the run's folder: never offered on a run another tool wrote.
WRITING_ACTIONS = frozenset({"resume", "resume_from", "extend", "checkpoint_now", "stop", "delete"})
# Columns from which the plot and the tabs sit side by side instead of stacked.
WIDE_COLUMNS = 150


# ------------------------------------------------------------------------------ messages

class RunFilesRead(Message):
    """The follower's news for the screen itself (state, config, checkpoint rows); new points go
    to the plot and new events to the log directly."""

    def __init__(self, update: RunUpdate) -> None:
        super().__init__()
        self.update = update


# ------------------------------------------------------------------------------ the screen

class RunViewScreen(SteadyFrames, Screen):
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
        self._bindings_key: tuple[str, str] | None = None

    # --- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        with Vertical(id="run-body"):
            yield LossPlot(id="loss-plot")
            with TabbedContent(id="run-tabs", initial="tab-checkpoints"):
                with TabPane("Checkpoints", id="tab-checkpoints"):
                    yield CheckpointTable(self.run_dir, foreign=self.foreign, id="checkpoints")
                with TabPane("Events", id="tab-events"):
                    yield EventsLog(id="events")
                with TabPane("Config", id="tab-config"):
                    yield ConfigView(id="config")
                with TabPane("System", id="tab-system"):
                    yield SystemStats(id="system")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.run_dir)
        follower = self._follower
        follower.root = getattr(self.app, "root", None)
        follower.set_overlays(self._selected_overlays())
        plot, events = self.query_one(LossPlot), self.query_one(EventsLog)

        # On the follower's thread (post_message is thread-safe): new points go to the plot, new
        # events to the log, the rest (state, config, checkpoint rows) to this screen.
        def deliver(update: RunUpdate) -> None:
            if update.plot is not None:
                plot.post_message(LossPlot.Points(update.plot))
                update.plot = None
            if update.new_events or update.events_reset:
                events.post_message(EventsLog.Read(update.new_events, update.events_reset))
                update.new_events, update.events_reset = [], False
            if update != RunUpdate():
                self.post_message(RunFilesRead(update))

        follower.on_update = deliver
        follower.on_error = lambda exc: self.app.notify(f"reading {self.run_dir}: {exc}", severity="error",
                                                         markup=False)
        followers = getattr(self.app, "followers", None)
        if followers is not None:
            followers.add(follower)
        follower.start()
        self.query_one(CheckpointTable).focus()

    def on_unmount(self) -> None:
        followers = getattr(self.app, "followers", None)
        if followers is not None:
            followers.remove(self._follower)
        self._follower.stop()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE_COLUMNS, "-wide")

    def on_screen_resume(self) -> None:
        # Back from a dialog or from the runs list with a new selection for the overlay.
        self._follower.set_overlays(self._selected_overlays())

    def _selected_overlays(self) -> tuple[Path, ...]:
        selected: Iterable[Any] = getattr(self.app, "selected_runs", None) or ()
        return tuple(Path(p) for p in selected if Path(p) != self.run_dir)

    def _now(self) -> float:
        now: Callable[[], float] | None = getattr(self.app, "now", None)
        return now() if callable(now) else time.time()

    @property
    def engine_host(self) -> Any:
        return self.app.engine_host  # type: ignore[attr-defined]

    # --- what the follower read -----------------------------------------------------------
    def wake(self) -> None:
        """Read the run's files now (the user just acted on the run)."""
        self._follower.wake()

    @on(EngineFinished)
    def _engine_finished(self, message: EngineFinished) -> None:
        # The app forwards the engine's end to the active screen; stop() keeps the copy from
        # bubbling back to it. The files may say nothing new after it, yet the run no longer
        # trains here: the state shown (and r/R) change now.
        message.stop()
        if Path(message.run_dir) == self.run_dir:
            self.state = self._shown_state(self.summary)
            self.refresh_bindings()

    @on(RunFilesRead)
    def _apply_update(self, message: RunFilesRead) -> None:
        update = message.update
        if update.config is not None:
            self.run_cfg = update.config
        if update.config_text is not None:
            self.query_one(ConfigView).show_text(update.config_text)
        if update.summary is not None:
            self.summary = update.summary
            self.state = self._shown_state(update.summary)
            self.query_one(RunHeader).show(update.summary)
        if update.note is not None:
            self.query_one(EventsLog).add_notes(update.note.splitlines())
            self.notify(update.note, severity="warning", markup=False)
        if update.checkpoints is not None:
            table = self.query_one(CheckpointTable)
            table.show(update.checkpoints, self._now())
            self._sync_selection()
            table.verify_rows()

    @property
    def foreign(self) -> bool:
        return self._follower.foreign

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A file-reading worker that failed says so instead of leaving a badge or a plot stale."""
        if event.state == WorkerState.ERROR:
            self.notify(f"{event.worker.name}: {event.worker.error}", severity="error", markup=False)

    @on(CheckpointTable.Verified)
    def _checkpoint_verified(self, message: CheckpointTable.Verified) -> None:
        if message.level == "deep":
            info = message.info
            severity = "information" if info.status in USABLE_STATUSES else "error"
            reason = f": {info.reason}" if info.reason else ""
            self.notify(f"{info.name}: {info.status} (deep){reason}", severity=severity, markup=False)
        self._sync_selection()

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
        return self.engine_host.shown_state(self.run_dir, self.state) in LIVE_STATES

    def _shown_state(self, summary: RunSummary | None) -> str:
        return self.engine_host.shown_state(self.run_dir, summary.state if summary is not None else None)

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
        if selected is not None:
            name = self.summary.name if self.summary else self.run_dir.name
            ask_branch(self, selected, name, RunViewScreen)

    def action_checkpoint_now(self) -> None:
        self._after_command(self.engine_host.checkpoint_now(self.run_dir))

    def action_stop(self) -> None:
        self._after_command(self.engine_host.stop(self.run_dir))

    def action_verify(self) -> None:
        selected = self.selected_checkpoint
        if selected is None or selected.status == "missing":
            return
        self.notify(f"deep-verifying {selected.name}…", markup=False)
        self.query_one(CheckpointTable).verify_deep(selected)

    def action_delete(self) -> None:
        selected = self.selected_checkpoint
        if selected is None or selected.status == "missing":
            return
        if self._training():
            self.notify("refusing to delete a checkpoint while the run trains: the engine owns its "
                        "manifest; stop it first (x)", severity="warning", markup=False)
            return
        ask_delete(self, self.run_dir, selected, self.wake)

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
