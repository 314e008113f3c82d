"""The run view driven with Pilot: its plot, checkpoint table, events and every key.

Fixture runs (tests/support/run_view.py) cover what the screen shows; the keys that train
(r, R, e, b, c, x) use the real engine on CPU with tiny configs and bounded waits.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from runctl.runs.layout import CHECKPOINT_DIR, METRICS_JSONL, RUN_YAML, checkpoint_name
from runctl.runs.manifest import read_manifest
from runctl.tui.app import RunctlApp
from runctl.tui.engine_host import ENGINE_NICENESS
from runctl.tui.messages import EngineFinished
from runctl.tui.screens.branch_dialog import BranchDialog
from runctl.tui.screens.confirm_delete import ConfirmDeleteScreen
from runctl.tui.screens.extend_dialog import ExtendDialog
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from runctl.tui.widgets.events_log import EventsLog
from runctl.tui.widgets.loss_plot import LossPlot
from support.run_files import events
from support.run_view import FIXED_NOW, append_metric, make_test_app, write_run
from support.runs import engine_run
from support.ui import Notifications, open_run, select, settled
from support.waiting import pilot_wait_for

WAIT_SECONDS = 30.0
SIZE = (120, 36)


async def engines_done(pilot) -> None:
    """Wait until no engine thread runs and its EngineFinished message has been handled."""
    await pilot_wait_for(pilot, lambda: not any(w.group == "engine" and not w.is_finished for w in pilot.app.workers),
                         "the engine threads to end")
    await pilot.pause(0.1)


def statuses(screen: RunViewScreen) -> dict[str, str]:
    return {name: info.status for name, info in screen.query_one(CheckpointTable).infos.items()}


# Each test is one session of the app doing several things in a row, as a user would: starting
# the app costs more than most single checks, and the suite's time budget is shared.

# ------------------------------------------------------------------------------ what it shows

async def test_shows_plot_badges_events_config_overlays_and_plot_keys(tmp_path: Path) -> None:
    write_run(tmp_path, "base")
    other = write_run(tmp_path, "other", state="finished", step=400, checkpoints=(200, 400))
    run = write_run(tmp_path, "alpha", corrupt=(300,), missing=(200,),
                    parent={"run_id": "base", "checkpoint": checkpoint_name(100)})
    app = make_test_app(tmp_path, tmp_path)
    app.selected_runs.add(other)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, run)
        assert statuses(screen) == {"step_00000100.pt": "ok", "step_00000200.pt": "missing",
                                    "step_00000300.pt": "corrupt"}
        assert "truncated" in (screen.query_one(CheckpointTable).infos["step_00000300.pt"].reason or "")
        assert screen.state == "interrupted"
        # started, branched, 2 checkpoints on disk, interrupted
        assert screen.query_one(EventsLog).event_count == 5
        assert "max_steps: 400" in screen.query_one("#config").text

        plot = screen.query_one(LossPlot)
        await pilot_wait_for(pilot, lambda: len(plot.data.overlays) == 2, "the metrics and two overlays")
        assert plot.data.last_step == 300
        assert len(plot.data.train) == 30 and len(plot.data.val) == 3 and len(plot.data.lr) == 30
        assert [overlay.label for overlay in plot.data.overlays] == ["parent base", "other"]
        assert int(plot.data.overlays[1].train.steps[-1]) == 400

        await pilot.press("m")
        assert plot.smoothing == 0.6
        await pilot.press("m", "m", "m")
        assert plot.smoothing == 0.0
        await pilot.press("l")
        assert plot.log_y
        await pilot.press("w")
        assert plot.window_steps == plot.window_size
        await pilot.press("w")
        assert plot.window_steps is None
        lr_chart = plot.query_one("#lr-chart")
        assert not lr_chart.display
        await pilot.press("L")
        await pilot.pause()
        assert plot.show_lr and lr_chart.display and lr_chart.size.height > 0

        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RunViewScreen)


async def test_appended_metric_line_reaches_the_plot(tmp_path: Path) -> None:
    """An interrupted run is read again only when the watcher says its files changed."""
    run = write_run(tmp_path, "alpha")
    app = make_test_app(tmp_path, tmp_path, watch=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_wait_for(pilot, app.watch_ready.is_set, "the watcher to start")
        screen = await open_run(pilot, run)
        plot = screen.query_one(LossPlot)
        await pilot_wait_for(pilot, lambda: plot.data.last_step == 300, "initial metrics")
        draws = plot.draw_count
        append_metric(run, 310, 0.2)
        await pilot_wait_for(pilot, lambda: plot.data.last_step == 310, "the appended line", timeout=5)
        await pilot_wait_for(pilot, lambda: plot.draw_count > draws, "a redraw", timeout=5)
        assert float(plot.data.train.values[-1]) == 0.2


# ------------------------------------------------------------------------------ v, d and dimmed keys

async def test_dimmed_keys_deep_verify_and_delete(tmp_path: Path) -> None:
    # 50 another model, 100 ok, 200 missing, 300 ok (the newest valid), 400 corrupt
    run = write_run(tmp_path, "alpha", step=400, max_steps=500, every=50, keep_last=10,
                    checkpoints=(50, 100, 200, 300, 400), missing=(200,), corrupt=(400,), other_model=(50,))
    app = make_test_app(tmp_path, tmp_path)
    notes = Notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, run)
        table = screen.query_one(CheckpointTable)
        # An interrupted run: nothing to stop or checkpoint, but it can be resumed and extended.
        assert screen.check_action("stop", ()) is None
        assert screen.check_action("checkpoint_now", ()) is None
        assert screen.check_action("resume", ()) is True
        assert screen.check_action("extend", ()) is True
        await pilot.press("x", "c")
        await pilot.pause()
        assert notes.messages == []

        await select(pilot, screen, "step_00000200.pt")  # the missing one
        for action in ("resume_from", "branch", "verify", "delete"):
            assert screen.check_action(action, ()) is None, action
        await pilot.press("d", "v")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDeleteScreen) and notes.messages == []

        await select(pilot, screen, "step_00000300.pt")
        for action in ("resume_from", "branch", "verify", "delete"):
            assert screen.check_action(action, ()) is True, action
        await pilot.press("d")  # 400 is corrupt: 300 is what resume uses
        await pilot_wait_for(pilot, lambda: bool(notes.matching("refusing")), "the refusal")
        assert "newest valid" in notes.matching("refusing")[0][0]
        assert not isinstance(app.screen, ConfirmDeleteScreen)
        assert (run / CHECKPOINT_DIR / "step_00000300.pt").is_file()

        await select(pilot, screen, "step_00000100.pt")
        await pilot.press("v")
        await pilot_wait_for(pilot, lambda: table.infos["step_00000100.pt"].level == "deep", "deep verification")
        assert table.infos["step_00000100.pt"].status == "ok"
        assert notes.matching("step_00000100.pt: ok (deep)")

        await select(pilot, screen, "step_00000050.pt")
        assert table.infos["step_00000050.pt"].status == "ok"  # intact bytes: full verification passes
        await pilot.press("v")
        await pilot_wait_for(pilot, lambda: table.infos["step_00000050.pt"].level == "deep", "deep verification")
        assert table.infos["step_00000050.pt"].status == "incompatible"
        assert "shape" in (table.infos["step_00000050.pt"].reason or "")
        await select(pilot, screen, "step_00000100.pt")

        await pilot.press("d")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, ConfirmDeleteScreen), "the confirmation")
        await pilot.press("n")  # keep it
        await pilot.pause()
        assert (run / CHECKPOINT_DIR / "step_00000100.pt").is_file()
        await pilot.press("d")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, ConfirmDeleteScreen), "the confirmation")
        await pilot.press("y")
        # keep_last allows it, so the deleted checkpoint is now an expected one that is missing.
        await pilot_wait_for(pilot, lambda: table.infos["step_00000100.pt"].status == "missing", "the row to update")
        assert not (run / CHECKPOINT_DIR / "step_00000100.pt").exists()
        assert "step_00000100.pt" not in read_manifest(run / CHECKPOINT_DIR).files
        assert (run / CHECKPOINT_DIR / "step_00000300.pt").is_file()


async def test_the_engine_ending_clears_running_even_when_nothing_on_disk_changes(tmp_path: Path) -> None:
    """The final summary can arrive while the engine thread is still registered (state "running");
    the engine's end must clear it by itself, or r and R stay disabled (a race seen in CI)."""
    run = write_run(tmp_path, "done", state="finished", step=400, checkpoints=(200, 400))
    app = make_test_app(tmp_path, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, run)
        await select(pilot, screen, "step_00000200.pt")
        assert screen.check_action("resume_from", ()) is True
        screen.state = "running"  # what the last RunUpdate set while the thread was still registered
        assert screen.check_action("resume_from", ()) is None
        app.post_message(EngineFinished(run, None))
        await pilot_wait_for(pilot, lambda: screen.check_action("resume_from", ()) is True, "R to be enabled again")
        assert screen.state == "finished"


