"""The runs list with Pilot on hand-written run folders: states, filter, sort, selection, keys
dimmed by state, the welcome on an empty root, help, palette, keymap remapping, live rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runctl.runs.layout import METRICS_JSONL
from runctl.tui.app import RunctlApp
from runctl.tui.screens.help import HelpScreen
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.widgets.runs_table import COLUMN_KEYS, RunsTable
from support.listing import FIXED_NOW, every_state_root, make_test_app, watched_app_with_one_run, write_run
from support.waiting import pilot_wait_for
from textual.widgets import OptionList

SIZE = (120, 30)
WAIT_SECONDS = 20.0


def table(app: RunctlApp) -> RunsTable:
    return app.screen.query_one(RunsTable)


async def loaded(pilot, count: int | None = None) -> RunsTable:
    await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsListScreen)
                         and pilot.app.screen._loaded, "the runs to load")
    t = table(pilot.app)
    if count is not None:
        await pilot_wait_for(pilot, lambda: t.total_runs == count, f"{count} runs")
    return t


def enabled(app: RunctlApp, action: str) -> bool:
    for active in app.screen.active_bindings.values():
        if active.binding.action == action:
            return active.enabled
    raise AssertionError(f"no binding for {action}")


@pytest.fixture
def state_root(tmp_path: Path):
    root, lock = every_state_root(tmp_path / "runs")
    yield root
    lock.release()


async def test_every_state_shows_with_its_symbol(state_root: Path, tmp_path: Path) -> None:
    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        states = {row.name: row.state for row in t._rows.values()}
        assert states == {
            "gpt-small-lr3e-4": "running", "mlp-baseline": "finished", "cnn-aug": "stopped",
            "vit-patch4": "interrupted",  # said running, lock free: killed
            "gpt-nan": "crashed", "branch-not-started": "unknown",
        }
        state_cells = {str(t.get_row(key)[0]).strip(): str(t.get_row(key)[1]) for key in t.rows}
        assert state_cells["vit-patch4"] == "⚠ interrupted"
        assert state_cells["gpt-nan"] == "✖ crashed"
        row = [str(c) for c in t.get_row(str(state_root / "gpt-small-lr3e-4"))]
        # name, state, step/max, last loss, best val, it/s (1/0.12 s), ETA (580 steps / 8.33 it/s), updated ago
        assert row[2:] == ["420/1000", "0.1045", "1.482", "8.3", "1m09s", "2s ago"]


async def test_filter_by_name_then_keys_act_on_the_match(state_root: Path, tmp_path: Path) -> None:
    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        await pilot.press("slash", *"gpt", "enter")
        assert sorted(t.visible_names()) == ["gpt-nan", "gpt-small-lr3e-4"]
        assert t.has_focus
        await pilot.press("slash", "backspace", "backspace", "backspace", *"cnn", "enter")
        assert t.visible_names() == ["cnn-aug"]
        assert t.current_run is not None and t.current_run.name == "cnn-aug"
        assert enabled(app, "resume")  # stopped: r applies
        await pilot.press("escape")
        assert len(t.visible_names()) == 6


async def test_sort_by_key_and_by_header_click(state_root: Path, tmp_path: Path) -> None:
    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        # default: most recently updated first
        assert t.visible_names()[0] == "gpt-small-lr3e-4"
        await pilot.press("o")  # updated -> name (wraps to the first column)
        assert t.sort_column == "name"
        assert t.visible_names() == sorted(t.visible_names(), key=str.lower)
        # click the "Loss" header: ascending loss, "-" (no loss) last
        x = sum(t.columns[key].get_render_width(t) for key in COLUMN_KEYS[:COLUMN_KEYS.index("loss")]) + 2
        await pilot.click(RunsTable, offset=(x, 0))
        assert t.sort_column == "loss" and not t.sort_reverse
        losses = [t._rows[str(k.value)].last_loss for k in t.rows]
        present = [v for v in losses if v is not None]
        assert present == sorted(present) and losses[-1] is None
        await pilot.click(RunsTable, offset=(x, 0))  # again: descending
        assert t.sort_reverse


async def test_space_selects_runs_for_the_overlay(state_root: Path, tmp_path: Path) -> None:
    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        first = t.current_run
        await pilot.press("space", "down", "space")
        second = t.current_run
        assert app.selected_runs == {first.path, second.path}
        assert str(t.get_row(first.key)[0]).startswith("● ")
        await pilot.press("space")
        assert app.selected_runs == {first.path}


async def test_keys_dim_by_the_selected_runs_state(state_root: Path, tmp_path: Path) -> None:
    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        expect = {
            # name: (stop/checkpoint, resume, start)
            "gpt-small-lr3e-4": (True, False, False),
            "mlp-baseline": (False, False, False),
            "cnn-aug": (False, True, False),
            "vit-patch4": (False, True, False),
            "gpt-nan": (False, True, False),
            "branch-not-started": (False, False, True),
        }
        for index in range(len(expect)):
            t.move_cursor(row=index)
            await pilot.pause()
            name = t.current_run.name
            got = (enabled(app, "stop"), enabled(app, "resume"), enabled(app, "start"))
            assert got == expect[name], name
            assert enabled(app, "checkpoint") == expect[name][0]


async def test_welcome_on_empty_root_lists_builtin_configs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, 0)
        # The welcome is mounted once the listing is in; its list takes the focus when mounted.
        await pilot_wait_for(pilot, lambda: bool(app.screen.query("#welcome-configs")), "the welcome")
        configs = app.screen.query_one("#welcome-configs", OptionList)
        await pilot_wait_for(pilot, lambda: configs.has_focus, "the built-in configs to take the focus")
        assert configs.display
        ids = [configs.get_option_at_index(i).id for i in range(configs.option_count)]
        assert {"digits_mlp", "char_gpt"} <= set(ids)
        assert not table(app).display
        assert not enabled(app, "resume")


async def test_help_lists_every_key_with_its_id(state_root: Path, tmp_path: Path) -> None:
    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, 6)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        ids = {binding_id for _, binding_id, _, _ in app.screen.rows}
        assert {"runctl.new", "runctl.start", "runctl.stop", "runctl.resume", "runctl.extend",
                "runctl.checkpoint", "runctl.open", "runctl.filter", "runctl.select", "runctl.sort",
                "runctl.help", "runctl.quit", "runctl.palette"} <= ids
        await pilot.press("escape")
        assert isinstance(app.screen, RunsListScreen)


async def test_palette_runs_a_screen_action(state_root: Path, tmp_path: Path) -> None:
    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        before = t.sort_column
        await pilot.press("ctrl+p")
        await pilot.press(*"Sort")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot_wait_for(pilot, lambda: t.sort_column != before, "the palette's sort to run")
        await pilot.press("ctrl+p", *"Filter")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot_wait_for(pilot, lambda: app.screen.query_one("#filter").has_focus, "the filter box")


async def test_palette_leaves_out_actions_that_do_not_apply(state_root: Path, tmp_path: Path) -> None:
    from runctl.tui.palette import ScreenActionsProvider, screen_actions

    app = make_test_app(state_root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        t.move_cursor(row=t.get_row_index(str(state_root / "mlp-baseline")))
        await pilot.pause()
        provider = ScreenActionsProvider(app.screen)
        actions = {item.action for item in screen_actions(provider)}
        assert {"new_run", "extend", "open_run", "filter", "sort", "help", "quit_app"} <= actions
        assert not {"resume", "stop", "checkpoint", "start"} & actions


async def test_keymap_file_remaps_a_key(state_root: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("runctl.sort: z\nruntcl.typo: y\n")
    app = make_test_app(state_root, tmp_path, keymap=keys)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        await pilot.press("o")
        assert t.sort_column == "updated"  # o no longer sorts
        await pilot.press("z")
        assert t.sort_column == "name"
        assert any("runtcl.typo" in n.message for n in app._notifications)
        await pilot.press("question_mark")
        keys_by_id = {binding_id: key for key, binding_id, _, _ in app.screen.rows}
        assert keys_by_id["runctl.sort"] == "z"


async def test_bad_keymap_file_keeps_default_keys(state_root: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("runctl.sort: [unclosed\n")
    app = make_test_app(state_root, tmp_path, keymap=keys)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 6)
        assert any(str(keys) in n.message and "invalid YAML" in n.message for n in app._notifications)
        await pilot.press("o")
        assert t.sort_column == "name"


async def test_watcher_adds_new_runs_and_updates_changed_rows(tmp_path: Path) -> None:
    root, app = watched_app_with_one_run(tmp_path, "first")
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, 1)
        await pilot_wait_for(pilot, app.watch_ready.is_set, "the watcher to start")
        write_run(root, "second", state="finished", step=50, max_steps=50, checkpoints=[50])
        await pilot_wait_for(pilot, lambda: t.total_runs == 2, "the new run's row")
        with open(root / "first" / METRICS_JSONL, "a") as f:
            f.write(json.dumps({"step": 30, "time": FIXED_NOW, "train/loss": 0.0123, "step_time": 0.5}) + "\n")
        await pilot_wait_for(pilot, lambda: str(t.get_row(str(root / "first"))[3]) == "0.0123", "the new loss")
        assert str(t.get_row(str(root / "first"))[5]) == "2.0"


async def test_many_runs_arrive_after_the_first_screenful(tmp_path: Path) -> None:
    from runctl.tui.screens.runs_list import QUICK_ROWS
    from support.listing import write_many_runs

    count = QUICK_ROWS + 150
    root = write_many_runs(tmp_path / "runs", count)
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, count)
        await pilot_wait_for(pilot, lambda: t.row_count == count, "every row")
        assert len(set(t.visible_names())) == count
        await pilot.press("slash", *"run-01", "enter")
        await pilot_wait_for(pilot, lambda: t.row_count == 100, "the filtered rows")
        assert all(name.startswith("run-01") for name in t.visible_names())



async def test_the_collector_thresholds_are_held_until_the_first_full_listing_is_painted(tmp_path: Path) -> None:
    import gc

    from runctl.tui.gc_policy import FIRST_PAINT_THRESHOLD
    from support.listing import write_many_runs

    before = gc.get_threshold()
    root = write_many_runs(tmp_path / "runs", 20)
    app = make_test_app(root, tmp_path)
    try:
        held = FIRST_PAINT_THRESHOLD if 0 < before[0] < FIRST_PAINT_THRESHOLD else before[0]
        assert gc.get_threshold()[0] == held
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, 20)
            await pilot_wait_for(pilot, lambda: gc.get_threshold() == before, "the thresholds back")
    finally:
        gc.set_threshold(*before)

def test_load_rows_hands_over_the_most_recently_written_runs_first(tmp_path: Path) -> None:
    import os

    from runctl.tui.run_rows import load_rows

    root = tmp_path / "runs"
    root.mkdir()
    for age, name in ((300, "old"), (10, "newest"), (100, "middle")):
        run_dir = write_run(root, name, state="stopped", step=5, max_steps=10)
        os.utime(run_dir / "status.json", (FIXED_NOW - age, FIXED_NOW - age))
    (root / "not-a-run").mkdir()
    early: list = []
    rows = load_rows(root, newest=2, on_newest=early.extend)
    assert [row.name for row in early] == ["newest", "middle"]
    assert [row.name for row in rows] == ["middle", "newest", "old"]
    # The early rows are part of the result, not read a second time.
    assert all(any(row is early_row for row in rows) for early_row in early)


async def test_the_full_listing_keeps_an_unmoved_cursor_at_the_top(tmp_path: Path) -> None:
    # The newest screenful comes first; when the full listing replaces it, a cursor the user has
    # not moved stays on the first row instead of following its run down the list.
    import os

    from runctl.tui.screens.runs_list import QUICK_ROWS

    root = tmp_path / "runs"
    root.mkdir()
    count = QUICK_ROWS + 10
    for i in range(count):
        run_dir = write_run(root, f"run-{i:04d}", state="finished", step=200, max_steps=200, updated_ago=60)
        # Equal "updated" (ties sort by name); the last ones written are the newest screenful.
        os.utime(run_dir / "status.json", (FIXED_NOW - 1000 + i, FIXED_NOW - 1000 + i))
    app = make_test_app(root, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        t = await loaded(pilot, count)
        await pilot.pause()
        assert t.cursor_row == 0
        assert t.current_run is not None and t.current_run.name == "run-0000"
        assert t.scroll_y == 0
