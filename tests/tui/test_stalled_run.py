"""A run whose step hangs: `stalled` (not crashed, not running) in `ls --json` and the UI, with the
training thread's stack naming the function it waits in; `x` ends it `interrupted` with a checkpoint
of the last completed step, and `runctl resume` continues it bit-exactly.

The engine runs in a subprocess with a custom task (hang_task.py, beside this file) whose step 8
waits for a file; the stall threshold and the stop's grace period are set to 1 s in the config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from runctl.tui.app import make_app
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.widgets.events_log import EventsLog
from runctl.tui.widgets.runs_table import RunsTable
from textual.widgets import TabbedContent

WAIT_SECONDS = 120.0
HANG_AT = 8


def env() -> dict[str, str]:
    here = str(Path(__file__).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]),
            "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def runctl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runctl", *map(str, args)], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=WAIT_SECONDS)


def write_config(path: Path, hang_at: int, release: Path) -> Path:
    cfg = {"task": "hang_task:factory", "device": "cpu", "max_steps": 16,
           "model": {"hang_at": hang_at, "release": str(release)}, "data": {"batch_size": 32},
           "schedule": {"warmup_steps": 1}, "log": {"every": 1}, "eval": {"every": 100, "batches": 2},
           "checkpoint": {"every": 5}, "stall": {"after_s": 1.0, "grace_s": 1.0}}
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


async def pilot_wait(pilot, condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


def stalled_at_hang(root: Path) -> dict[str, Any] | None:
    """The run's `ls --json` record once it is stalled inside the hanging step."""
    done = runctl("ls", root, "--json", cwd=root.parent)
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
    engine = subprocess.Popen([sys.executable, "-m", "runctl", "train", config, "--root", root, "--name", "hung"],
                              cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        record = wait_until(lambda: stalled_at_hang(root), "ls --json to show the run stalled")
        assert "wait_for_release" in record["stalled"]["where"]
        assert "in wait_for_release" in record["stalled"]["stack"] and "in loss" in record["stalled"]["stack"]
        events = [json.loads(line) for line in (root / "hung" / "events.jsonl").read_text().splitlines()]
        stalled = [e for e in events if e["event"] == "stalled" and e["step"] == HANG_AT - 1][-1]
        threads = {item["thread"]: item["stack"] for item in stalled["stacks"]}
        assert "in wait_for_release" in threads["MainThread"] and "runctl-heartbeat" in threads

        app = make_app(root, watch=False, keymap_path=tmp_path / "no-keys.yaml")
        async with app.run_test(size=(120, 36)) as pilot:
            table = app.screen.query_one(RunsTable)
            await pilot_wait(pilot, lambda: table.row_for(root / "hung") is not None, "the runs list")
            assert table.row_for(root / "hung").state == "stalled"
            await pilot.press("enter")
            await pilot_wait(pilot, lambda: isinstance(app.screen, RunViewScreen) and app.screen.summary is not None,
                             "the run view")
            view = app.screen
            assert view.summary.state == "stalled"
            assert "wait_for_release" in str(view.query_one("#run-header").render())
            view.query_one(TabbedContent).active = "tab-events"
            log = view.query_one(EventsLog)
            await pilot_wait(pilot, lambda: "thread MainThread:" in log_text(log), "the stacks in the Events tab")
            assert "in wait_for_release" in log_text(log)
            assert view.check_action("stop", ()) is True
            await pilot.press("x")
            await pilot_wait(pilot, lambda: view.summary is not None and view.summary.state == "interrupted",
                             "the stop to interrupt the hung step")
        assert engine.wait(WAIT_SECONDS) == 1, engine.stderr.read()
        assert "interrupting it" in engine.stderr.read()
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait()

    manifest = json.loads((root / "hung" / "checkpoints" / "manifest.json").read_text())["files"]
    assert manifest[f"step_{HANG_AT - 1:08d}.pt"]["kind"] == "interrupt"
    last = json.loads((root / "hung" / "events.jsonl").read_text().splitlines()[-1])
    assert (last["event"], last["step"], last["stalled"]) == ("interrupted", HANG_AT - 1, True)

    release.touch()
    resumed = runctl("resume", "hung", "--root", root, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight = runctl("train", write_config(tmp_path / "straight.yaml", 0, release), "--root", root,
                      "--name", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    final = "checkpoints/step_00000016.pt"
    a = torch.load(root / "hung" / final, weights_only=True)
    b = torch.load(root / "straight" / final, weights_only=True)
    for key in ("model", "optimizer"):
        assert_equal_tensors(a[key], b[key])


def assert_equal_tensors(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal_tensors(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal_tensors(x, y)
    else:
        assert a == b


def test_two_ranks_one_hung_every_rank_stack_in_the_events(tmp_path: Path) -> None:
    """Rank 1 waits in its step; rank 0 waits for it in the gradient all-reduce. Both stall, and
    rank 0 logs a `stalled` event per rank with that rank's stacks."""
    root, release = tmp_path / "runs", tmp_path / "release"
    config = write_config(tmp_path / "hang.yaml", HANG_AT, release)
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["hang_rank"] = 1
    config.write_text(yaml.safe_dump(cfg))
    root.mkdir()
    engine = subprocess.Popen([sys.executable, "-m", "runctl", "train", config, "--root", root, "--name", "ddp",
                               "--nproc", "2"], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    events_file = root / "ddp" / "events.jsonl"

    def stalled_events() -> dict[int, dict[str, Any]]:
        if not events_file.exists():
            return {}
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
        return {e["rank"]: e for e in events if e["event"] == "stalled" and e.get("step") == HANG_AT - 1}

    try:
        stalled = wait_until(lambda: len(stalled_events()) == 2 and stalled_events(), "both ranks' stalled events")
        ranks = {rank: {s["thread"]: s["stack"] for s in event["stacks"]} for rank, event in stalled.items()}
        assert "in wait_for_release" in ranks[1]["MainThread"] and "wait_for_release" in stalled[1]["where"]
        assert "in wait_for_release" not in ranks[0]["MainThread"] and "backward" in ranks[0]["MainThread"]
        release.touch()
        assert engine.wait(WAIT_SECONDS) == 0, engine.stderr.read()
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait()
    assert json.loads((root / "ddp" / "status.json").read_text())["state"] == "finished"