# ------------------------------------------------------------------------------ the real engine

async def test_r_then_R_then_e_then_b_with_the_real_engine(tmp_path: Path) -> None:
    run = engine_run(tmp_path, "tiny", max_steps=30, stopped_at_first_step=True)
    # A newer checkpoint that is damaged: resume must skip it and say so.
    (run / CHECKPOINT_DIR / checkpoint_name(5)).write_bytes(b"PK\x03\x04 not really a zip")
    app = make_test_app(tmp_path, tmp_path)
    notes = Notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, run)
        assert screen.state == "stopped"
        assert statuses(screen)[checkpoint_name(5)] == "corrupt"
        plot = screen.query_one(LossPlot)

        # r: one key, the newest valid checkpoint, to the end.
        await pilot.press("r")
        await pilot_wait_for(pilot, lambda: screen.summary.state == "finished" and screen.summary.step == 30,
                             "the run to finish")
        await engines_done(pilot)
        resumed_note = notes.matching("resuming from step_00000001.pt")
        assert resumed_note and "skipped step_00000005.pt" in resumed_note[0][0], notes.text()
        assert [e["from"] for e in events(run) if e["event"] == "resumed"] == ["step_00000001.pt"]
        await pilot_wait_for(pilot, lambda: plot.data.last_step == 30, "the plot to reach step 30")
        assert screen.check_action("resume", ()) is None  # finished: nothing to resume

        # R: from the checkpoint selected in the table.
        await pilot_wait_for(pilot, lambda: "step_00000010.pt" in screen.query_one(CheckpointTable).infos
                             and settled(screen), "the new checkpoints")
        await select(pilot, screen, "step_00000010.pt")
        await pilot.press("R")
        await pilot_wait_for(pilot, lambda: len([e for e in events(run) if e["event"] == "resumed"]) == 2,
                             "the second resume")
        await engines_done(pilot)
        resumed = [e for e in events(run) if e["event"] == "resumed"][-1]
        assert resumed["from"] == "step_00000010.pt" and resumed["step"] == 10
        await pilot_wait_for(pilot, lambda: screen.summary.state == "finished", "the run to finish again")

        # e: extend the finished run by 10 steps; it trains to the new end.
        await pilot.press("e")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, ExtendDialog), "the extend dialog")
        await pilot.press("+", "1", "0", "enter")
        await pilot_wait_for(pilot, lambda: screen.summary.state == "finished" and screen.summary.step == 40,
                             "the run to reach step 40")
        await engines_done(pilot)
        assert "max_steps: 40" in (run / RUN_YAML).read_text()
        assert any(e["event"] == "extended" and e["to_max"] == 40 for e in events(run))

        # b: branch from the selected checkpoint with an override; the view switches to the branch.
        await pilot_wait_for(pilot, lambda: "step_00000040.pt" in screen.query_one(CheckpointTable).infos
                             and settled(screen), "the final checkpoint")
        await select(pilot, screen, "step_00000030.pt")
        await pilot.press("b")
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, BranchDialog), "the branch dialog")
        dialog = app.screen
        dialog.query_one("#name").value = "kid"
        dialog.query_one("#overrides").value = "optim.lr=5e-4"
        await pilot.press("ctrl+s")
        kid = tmp_path / "kid"
        await pilot_wait_for(pilot, lambda: isinstance(app.screen, RunViewScreen) and app.screen.run_dir == kid,
                             "the branch's run view")
        await engines_done(pilot)
        await pilot_wait_for(pilot, lambda: app.screen.summary is not None and app.screen.summary.state == "finished",
                             "the branch to finish")
        text = (kid / RUN_YAML).read_text()
        assert "run_id: tiny" in text and "step_00000030.pt" in text and "lr: 0.0005" in text


