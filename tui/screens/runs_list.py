"""The first screen: every run under the root, or a welcome with the built-in configs when empty.

Rows are built off the UI thread (tui.run_rows in thread workers) and arrive as RunRowsLoaded.
Changes from the watcher and the in-process engines mark runs dirty; a short timer reloads just
those runs, so a run logging 100 lines a second costs a few row updates a second, not a relist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from runctl.runs.layout import DEFAULT_DEPTH, LIVE_STATES, RUN_YAML
from runctl.runs.store import RunStore
from runctl.tui.frame_timer import SteadyFrames
from runctl.tui.gc_policy import release_collections
from runctl.tui.messages import RunRowsLoaded
from runctl.tui.run_rows import QUICK_ROWS, RunRow, load_row, load_rows
from runctl.tui.widgets.footer_adapter import CoalescedFooter
from runctl.tui.widgets.runs_table import RunsTable
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

if TYPE_CHECKING:
    from runctl.tui.app import RunctlApp

# States a stopped engine leaves that `r` continues from.
RESUMABLE = frozenset({"stopped", "interrupted", "crashed"})
# Keys that write into a run's folder: never offered on a run another tool wrote.
WRITING_ACTIONS = frozenset({"start", "stop", "resume", "extend", "checkpoint"})
# Dirty runs are reloaded at most this often (seconds).
ROW_REFRESH_INTERVAL = 0.25


class Welcome(Vertical):
    """Shown on an empty root: the built-in configs, Enter trains the highlighted one here."""

    def __init__(self, root: Path) -> None:
        super().__init__(id="welcome")
        self.root = root

    def compose(self) -> ComposeResult:
        from runctl.engine.config import builtin_configs

        yield Static(Text.assemble(("No runs yet in ", ""), (str(self.root), "bold")), id="welcome-title")
        yield Static(
            "Pick a built-in config and press [b]Enter[/b] to train it right here "
            "(real data, CPU is fine). [b]n[/b]: your own YAML, a name, --set overrides.",
            id="welcome-hint",
        )
        options = [
            Option(Text.assemble((name, "bold"), "  ", (config.description, "dim")), id=name)
            for name, config in builtin_configs().items()
        ]
        yield OptionList(*options, id="welcome-configs")
        yield Static(
            f"From a shell: runctl train digits_mlp --root {self.root}   ·   ? all keys   ·   q quit",
            id="welcome-cli",
        )

    def on_mount(self) -> None:
        self.query_one("#welcome-configs", OptionList).focus()


class RunsListScreen(SteadyFrames, Screen):
    BINDINGS = [
        Binding("n", "new_run", "New", id="runctl.new",
                tooltip="New run from a built-in config or a YAML path"),
        Binding("s", "start", "Start", id="runctl.start", tooltip="Start a run that was never trained"),
        Binding("x", "stop", "Stop", id="runctl.stop", tooltip="Graceful stop: checkpoint, then stop"),
        Binding("r", "resume", "Resume", id="runctl.resume",
                tooltip="Resume from the newest valid checkpoint (says which, and what it skipped)"),
        Binding("e", "extend", "Extend", id="runctl.extend", tooltip="Raise max_steps and continue"),
        Binding("c", "checkpoint", "Ckpt", id="runctl.checkpoint",
                tooltip="Write a checkpoint now and keep training"),
        Binding("enter", "open_run", "Open", id="runctl.open", tooltip="Open the run view"),
        Binding("slash", "filter", "Filter", id="runctl.filter", tooltip="Filter runs by name"),
        Binding("space", "select", "Select", id="runctl.select",
                tooltip="Select the run for the plot overlay"),
        Binding("o", "sort", "Sort", id="runctl.sort",
                tooltip="Sort by the next column (or click a header; again flips)"),
        Binding("escape", "clear_filter", "Clear filter", id="runctl.back", show=False,
                tooltip="Clear the filter"),
    ]

    def __init__(self) -> None:
        super().__init__(id="runs-list")
        self._dirty: set[Path] = set()
        self._loaded = False
        self._published_keys: tuple[Any, ...] | None = None

    @property
    def rapp(self) -> RunctlApp:
        return self.app  # type: ignore[return-value]

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static(self._status_text(), id="status-line")
        yield RunsTable(self.rapp.selected_runs, now=self.rapp.now, id="runs-table")
        # The Welcome is mounted only on an empty root (it imports the engine's config module).
        yield Input(placeholder="filter by name (Enter: keep, Esc: clear)", id="filter")
        yield CoalescedFooter(compact=True)

    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        # Every publish rebuilds the footer's widgets: note what it was built from (see
        # _refresh_keys). Immediate: recorded at the publish, whoever publishes.
        self.bindings_updated_signal.subscribe(self, self._keys_published, immediate=True)
        self.table.focus()
        self.set_interval(ROW_REFRESH_INTERVAL, self._flush_dirty)
        if self.rapp.live_clock:
            self.set_interval(5.0, self.table.refresh_clock_columns)
        self.reload_all()

    # ------------------------------------------------------------ data
    @work(thread=True, exclusive=True, group="runs-all", exit_on_error=False)
    def reload_all(self) -> None:
        root = self.rapp.root
        depth = getattr(self.rapp, "depth", DEFAULT_DEPTH)
        if self._loaded:
            rows = load_rows(root, depth=depth)
        else:
            # Reading 1,000 runs takes a while: paint the newest screenful first.
            def paint_newest(head: list[RunRow]) -> None:
                if head:
                    self.post_message(RunRowsLoaded(head, complete=False))

            # Read by the child `runctl` forked at its start (tui.early_listing), if it did; here
            # when it did not or its child ended short.
            early = self.rapp.take_early_listing()
            rows = early.read(on_newest=paint_newest) if early is not None else None
            if rows is None:
                rows = load_rows(root, newest=QUICK_ROWS, on_newest=paint_newest, depth=depth)
        self.post_message(RunRowsLoaded(rows, complete=True))

    def mark_dirty(self, run_dirs: set[Path]) -> None:
        """These runs changed on disk; their rows are reloaded on the next refresh tick."""
        self._dirty |= run_dirs

    def _flush_dirty(self) -> None:
        # Under an opaque screen (a run view) the list is not seen, yet Textual repaints the
        # regions of the screen below on the top one: rows reloaded there would repaint the run
        # view several times a second while a run trains. They wait for on_screen_resume.
        if self.app.screen is not self and self.app.screen.styles.background.a >= 1:
            return
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            self._reload_some(sorted(dirty))

    @work(thread=True, group="runs-some", exit_on_error=False)
    def _reload_some(self, run_dirs: list[Path]) -> None:
        rows: list[RunRow] = []
        removed: list[Path] = []
        for run_dir in run_dirs:
            row = load_row(run_dir, self.rapp.root)
            if row is None:
                removed.append(run_dir)
            else:
                rows.append(row)
        self.post_message(RunRowsLoaded(rows, complete=False, removed=removed))

    def catch_up_after_watch_start(self) -> None:
        """The watcher now runs; runs added or removed before it did are found by one cheap pass
        over the root's folders (after the first full listing, if that is still going)."""
        self._catch_up_pending = True
        if self._loaded:
            self._catch_up(self.table.known_paths())

    @work(thread=True, group="runs-catch-up", exit_on_error=False)
    def _catch_up(self, known: set[str]) -> None:
        self._catch_up_pending = False
        root = self.rapp.root
        try:
            on_disk = {entry.path for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")}
        except OSError:
            return
        # Runs deeper down (foreign ones) are not the watcher's: compare the root's children only.
        known = {p for p in known if Path(p).parent == root}
        changed = {Path(p) for p in on_disk ^ known}
        if changed:
            self.app.call_from_thread(self.mark_dirty, changed)

    def _start_watching_after_paint(self) -> None:
        # The refresh that follows set_rows lays out the new rows; their paint is the next one.
        self.table.call_after_refresh(self._after_first_paint)

    def _after_first_paint(self) -> None:
        release_collections()  # held since the app started (tui.gc_policy)
        self.rapp.start_watching()

    def on_run_rows_loaded(self, message: RunRowsLoaded) -> None:
        if message.complete:
            # The first full listing replaces the newest screenful: a cursor the user has not
            # moved off the first row stays at the top, not on that run wherever it now sorts.
            follow = self._loaded or self.table.cursor_row != 0
            self._loaded = True
            self.table.set_rows(message.rows, follow_cursor=follow)
            # After the table's paint: the watcher's first scan of a big root would compete with
            # it for the GIL. Runs that change before it runs are caught up when it starts.
            self.table.call_after_refresh(self._start_watching_after_paint)
            if getattr(self, "_catch_up_pending", False):
                self._catch_up(self.table.known_paths())
        else:
            self.table.remove_runs(message.removed)
            self.table.upsert_rows(message.rows)
        self._show_welcome_if_empty()
        self._update_status()
        self._refresh_keys()

    def _show_welcome_if_empty(self) -> None:
        empty = self._loaded and self.table.total_runs == 0
        welcomes = self.query(Welcome)
        if not welcomes:
            if empty:
                self.table.display = False
                self.mount(Welcome(self.rapp.root), after=self.table)
            return
        welcome = welcomes.first()
        if welcome.display != empty:
            welcome.display = empty
            self.table.display = not empty
            if empty:
                self.query_one("#welcome-configs", OptionList).focus()
            else:
                self.table.focus()

    def _status_text(self) -> Text:
        app = self.rapp
        table = self.query(RunsTable).first() if self.is_mounted else None
        parts: list[tuple[str, str] | str] = [("runctl ", "bold"), (str(app.root), "")]
        if table is not None:
            shown = table.row_count
            total = table.total_runs
            noun = "run" if total == 1 else "runs"
            parts.append(f"  ·  {total} {noun}" if shown == total else f"  ·  {shown} of {total} {noun}")
            training = len(app.engine_host.training_runs())
            if training:
                parts.append((f"  ·  {training} training here", "green"))
            if table.filter_text:
                parts.append((f"  ·  filter: {table.filter_text}", "yellow"))
            arrow = "▼" if table.sort_reverse else "▲"
            parts.append((f"  ·  sort: {table.sort_column} {arrow}", "dim"))
            if app.selected_runs:
                parts.append((f"  ·  {len(app.selected_runs)} selected for overlay", "cyan"))
        return Text.assemble(*parts)

    def _update_status(self) -> None:
        self.query_one("#status-line", Static).update(self._status_text())

    # ------------------------------------------------------------ enabling keys
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        run = self.table.current_run if self.is_mounted else None
        host = self.rapp.engine_host
        if action in WRITING_ACTIONS and run is not None and run.foreign:
            return None  # another tool's run: runctl never writes into its folder
        state = host.shown_state(run.path, run.state) if run is not None else None
        if action in {"stop", "checkpoint"}:
            return True if state in LIVE_STATES else None
        if action == "resume":
            return True if state in RESUMABLE else None
        if action == "start":
            never_trained = run is not None and not run.step and state not in {*LIVE_STATES, "finished"}
            return True if never_trained else None
        if action in {"extend", "open_run", "select"}:
            return True if run is not None else None
        return True

    def _refresh_keys(self) -> None:
        """Refresh the footer only if a key's enabled state (or the focus) changed: each refresh
        rebuilds the footer's widgets, and rows load and the cursor moves far more often."""
        if self._key_state() != self._published_keys:
            self.refresh_bindings()

    def _keys_published(self, screen: Screen) -> None:
        self._published_keys = self._key_state()

    def _key_state(self) -> tuple[Any, ...]:
        return (self.focused, *(self.check_action(binding.action, ()) for binding in _SCREEN_BINDINGS))

    @on(RunsTable.RowHighlighted)
    def _on_cursor_moved(self) -> None:
        self._refresh_keys()

    @on(RunsTable.RowSelected)
    def _on_row_selected(self) -> None:
        self.action_open_run()

    # ------------------------------------------------------------ actions
    def action_new_run(self) -> None:
        from runctl.tui.screens.new_run import NewRunScreen

        self.app.push_screen(NewRunScreen(), self._opened_new_run)

    def _opened_new_run(self, run_dir: Path | None) -> None:
        if run_dir is not None:
            self.mark_dirty({run_dir})
            self.rapp.open_run(run_dir)

    def action_start(self) -> None:
        run = self.table.current_run
        if run is not None:
            self._acknowledge(self.rapp.engine_host.start(run.path))

    def action_stop(self) -> None:
        run = self.table.current_run
        if run is not None:
            self._acknowledge(self.rapp.engine_host.stop(run.path))

    def action_resume(self) -> None:
        run = self.table.current_run
        if run is not None:
            self._acknowledge(self.rapp.engine_host.resume(run.path))

    def action_checkpoint(self) -> None:
        run = self.table.current_run
        if run is not None:
            self._acknowledge(self.rapp.engine_host.checkpoint_now(run.path))

    def action_extend(self) -> None:
        run = self.table.current_run
        if run is not None:
            self._read_config_then_extend(run)

    @work(thread=True, exclusive=True, group="extend", exit_on_error=False)
    def _read_config_then_extend(self, run: RunRow) -> None:
        cfg, problem = RunStore(run.path).read_config()
        if problem is not None:
            self.app.notify(problem, severity="error", markup=False)
            return
        if not isinstance(cfg.get("max_steps"), int):
            self.app.notify(f"{run.path / RUN_YAML}: no max_steps", severity="error", markup=False)
            return
        self.app.call_from_thread(self._ask_extend, run, cfg)

    def _ask_extend(self, run: RunRow, cfg: dict[str, Any]) -> None:
        from runctl.tui.screens.extend_dialog import ExtendDialog

        def extend(max_steps: int | None) -> None:
            if max_steps is not None:
                self._acknowledge(self.rapp.engine_host.extend(run.path, max_steps))
                self.mark_dirty({run.path})

        self.app.push_screen(ExtendDialog(run.name, cfg, run.step or 0), extend)

    def action_open_run(self) -> None:
        run = self.table.current_run
        if run is not None:
            self.rapp.open_run(run.path)

    def action_select(self) -> None:
        if self.table.toggle_selected() is not None:
            self._update_status()

    def action_sort(self) -> None:
        self.table.cycle_sort()
        self._update_status()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        # Focus now, not after the queued keys: "/name" typed fast must land in the box.
        self.set_focus(box)

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display or self.table.filter_text:
            box.value = ""
            box.display = False
            self.table.set_filter("")
            self.set_focus(self.table)
            self._update_status()

    def _acknowledge(self, message: str | None) -> None:
        if message:
            self.notify(message, markup=False)
        self._update_status()
        self.refresh_bindings()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)
        self._update_status()
        self.refresh_bindings()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.set_focus(self.table)
        self.refresh_bindings()

    @on(OptionList.OptionSelected, "#welcome-configs")
    def _start_builtin(self, event: OptionList.OptionSelected) -> None:
        config = event.option.id
        if config is None:
            return
        run_dir = self.rapp.engine_host.start_new(config, None, [])
        if run_dir is not None:
            self.mark_dirty({run_dir})
            self.rapp.open_run(run_dir)

    # ------------------------------------------------------------ news from the app
    def on_screen_resume(self) -> None:
        # Back from a run view or a dialog: the overlay selection or states may have changed,
        # and runs that changed while the list was covered are reloaded now.
        self._flush_dirty()
        self.table.upsert_rows([])
        self._update_status()
        self._refresh_keys()

    def engine_changed(self, run_dir: Path) -> None:
        self.mark_dirty({run_dir})
        self._update_status()
        self.refresh_bindings()


_SCREEN_BINDINGS = [binding for binding in RunsListScreen.BINDINGS if isinstance(binding, Binding)]
