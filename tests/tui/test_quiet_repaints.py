"""While a run trains, the screen the user looks at repaints only what changed: no layout pass of
the whole run view for a new step in its header, no rows reloaded in the runs list it covers (Textual
repaints a covered screen's changed regions on the screen above it), no sampling by the system stats
in a closed tab. Each of these made a key press wait behind a full repaint several times a second
(bench/bench_ui.py, key -> screen)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from runctl.runs.model import RunSummary
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.widgets.run_header import RunHeader
from runctl.tui.widgets.system_stats import SystemStats
from support.listing import FIXED_NOW, watched_app_with_one_run
from support.ui import runs_list_loaded, select_run
from support.waiting import pilot_wait_for
from textual.app import App, ComposeResult

SIZE = (120, 34)


class HeaderApp(App):
    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")


def summary(name: str, step: int, *, error: str | None = None) -> RunSummary:
    return RunSummary(path=Path("/runs") / name, run_id=name, name=name, layout="runctl", state="running",
                      step=step, max_steps=10**7, last_loss=1.0 / step, error=error)


def count_layouts(app: App) -> list[int]:
    """Counts the screen's layout passes from now on (one item per pass)."""
    passes: list[int] = []
    screen = app.screen
    refresh_layout = screen._refresh_layout

    def counted(*args, **kwargs):
        passes.append(1)
        return refresh_layout(*args, **kwargs)

    screen._refresh_layout = counted
    return passes


async def test_the_header_lays_the_screen_out_only_when_it_must_grow_or_its_lines_change() -> None:
    app = HeaderApp()
    async with app.run_test(size=(60, 10)) as pilot:
        header = app.query_one(RunHeader)
        header.show(summary("short", 1))
        await pilot.pause()
        assert header.size.height == 1
        passes = count_layouts(app)
        for step in range(2, 12):
            header.show(summary("short", step))
            await pilot.pause()
        assert not passes, "a new step in a one-row header laid the screen out"
        assert "step 11/" in str(header.render())

        # A name long enough to wrap at 60 columns: the header grows at once...
        long_name = "a-run-with-a-rather-long-name-that-takes-most-of-a-line"
        header.show(summary(long_name, 1000))
        await pilot.pause()
        assert passes and header.size.height == 2
        # ...and stays two rows while only the wrapping changes (no jumping plot below it).
        passes.clear()
        header.show(summary("short", 1001))
        await pilot.pause()
        assert not passes and header.size.height == 2
        # A layout pass for another reason shrinks it to its text; long text then grows it again.
        header.refresh(layout=True)
        await pilot.pause()
        assert header.size.height == 1
        header.show(summary(long_name, 1002))
        await pilot.pause()
        assert header.size.height == 2
        # A line of its own (the error) lays out again.
        header.show(summary("short", 1003, error="crashed: out of memory"))
        await pilot.pause()
        assert passes and header.size.height == 2
        assert "out of memory" in str(header.render())


async def test_the_runs_list_under_a_run_view_reloads_its_rows_when_it_is_shown_again(tmp_path: Path) -> None:
    root, app = watched_app_with_one_run(tmp_path, "live")
    async with app.run_test(size=SIZE) as pilot:
        await runs_list_loaded(pilot)
        await pilot_wait_for(pilot, app.watch_ready.is_set, "the watcher to start")
        runs_list = app.screen
        assert isinstance(runs_list, RunsListScreen)
        table = await select_run(pilot, root / "live")
        await pilot.press("enter")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, RunViewScreen), "the run view")

        reloads: list[int] = []
        reload_some = runs_list._reload_some
        runs_list._reload_some = lambda run_dirs: (reloads.append(len(run_dirs)), reload_some(run_dirs))
        with open(root / "live" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 30, "time": FIXED_NOW, "train/loss": 0.0123}) + "\n")
        # The watcher marks the run; the list's refresh ticks pass without reloading it.
        await pilot_wait_for(pilot, lambda: root / "live" in runs_list._dirty, "the watcher to mark the run")
        await asyncio.sleep(1.5)
        assert not reloads
        assert str(table.get_row(str(root / "live"))[3]) != "0.0123"

        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: app.screen is runs_list, "the runs list")
        await pilot_wait_for(pilot, lambda: str(table.get_row(str(root / "live"))[3]) == "0.0123",
                             "the row to show the loss written while it was covered")
        assert reloads


class StatsApp(App):
    def compose(self) -> ComposeResult:
        yield SystemStats(id="system")


async def test_system_stats_sample_only_while_shown_and_repaint_without_a_layout_pass() -> None:
    app = StatsApp()
    async with app.run_test(size=(80, 12)) as pilot:
        stats = app.query_one(SystemStats)
        assert stats.content == SystemStats.PLACEHOLDER  # headless: no timer of its own
        stats.display = False  # as in a tab that is not open
        await pilot.pause()
        stats._refresh_sample()
        assert stats.content == SystemStats.PLACEHOLDER
        stats.display = True
        await pilot.pause()
        stats._refresh_sample()
        await pilot.pause()
        assert str(stats.content).startswith("CPU ")
        passes = count_layouts(app)
        stats._refresh_sample()
        await pilot.pause()
        assert not passes and str(stats.content).startswith("CPU ")