def niceness(thread: threading.Thread) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


async def test_the_plot_follows_an_in_process_run_through_the_watcher(tmp_path: Path) -> None:
    """The in-process engine sends the run view nothing: its metrics lines reach the plot the way
    anyone's do, the watcher seeing the file grow and waking the view's follower. Its thread runs
    below the UI thread's priority (Linux), and the thread workers after it do not."""
    run = engine_run(tmp_path, "watched", max_steps=100_000, checkpoint_every=100_000, stopped_at_first_step=True)
    app = make_test_app(tmp_path, tmp_path, watch=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot_wait_for(pilot, app.watch_ready.is_set, "the watcher to start")
            screen = await open_run(pilot, run)
            plot = screen.query_one(LossPlot)
            await pilot.press("r")
            shown: set[int | None] = set()

            def followed_while_training() -> bool:
                shown.add(plot.data.last_step)
                return len(shown - {None, 1}) >= 3 and app.engine_host.is_training(run)

            await pilot_wait_for(pilot, followed_while_training, "the plot to move on three times while the run trains")
            ui_niceness = niceness(threading.main_thread())
            if sys.platform.startswith("linux"):
                engine_thread = next(t for t in threading.enumerate() if t.name == f"runctl-engine:{run.name}")
                assert niceness(engine_thread) == min(19, ui_niceness + ENGINE_NICENESS)
            await pilot.press("x")
            await engines_done(pilot)
            worker = app.run_worker(lambda: niceness(threading.current_thread()), thread=True)
            assert await worker.wait() == ui_niceness
            last = max(json.loads(line)["step"] for line in (run / METRICS_JSONL).read_text().splitlines())
            await pilot_wait_for(pilot, lambda: plot.data.last_step == last, f"the plot to reach step {last}")
    finally:
        app.engine_host.stop_all()
        app.engine_host.wait_all(60)


async def test_c_checkpoints_now_and_x_stops(tmp_path: Path) -> None:
    run = engine_run(tmp_path, "long", max_steps=200_000, checkpoint_every=100_000, heavy_steps=True)
    app = make_test_app(tmp_path, tmp_path)
    notes = Notifications(app)
    try:
        await _checkpoint_and_stop(app, run, notes)
    finally:
        # A failed check must not leave a 200,000-step engine thread keeping pytest alive.
        app.engine_host.stop_all()
        app.engine_host.wait_all(60)


async def _checkpoint_and_stop(app: RunctlApp, run: Path, notes: Notifications) -> None:
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, run)
        await pilot.press("r")
        await pilot_wait_for(pilot, lambda: screen.state == "running" and screen.check_action("stop", ()) is True,
                             "training to start")
        await pilot.press("c")
        await pilot_wait_for(pilot, lambda: any(e["event"] == "checkpoint" for e in events(run)), "a checkpoint")
        await pilot.press("x")
        await engines_done(pilot)
        await pilot_wait_for(pilot, lambda: screen.summary.state == "stopped", "the stopped state")
        assert notes.matching("checkpoint requested") and notes.matching("stopping")
        # The footer follows the screen's next poll of the run's files.
        await pilot_wait_for(pilot, lambda: screen.check_action("stop", ()) is None, "x to be dimmed once stopped")


