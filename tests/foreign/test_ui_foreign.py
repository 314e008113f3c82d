"""The UI on a root of runs the real tools wrote beside a runctl run (Pilot, and an SVG snapshot):
foreign runs are listed with their layout, open read-only, plot their own records, overlay on a
runctl run, and a whole session writes nothing into their folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trees
from runctl.tui.app import make_app
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.screens.runs_list import RunsListScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from runctl.tui.widgets.loss_plot import LossPlot
from runctl.tui.widgets.runs_table import RunsTable
from support.listing import FIXED_NOW, fixed_now, write_run
from support.ui import columns_refitted, runs_list_loaded
from support.waiting import pilot_wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
SIZE = (130, 32)
WAIT_SECONDS = 60.0
LAYOUT_RUNS = {"hf/out": "hf-trainer", "lightning/lightning_logs/version_0": "lightning",
               "nanogpt/out-tiny": "nanogpt", "tensorboard/runs/Dec03_18-19-31_vm": "tensorboard",
               "plain/checkpoints_optimized": "plain"}
WRITING_KEYS = ("s", "x", "r", "e", "c")


def mixed_root(parent: Path) -> Path:
    """The real tools' runs (with fixed mtimes) and one runctl run, `mine`, under parent/root."""
    root = parent / "root"
    shutil.copytree(FIXTURES, root, symlinks=True)
    for extra in ("make_fixtures.py", "requirements.txt", "requirements-hf4.txt"):
        (root / extra).unlink(missing_ok=True)
    trees.set_mtimes(root, FIXED_NOW - 7200)
    write_run(root, "mine", state="finished", step=100, max_steps=100, checkpoints=(50, 100), updated_ago=600)
    return root


async def loaded(pilot) -> RunsTable:
    await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsListScreen) and pilot.app.screen._loaded,
                         "the runs list")
    return pilot.app.screen.query_one(RunsTable)


async def open_view(pilot, run_dir: Path) -> RunViewScreen:
    pilot.app.open_run(run_dir)
    await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunViewScreen) and pilot.app.screen.summary is not None,
                         f"the view of {run_dir}")
    return pilot.app.screen


async def move_to(pilot, table: RunsTable, name: str) -> None:
    target = table.visible_names().index(name)
    while table.cursor_row != target:
        await pilot.press("down" if table.cursor_row < target else "up")
    await pilot.pause()


async def test_list_marks_layouts_and_offers_no_writing_key(tmp_path: Path) -> None:
    root = mixed_root(tmp_path)
    app = make_app(root, watch=False, now=fixed_now, keymap_path=tmp_path / "no-keys.yaml")
    async with app.run_test(size=SIZE) as pilot:
        table = await loaded(pilot)
        names = table.visible_names()
        assert set(LAYOUT_RUNS) | {"mine"} <= set(names)
        for name, layout in LAYOUT_RUNS.items():
            row = next(r for r in table._rows.values() if r.name == name)
            assert row.layout == layout
            cell = table.get_cell(row.key, "name")
            assert cell.plain.endswith(f"  {layout}")
        screen = pilot.app.screen
        before = trees.tree_state(root / "tensorboard")
        await move_to(pilot, table, "tensorboard/runs/Dec03_18-19-31_vm")  # no step: "never trained" to runctl
        for action in ("start", "stop", "resume", "extend", "checkpoint"):
            assert screen.check_action(action, ()) is None, action
        assert screen.check_action("open_run", ()) is True
        await pilot.press(*WRITING_KEYS)
        await pilot.pause(0.2)
        assert trees.tree_state(root / "tensorboard") == before
        assert not pilot.app.engine_host.training_runs()
        await move_to(pilot, table, "mine")
        assert screen.check_action("extend", ()) is True  # runctl's own run keeps its keys


