"""The runctl Textual app: screens, the in-process engines, the watcher bridge, keys, signals.

`make_app(...)` builds it for the CLI (`runctl [ROOT]`) and for the tests (watch=False and a fixed
`now`, so nothing depends on clocks or file-system events).
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

from runctl.runs.errors import RunctlError
from runctl.runs.follower_hub import FollowerHub
from runctl.runs.layout import DEFAULT_DEPTH
from runctl.tui.alerts import AlertRaised, AlertSettings
from runctl.tui.early_listing import EarlyListing
from runctl.tui.engine_host import EngineHost
from runctl.tui.frame_timer import answer_input
from runctl.tui.gc_policy import hold_collections, release_collections
from runctl.tui.keymap import default_keymap_path, load_keymap, unknown_ids
from runctl.tui.messages import EngineEvent, EngineFinished, RunsChanged, WatchStarted
from runctl.tui.palette import ScreenActionsProvider
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.watch_bridge import WatchBridge, changed_run_dirs
from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.worker import get_current_worker

# Where the runs the UI trains run (`runctl --engine`): a thread of this process, or a child process each.
ENGINES = ("thread", "process")
# Input whose frame is painted at once (tui.frame_timer): not mouse moves, which come in floods.
ANSWERED_INPUT = (events.Key, events.MouseDown, events.MouseUp, events.MouseScrollDown, events.MouseScrollUp)
# How long a hang-up (SIGHUP) or SIGTERM waits for the engines' interrupt checkpoints.
SIGNAL_STOP_TIMEOUT = 120.0
# How long `q` -> stop waits for the engines before quitting anyway.
QUIT_STOP_TIMEOUT = 300.0


class RunctlApp(App[int]):
    CSS_PATH = "styles/app.tcss"
    TITLE = "runctl"
    COMMANDS: ClassVar[set[Any]] = {ScreenActionsProvider, *App.COMMANDS}
    BINDINGS = [
        Binding("question_mark", "help", "Help", id="runctl.help", tooltip="Every key of this screen"),
        Binding("q", "quit_app", "Quit", id="runctl.quit",
                tooltip="Quit (asks what to do with runs training here)"),
        Binding("ctrl+p", "command_palette", "Palette", id="runctl.palette", show=False, priority=True,
                tooltip="Command palette: every action"),
    ]

    def __init__(
        self,
        root: Path,
        *,
        poll: bool = False,
        watch: bool = True,
        now: Callable[[], float] | None = None,
        keymap_path: Path | None = None,
        depth: int = DEFAULT_DEPTH,
        alerts: AlertSettings | None = None,
        engine: str = "thread",
        early_listing: EarlyListing | None = None,
    ) -> None:
        super().__init__()
        # The first listing, already being read by a child process (runctl's start forks it).
        self._early_listing = early_listing
        # Until the runs list has painted its first full listing (or the app ends before that).
        hold_collections()
        self.alert_settings = alerts
        self.root = Path(root)
        self.depth = depth  # how many folders below root runs are looked for
        self.now: Callable[[], float] = now or time.time
        # A fixed clock (tests, snapshots) means no clock-driven redraws.
        self.live_clock = now is None
        self.selected_runs: set[Path] = set()
        self.engine_host = make_engine_host(self, self.root, engine)
        self.keymap_path = keymap_path or default_keymap_path()
        # The run views' followers; the watcher wakes them when their runs' files change.
        self.followers = FollowerHub()
        self._bridge = WatchBridge(self, self.root, self.followers, poll=poll, depth=depth) if watch else None
        self.watch_ready = threading.Event()  # set once the watcher runs (or failed to)
        self._watch_requested = False
        # Whether the watch worker began starting the watcher, and whether the app has closed: a
        # worker cancelled before it ran never sets watch_ready, so the exit waits only for one
        # that began; one that begins after the exit starts nothing.
        self._watch_lock = threading.Lock()
        self._watch_began = False
        self._watch_closed = False
        self._alerts_started = False
        self._previous_handlers: dict[int, Any] = {}
        self._quitting = False

    # ------------------------------------------------------------ lifecycle
    def on_mount(self) -> None:
        self._apply_keymap()
        self.push_screen(RunsListScreen())
        self._install_signal_handlers()

    # ------------------------------------------------------------ alerts
    @work(thread=True, exclusive=True, exit_on_error=False, group="alerts")
    def _scan_alerts(self) -> None:
        from runctl.runs.alerts import AlertScanner
        from runctl.tui.alerts import SCAN_SECONDS

        worker = get_current_worker()
        scanner = AlertScanner(self.root, depth=self.depth)
        scanner.scan()  # what is in the files already is history
        # Also ends with the app: a worker it never cancelled would hold its exit forever.
        while self.is_running and not worker.cancelled_event.wait(SCAN_SECONDS):
            for alert in scanner.scan():
                self.post_message(AlertRaised(alert))

    def on_alert_raised(self, message: AlertRaised) -> None:
        from runctl.tui.alerts import severity, terminal_sequence

        settings = self.alert_settings
        if settings is None:
            return
        if settings.toast:
            self.notify(message.alert.message, title=f"{message.alert.run}: {message.alert.kind}",
                        severity=severity(message.alert), markup=False, timeout=15)
        sequence = terminal_sequence(message.alert, settings)
        # Textual has no public call for raw terminal output; App.bell writes through the driver too.
        if sequence and not self.is_headless and self._driver is not None:
            self._driver.write(sequence)

    def start_watching(self) -> None:
        """Called by the runs list once its first full listing is painted: the watcher's and the
        alert scanner's own first walks of a big root would otherwise compete with that listing
        (first paint). Alerts are history until then anyway (a scan's first pass only learns
        where each events.jsonl ends).

        Nothing starts once the app is closing (a `q` pressed as the listing paints): the app has
        cancelled its workers by then, and a watcher or scanner started after that would keep the
        process from exiting."""
        if not self.is_running:
            return
        if self.alert_settings is not None and self.alert_settings.enabled and not self._alerts_started:
            self._alerts_started = True
            self._scan_alerts()
        if self._bridge is not None and not self._watch_requested:
            self._watch_requested = True
            self._start_watching()

    @work(thread=True, exit_on_error=False, group="watch")
    def _start_watching(self) -> None:
        """The watcher's first scan of a big root takes a while: not on the UI thread (first paint)."""
        assert self._bridge is not None
        with self._watch_lock:
            if self._watch_closed:
                self.watch_ready.set()
                return
            self._watch_began = True
        try:
            self._bridge.start()
        except (OSError, RunctlError) as err:
            self.notify(f"not watching {self.root} for changes: {err}", severity="warning", markup=False)
        else:
            if self._bridge.fallback_reason:
                self.notify(f"watching {self.root} by polling: {self._bridge.fallback_reason}",
                            severity="warning", markup=False)
        finally:
            self.watch_ready.set()
            self.post_message(WatchStarted())

    def on_watch_started(self, message: WatchStarted) -> None:
        runs = self.runs_list
        if runs is not None:
            runs.catch_up_after_watch_start()

    def take_early_listing(self) -> EarlyListing | None:
        """The listing forked at start, once (the first full load takes it; later loads read)."""
        early, self._early_listing = self._early_listing, None
        return early

    def on_unmount(self) -> None:
        release_collections()
        early = self.take_early_listing()
        if early is not None:
            early.close()
        if self._bridge is not None:
            # A stop that overtook the start would leave the observer's threads running.
            with self._watch_lock:
                self._watch_closed = True
                began = self._watch_began
            if began:
                self.watch_ready.wait(timeout=10)
            self._bridge.stop()
        # Every normal way out stops the engines first; this is the net for the others (an error
        # in the UI): the training threads would otherwise keep the process alive, headless.
        if self.engine_host.training_runs():
            self.engine_host.interrupt_all("UI exit")
            self.engine_host.wait_all(SIGNAL_STOP_TIMEOUT)
        self._restore_signal_handlers()

    def _apply_keymap(self) -> None:
        try:
            keymap = load_keymap(self.keymap_path)
        except RunctlError as err:
            self.notify(f"{err} (default keys in use)", severity="error", markup=False, timeout=10)
            return
        if not keymap:
            return
        unknown = unknown_ids(keymap, self.known_binding_ids())
        if unknown:
            self.notify(f"{self.keymap_path}: unknown binding id {', '.join(unknown)} (see ? for ids)",
                        severity="warning", markup=False, timeout=10)
        self.set_keymap(keymap)

    def known_binding_ids(self) -> set[str]:
        from runctl.tui.screens.help import HelpScreen
        from runctl.tui.screens.new_run import NewRunScreen
        from runctl.tui.screens.quit_confirm import QuitConfirmScreen

        classes: list[Any] = [type(self), RunsListScreen, NewRunScreen, HelpScreen, QuitConfirmScreen]
        for module, name in (
            ("runctl.tui.screens.run_view", "RunViewScreen"),
            ("runctl.tui.screens.extend_dialog", "ExtendDialog"),
            ("runctl.tui.screens.branch_dialog", "BranchDialog"),
            ("runctl.tui.screens.confirm_delete", "ConfirmDeleteScreen"),
        ):
            try:
                classes.append(getattr(importlib.import_module(module), name))
            except (ImportError, AttributeError):
                continue
        ids: set[str] = set()
        for cls in classes:
            for binding in getattr(cls, "BINDINGS", []):
                if isinstance(binding, Binding) and binding.id:
                    ids.add(binding.id)
        return ids

    # ------------------------------------------------------------ screens
    @property
    def runs_list(self) -> RunsListScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, RunsListScreen):
                return screen
        return None

    def open_run(self, run_dir: Path) -> None:
        try:
            from runctl.tui.screens.run_view import RunViewScreen
        except ImportError as err:
            self.notify(f"run view unavailable: {err}", severity="error", markup=False)
            return
        self.push_screen(RunViewScreen(Path(run_dir)))

    def action_help(self) -> None:
        from runctl.tui.screens.help import HelpScreen, key_rows

        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(key_rows(self.screen), self.keymap_path))

    # ------------------------------------------------------------ news from threads
    async def on_event(self, event: events.Event) -> None:
        # A key or a click reaches the app before any widget (and a key again, on its way back
        # for the app's bindings): the frame that answers it is then not held for the frame rate
        # behind a frame the live view just painted.
        if isinstance(event, ANSWERED_INPUT) and (isinstance(event, events.Key) or not event.is_forwarded):
            answer_input(self.screen)
        await super().on_event(event)

    def on_runs_changed(self, message: RunsChanged) -> None:
        runs = self.runs_list
        if runs is not None:
            runs.mark_dirty(changed_run_dirs(message.changes))

    def on_engine_event(self, message: EngineEvent) -> None:
        runs = self.runs_list
        if runs is not None:
            runs.mark_dirty({message.run_dir})

    def on_engine_finished(self, message: EngineFinished) -> None:
        runs = self.runs_list
        if runs is not None:
            runs.engine_changed(message.run_dir)
        if message.error:
            self.notify(f"{message.run_dir.name}: {message.error}", severity="error", markup=False, timeout=10)
        self._forward(EngineFinished(message.run_dir, message.error))
        if self._screen_stack:  # an engine can finish while the app shuts down
            self.refresh_bindings()

    def _forward(self, message: Any) -> None:
        """Screens other than the runs list (the run view) get a copy of the engine's end: what a
        run shows as its state depends on whether it trains here."""
        if not self._screen_stack:  # news from an engine thread arriving while the app shuts down
            return
        screen = self.screen
        if not isinstance(screen, RunsListScreen):
            # Stopped, so the copy does not bubble back up to the app and get forwarded again.
            message.stop()
            screen.post_message(message)

    # ------------------------------------------------------------ quitting
    async def action_quit(self) -> None:
        """Textual's own quit (ctrl+q) asks about training runs too."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        if self._quitting:
            return
        training = self.engine_host.training_runs()
        if not training:
            self.exit(0)
            return
        from runctl.tui.screens.quit_confirm import QuitConfirmScreen

        self.push_screen(QuitConfirmScreen(training), self._quit_chosen)

    def _quit_chosen(self, choice: str | None) -> None:
        if choice is None:
            return
        self._quitting = True
        if choice == "detach":
            self.notify("checkpointing, then handing the runs to a background process…", markup=False)
            self._detach_and_exit()
        else:
            self.notify("stopping with a checkpoint…", markup=False)
            self.engine_host.stop_all()
            self._wait_and_exit()

    @work(thread=True, exit_on_error=False, group="quit")
    def _wait_and_exit(self) -> None:
        self.engine_host.wait_all(QUIT_STOP_TIMEOUT)
        self.call_from_thread(self.exit, 0)

    @work(thread=True, exit_on_error=False, group="quit")
    def _detach_and_exit(self) -> None:
        self.engine_host.detach_all(QUIT_STOP_TIMEOUT)
        self.call_from_thread(self.exit, 0)

    # ------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGHUP, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, self._on_terminate_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_terminate_signal(self, signum: int, frame: FrameType | None) -> None:
        """SSH dropped (SIGHUP) or asked to end (SIGTERM): interrupt checkpoints first, then exit.

        Runs on the main thread and blocks it while the engines (which never need the UI thread)
        finish their step and write the checkpoint. The terminal may be gone, so if a normal exit
        does not complete shortly after, the process ends without restoring it.
        """
        name = signal.Signals(signum).name
        self.engine_host.interrupt_all(name)
        self.engine_host.wait_all(SIGNAL_STOP_TIMEOUT)
        self._restore_signal_handlers()
        code = 128 + signum
        watchdog = threading.Timer(5.0, os._exit, (code,))
        watchdog.daemon = True
        watchdog.start()
        self.exit(code)


def make_engine_host(app: App[Any], root: Path, engine: str) -> EngineHost:
    """The host of the runs `app` trains: "thread" (in this process) or "process" (a child each)."""
    if engine == "process":
        from runctl.tui.engine_process import ProcessEngineHost

        return ProcessEngineHost(app, root)
    if engine != "thread":
        raise RunctlError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    return EngineHost(app, root)


def make_app(
    root: Path,
    *,
    poll: bool = False,
    watch: bool = True,
    now: Callable[[], float] | None = None,
    keymap_path: Path | None = None,
    depth: int = DEFAULT_DEPTH,
    alerts: AlertSettings | None = None,
    engine: str = "thread",
    early_listing: EarlyListing | None = None,
) -> RunctlApp:
    return RunctlApp(Path(root), poll=poll, watch=watch, now=now, keymap_path=keymap_path, depth=depth,
                     alerts=alerts, engine=engine, early_listing=early_listing)