# ------------------------------------------------------------------------------ pure helpers

def test_log_axis_helpers() -> None:
    import math

    import numpy as np
    from runctl.tui.widgets.loss_plot import decade_ticks, log10_positive, window_mask

    logs = log10_positive(np.array([100.0, 1.0, 0.0, -2.0]))
    assert logs[0] == 2.0 and logs[1] == 0.0 and math.isnan(logs[2]) and math.isnan(logs[3])
    positions, labels = decade_ticks(math.log10(0.3), math.log10(2.3))
    assert labels == ["0.5", "1", "2"]
    assert np.allclose(positions, [math.log10(0.5), 0.0, math.log10(2.0)])
    positions, labels = decade_ticks(-6.2, 0.1)
    assert labels[0] == "1e-06" and labels[-1] == "1" and len(labels) <= 6
    steps = np.arange(0, 5000, 10)
    assert window_mask(steps, 4990, None) is None
    assert steps[window_mask(steps, 4990, 1000)].min() == 4000


def test_system_stats_sample_and_text() -> None:
    from runctl.tui.widgets.system_stats import _Nvml, format_sample, sample_system

    sample = sample_system(_Nvml())
    assert 0 < sample.ram_used <= sample.ram_total and sample.process_rss > 0 and sample.cpu_count >= 1
    text = format_sample(sample)
    assert text.startswith("CPU") and "RAM" in text
    assert ("GPU0" in text) == bool(sample.gpus)


def test_event_lines_show_a_crash_with_its_traceback() -> None:
    from runctl.tui.widgets.events_log import event_lines

    lines = event_lines({"time": FIXED_NOW, "event": "crashed", "step": 12, "error": "RuntimeError: boom",
                         "traceback": "Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: boom"})
    assert lines[0].plain == "2026-11-22 00:00:00Z      step 12  crashed      RuntimeError: boom"
    assert [line.plain.strip() for line in lines[1:]] == [
        "Traceback (most recent call last):", 'File "x.py", line 1', "RuntimeError: boom"]
    resumed = event_lines({"time": FIXED_NOW, "event": "resumed", "step": 10, "from": "step_00000010.pt"})
    assert resumed[0].plain.endswith("resumed      from step_00000010.pt")