async def test_run_view_opens_each_layout_read_only_and_plots_its_records(tmp_path: Path) -> None:
    root = mixed_root(tmp_path)
    before = trees.tree_state(root)
    app = make_app(root, watch=False, now=fixed_now, keymap_path=tmp_path / "no-keys.yaml")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for name in LAYOUT_RUNS:
            screen = await open_view(pilot, root / name)
            plot = screen.query_one(LossPlot)
            if LAYOUT_RUNS[name] != "plain":  # the plain folder has no log beside its files
                await pilot_wait_for(pilot, lambda plot=plot: plot.data.train is not None and len(plot.data.train) > 0,
                                     f"the loss of {name}")
            assert screen.summary.name == name
            assert f"{LAYOUT_RUNS[name]} · read-only" in str(screen.query_one("#run-header").render())
            table = screen.query_one(CheckpointTable)
            if name != "tensorboard/runs/Dec03_18-19-31_vm":
                await pilot_wait_for(pilot, lambda table=table: table.row_count > 0, f"the checkpoints of {name}")
            for action in ("resume", "resume_from", "extend", "checkpoint_now", "stop", "delete"):
                assert screen.check_action(action, ()) is None, (name, action)
            await pilot.press("r", "R", "e", "c", "x", "d")
            await pilot.pause(0.1)
            assert isinstance(pilot.app.screen, RunViewScreen)  # no dialog opened
            if table.row_count:
                await pilot.press("v")  # a deep verify reads, never writes
                await pilot_wait_for(pilot, lambda: any("(deep)" in n.message for n in pilot.app._notifications),
                                     f"a deep verify in {name}")
                pilot.app.clear_notifications()
            await pilot.press("escape")
            await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsListScreen), "the list")
        lightning = root / "lightning/lightning_logs/version_0"
        table = (await open_view(pilot, lightning)).query_one(CheckpointTable)
        await pilot_wait_for(pilot, lambda: "checkpoints/last.ckpt" in table.infos, "the Lightning checkpoints")
        assert table.infos["checkpoints/last.ckpt"].copy_of == "checkpoints/epoch=1-step=16.ckpt"
        assert "copy of checkpoints/epoch=1-step=16.ckpt" in table.get_cell("checkpoints/last.ckpt", "kind").plain
    assert pilot.app.return_code in (None, 0)
    assert trees.tree_state(root) == before, "the UI session wrote into the tree"


async def test_a_lightning_run_overlaid_on_a_runctl_run_and_back(tmp_path: Path) -> None:
    root = mixed_root(tmp_path)
    lightning = root / "lightning/lightning_logs/version_0"
    app = make_app(root, watch=False, now=fixed_now, keymap_path=tmp_path / "no-keys.yaml")
    app.selected_runs.add(lightning)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        plot = (await open_view(pilot, root / "mine")).query_one(LossPlot)
        await pilot_wait_for(pilot, lambda: len(plot.data.overlays) == 1 and plot.data.overlays[0].train is not None,
                             "the Lightning overlay")
        overlay = plot.data.overlays[0]
        assert overlay.label == "lightning/lightning_logs/version_0"
        assert (len(overlay.train), len(overlay.val)) == (8, 4)
        await pilot.press("escape")
        await pilot_wait_for(pilot, lambda: isinstance(pilot.app.screen, RunsListScreen), "the list")
        pilot.app.selected_runs.clear()
        pilot.app.selected_runs.add(root / "mine")
        plot = (await open_view(pilot, lightning)).query_one(LossPlot)
        await pilot_wait_for(pilot, lambda: len(plot.data.overlays) == 1 and plot.data.overlays[0].train is not None,
                             "the runctl overlay")
        assert plot.data.overlays[0].label == "mine" and len(plot.data.train) == 8


# ---------------------------------------------------------------------------------------- snapshot

@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def until_loaded(pilot) -> None:
    await runs_list_loaded(pilot)
    await pilot.press("o")  # by name: from "updated", the next column
    await pilot.pause()
    await columns_refitted(pilot)


def test_runs_list_with_mixed_layouts(snap_compare, in_tmp: Path) -> None:
    mixed_root(in_tmp)
    app = make_app(Path("root"), watch=False, now=fixed_now, keymap_path=Path("keys.yaml"))
    assert snap_compare(app, terminal_size=SIZE, run_before=until_loaded)
