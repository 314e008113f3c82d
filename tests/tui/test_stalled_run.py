"""A run whose step hangs: `stalled` (not crashed, not running) in `ls --json` and the UI, with the
training thread's stack naming the function it waits in; `x` ends it `interrupted` with a checkpoint
of the last completed step, and `runctl resume` continues it bit-exactly.

The engine runs in a subprocess with the test task (tests/support/tasks.py) whose step 8 waits
for a file; the stall threshold and the stop's grace period are set to 1 s in the config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runctl.tui.app import make_app
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.widgets.events_log import EventsLog
from runctl.tui.widgets.runs_table import RunsTable
from support.checkpoints import load_state, state_differences
from support.cli import run_cli, start_cli
from support.configs import write_hang_config
from support.run_files import events, manifest_files, status
from support.waiting import pilot_wait_for, wait_for
from textual.widgets import TabbedContent

WAIT_SECONDS = 120.0
HANG_AT = 8


def write_config(path: Path, hang_at: int, release: Path, **model: Any) -> Path:
    """16 steps, a checkpoint every 5, step `hang_at` waiting for `release`; a step counts as
    stalled after 1 s and a stop waits 1 s for it."""
    return write_hang_config(path, max_steps=16, checkpoint_every=5, stall={"after_s": 1.0, "grace_s": 1.0},
                             hang_at=hang_at, release=str(release), **model)


def stalled_at_hang(root: Path) -> dict[str, Any] | None:
    """The run's `ls --json` record once it is stalled inside the hanging step."""
    done = run_cli(["ls", root, "--json"], root.parent, timeout=WAIT_SECONDS)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    run = runs[0] if runs else {"state": None}
    return run if run["state"] == "stalled" and run["step"] == HANG_AT - 1 else None


def log_text(log: EventsLog) -> str:
    return "\n".join(line.text for line in log.lines)


async def test_a_hung_step_is_stalled_with_its_stack_and_x_ends_it(tmp_path: Path) -> None:
    root, release = tmp_path / "runs", tmp_path / "release"
    config = write_config(tmp_path / "hang.yaml", HANG_AT, release)
    root.mkdir()
    engine = start_cli(["train", config, "--root", root, "--name", "hung"], cwd=tmp_path, log_dir=tmp_path / "logs")
    try:
        record = wait_for(lambda: stalled_at_hang(root), WAIT_SECONDS, "ls --json to show the run stalled")
        assert "wait_for_release" in record["stalled"]["where"]
        assert "in wait_for_release" in record["stalled"]["stack"] and "in loss" in record["stalled"]["stack"]
        stalled = [e for e in events(root / "hung", "stalled") if e["step"] == HANG_AT - 1][-1]
        threads = {item["thread"]: item["stack"] for item in stalled["stacks"]}
        assert "in wait_for_release" in threads["MainThread"] and "runctl-heartbeat" in threads

        app = make_app(root, watch=False, keymap_path=tmp_path / "no-keys.yaml")
        async with app.run_test(size=(120, 36)) as pilot:
            table = app.screen.query_one(RunsTable)
            await pilot_wait_for(pilot, lambda: table.row_for(root / "hung") is not None, "the runs list")
            assert table.row_for(root / "hung").state == "stalled"
            await pilot.press("enter")
            await pilot_wait_for(pilot, lambda: isinstance(app.screen, RunViewScreen) and app.screen.summary is not None,
                                  "the run view")
            view = app.screen
            assert view.summary.state == "stalled"
            assert "wait_for_release" in str(view.query_one("#run-header").render())
            view.query_one(TabbedContent).active = "tab-events"
            log = view.query_one(EventsLog)
            await pilot_wait_for(pilot, lambda: "thread MainThread:" in log_text(log), "the stacks in the Events tab")
            assert "in wait_for_release" in log_text(log)
            assert view.check_action("stop", ()) is True
            await pilot.press("x")
            await pilot_wait_for(pilot, lambda: view.summary is not None and view.summary.state == "interrupted",
                                  "the stop to interrupt the hung step")
        assert engine.wait(WAIT_SECONDS) == 1, engine.stderr()
        assert "interrupting it" in engine.stderr()
    finally:
        engine.ensure_dead()

    assert manifest_files(root / "hung")[f"step_{HANG_AT - 1:08d}.pt"]["kind"] == "interrupt"
    last = events(root / "hung")[-1]
    assert (last["event"], last["step"], last["stalled"]) == ("interrupted", HANG_AT - 1, True)

    release.touch()
    resumed = run_cli(["resume", "hung", "--root", root], tmp_path, timeout=WAIT_SECONDS)
    assert resumed.returncode == 0, resumed.stderr
    straight = run_cli(["train", write_config(tmp_path / "straight.yaml", 0, release), "--root", root,
                        "--name", "straight"], tmp_path, timeout=WAIT_SECONDS)
    assert straight.returncode == 0, straight.stderr
    final = "checkpoints/step_00000016.pt"
    a, b = load_state(root / "hung" / final), load_state(root / "straight" / final)
    assert not state_differences(a, b, ("model", "optimizer"))


def test_two_ranks_one_hung_every_rank_stack_in_the_events(tmp_path: Path) -> None:
    """Rank 1 waits in its step; rank 0 waits for it in the gradient all-reduce. Both stall, and
    rank 0 logs a `stalled` event per rank with that rank's stacks."""
    root, release = tmp_path / "runs", tmp_path / "release"
    config = write_config(tmp_path / "hang.yaml", HANG_AT, release, hang_rank=1)
    root.mkdir()
    engine = start_cli(["train", config, "--root", root, "--name", "ddp", "--nproc", "2"], cwd=tmp_path,
                       log_dir=tmp_path / "logs")

    def stalled_events() -> dict[int, dict[str, Any]]:
        return {e["rank"]: e for e in events(root / "ddp", "stalled") if e.get("step") == HANG_AT - 1}

    try:
        stalled = wait_for(lambda: len(stalled_events()) == 2 and stalled_events(), WAIT_SECONDS, "both ranks' stalled events")
        ranks = {rank: {s["thread"]: s["stack"] for s in event["stacks"]} for rank, event in stalled.items()}
        assert "in wait_for_release" in ranks[1]["MainThread"] and "wait_for_release" in stalled[1]["where"]
        assert "in wait_for_release" not in ranks[0]["MainThread"] and "backward" in ranks[0]["MainThread"]
        release.touch()
        assert engine.wait(WAIT_SECONDS) == 0, engine.stderr()
    finally:
        engine.ensure_dead()
    assert status(root / "ddp")["state"] == "finished"
