"""runs.run_follower with a real RunWatcher (inotify) and no Textual: lines appended to a run's
metrics.jsonl reach the follower's callback as points, woken by the watcher alone (the follower's
own ticks are an hour apart here), and the receiving side ends with what runs.metrics reads.

Waits are bounded and on conditions; latency is bench/bench_ui.py's business.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from runctl.runs.atomic import atomic_write_json, atomic_write_text
from runctl.runs.follower_hub import FollowerHub
from runctl.runs.layout import METRICS_JSONL, RUN_YAML, STATUS_JSON
from runctl.runs.lock import RunLock
from runctl.runs.metrics import MetricsReader
from runctl.runs.plot_series import PlotDelta, PlotSeries, SeriesSender
from runctl.runs.run_follower import RunFollower, RunUpdate
from runctl.runs.watch import RunWatcher

WAIT = 10.0
NO_TICK = 3600.0


def line(step: int, loss: float) -> bytes:
    return json.dumps({"step": step, "time": 1000.0 + step, "train/loss": loss}).encode() + b"\n"


def make_run(root: Path, name: str, lines: bytes) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / RUN_YAML, f"run_id: {name}\nname: {name}\nmax_steps: 100\n")
    # Not live: a watched run that is not live has no tick at all.
    atomic_write_json(run_dir / STATUS_JSON, {"state": "interrupted", "step": 0, "max_steps": 100})
    (run_dir / METRICS_JSONL).write_bytes(lines)
    return run_dir


class Plot:
    """The receiving side, as the run view's plot holds it: deltas applied in arrival order."""

    def __init__(self) -> None:
        self.series = PlotSeries()
        self.deltas: list[PlotDelta] = []
        self.updates = 0
        self.threads: set[str] = set()
        self.wakes: list[set[Path]] = []  # the runs of each batch of the watcher's changes
        self.states: list[str] = []  # the state of each summary delivered
        self._cond = threading.Condition()

    def watcher_changed(self, run_dirs: set[Path]) -> None:
        with self._cond:
            self.wakes.append(run_dirs)
            self._cond.notify_all()

    def __call__(self, update: RunUpdate) -> None:
        with self._cond:
            self.updates += 1
            self.threads.add(threading.current_thread().name)
            if update.summary is not None:
                self.states.append(update.summary.state)
            if update.plot is not None:
                self.deltas.append(update.plot)
                self.series.apply(update.plot)
            self._cond.notify_all()

    def train(self) -> tuple[list[int], list[float]]:
        curve = self.series.data().train
        return ([], []) if curve is None else (curve.steps.tolist(), curve.values.tolist())

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        with self._cond:
            assert self._cond.wait_for(condition, timeout=WAIT), f"{what} within {WAIT}s; plot has {self.train()}"


def read_train(run_dir: Path) -> tuple[list[int], list[float]]:
    """What runs.metrics reads from the file now: the reference the plot must end with."""
    reader = MetricsReader(run_dir)
    reader.poll()
    steps, values = reader.series("train/loss")
    return steps.tolist(), values.tolist()


@pytest.fixture
def followed(tmp_path: Path) -> Iterator[tuple[Path, Plot, RunFollower]]:
    root = tmp_path / "runs"
    run_dir = make_run(root, "alpha", line(1, 2.0) + line(2, 1.9))
    make_run(root, "other", line(1, 5.0))
    hub = FollowerHub()
    plot = Plot()

    def changed(changes: list) -> None:
        plot.watcher_changed({c.run_dir for c in changes})
        hub.changed(changes)

    follower = RunFollower(run_dir, root, on_update=plot, live_poll=NO_TICK, idle_poll=NO_TICK)
    with RunWatcher(root, changed) as watcher:
        hub.watching(watcher.covers)
        hub.add(follower)
        follower.start()
        try:
            yield run_dir, plot, follower
        finally:
            follower.stop(timeout=WAIT)
            hub.remove(follower)


def test_appended_and_completed_lines_reach_the_callback_as_points(followed) -> None:
    run_dir, plot, follower = followed
    plot.wait(lambda: plot.train() == ([1, 2], [2.0, 1.9]), "the first look shows the file's points")
    assert follower.covered(run_dir)

    with (run_dir / METRICS_JSONL).open("ab") as file:
        file.write(line(3, 1.8) + line(4, 1.7))
    plot.wait(lambda: plot.train()[0] == [1, 2, 3, 4], "the appended lines")
    # The new points travel, not the whole series again.
    last = plot.deltas[-1].series[("", "train/loss")]
    assert last.keep == 2 and last.steps.tolist() == [3, 4]

    # A line still being written: half now (with the next line whole after it), half later.
    half = line(5, 1.65)
    with (run_dir / METRICS_JSONL).open("ab") as file:
        file.write(half[:-6])
        file.flush()
        os.fsync(file.fileno())
    wakes_before = len(plot.wakes)
    plot.wait(lambda: len(plot.wakes) > wakes_before, "the watcher to report the partial write")
    with (run_dir / METRICS_JSONL).open("ab") as file:
        file.write(half[-6:] + line(6, 1.6))
    plot.wait(lambda: plot.train()[0] == [1, 2, 3, 4, 5, 6], "the completed line and the next")
    assert plot.train() == read_train(run_dir)
    assert plot.train()[1][4] == 1.65

    # The callback runs on the follower's own thread.
    assert plot.threads == {f"runctl-follow:{run_dir.name}"}


def test_a_truncated_or_replaced_file_replaces_the_points(followed) -> None:
    run_dir, plot, _follower = followed
    plot.wait(lambda: plot.train()[0] == [1, 2], "the first look")

    # Rotated: a new file renamed over the old one (another tool's log rotation, a restore).
    rotated = run_dir / "metrics.jsonl.new"
    rotated.write_bytes(line(1, 3.0) + line(2, 2.5) + line(3, 2.25))
    os.replace(rotated, run_dir / METRICS_JSONL)
    plot.wait(lambda: plot.train() == ([1, 2, 3], [3.0, 2.5, 2.25]), "the rotated file's points")

    # Truncated in place, then written again from the start.
    with (run_dir / METRICS_JSONL).open("wb") as file:
        file.write(line(1, 4.0))
    plot.wait(lambda: plot.train() == ([1], [4.0]), "the truncated file's points")
    assert plot.train() == read_train(run_dir)


def test_a_change_to_another_run_does_not_wake_the_follower(followed, tmp_path: Path) -> None:
    run_dir, plot, _follower = followed
    plot.wait(lambda: plot.train()[0] == [1, 2], "the first look")
    updates = plot.updates
    other = tmp_path / "runs" / "other"
    with (other / METRICS_JSONL).open("ab") as file:
        file.write(line(2, 4.0))
    plot.wait(lambda: any(other in batch for batch in plot.wakes), "the watcher to report the other run")
    # The follower is woken only for its own runs: then its next look finds the new line here.
    with (run_dir / METRICS_JSONL).open("ab") as file:
        file.write(line(3, 1.8))
    plot.wait(lambda: plot.train()[0] == [1, 2, 3], "this run's line")
    assert plot.updates == updates + 1


def test_sender_and_receiver_agree_through_resumes_and_nan() -> None:
    """SeriesSender's deltas applied by PlotSeries give back each series it was shown."""
    sender, receiver = SeriesSender(), PlotSeries()
    versions = [
        ([1, 2, 3], [3.0, 2.0, float("nan")]),
        ([1, 2, 3, 4, 5], [3.0, 2.0, float("nan"), 1.5, 1.4]),
        ([1, 2, 3, 4, 5], [3.0, 2.0, float("nan"), 1.5, 1.4]),  # nothing new: no delta
        ([1, 2, 3, 4], [3.0, 2.0, float("nan"), 1.45]),  # resumed from step 3: step 4 logged again
        ([], []),  # file replaced by an empty one
        ([7], [0.5]),
    ]
    handed_out: list[tuple[np.ndarray, list[float]]] = []
    for steps, values in versions:
        delta = sender.delta(("", "train/loss"), np.array(steps, dtype=np.int64), np.array(values))
        if delta is None:
            assert (steps, values) == versions[2]
            continue
        got = receiver.apply(PlotDelta({("", "train/loss"): delta})).train
        assert (got.steps.tolist() if got is not None else []) == steps
        np.testing.assert_array_equal(got.values if got is not None else np.empty(0), np.array(values))
        if got is not None:
            handed_out.append((got.values, list(values)))
        # A curve handed out earlier (the plot may still draw it) never changes afterwards.
        for array, expected in handed_out:
            np.testing.assert_array_equal(array, np.array(expected))


def test_a_live_run_whose_engine_is_gone_turns_interrupted_without_a_write(tmp_path: Path) -> None:
    """Nothing is written when an engine dies (its lock is freed): the watcher has nothing to say,
    so a live run's status is re-read on the follower's short tick."""
    root = tmp_path / "runs"
    run_dir = make_run(root, "live", line(1, 2.0))
    atomic_write_json(run_dir / STATUS_JSON, {"state": "running", "step": 1, "max_steps": 100, "pid": os.getpid(),
                                              "host": socket.gethostname(), "heartbeat_at": time.time()})
    lock = RunLock(run_dir)
    lock.acquire()
    hub, plot = FollowerHub(), Plot()

    def changed(changes: list) -> None:
        plot.watcher_changed({c.run_dir for c in changes})
        hub.changed(changes)

    follower = RunFollower(run_dir, root, on_update=plot, live_poll=0.05, idle_poll=NO_TICK)
    try:
        with RunWatcher(root, changed) as watcher:
            hub.watching(watcher.covers)
            hub.add(follower)
            follower.start()
            plot.wait(lambda: plot.states[-1:] == ["running"], "the running state")
            wakes = len(plot.wakes)
            lock.release()
            plot.wait(lambda: plot.states[-1:] == ["interrupted"], "the interrupted state")
            assert len(plot.wakes) == wakes  # the watcher saw nothing: the tick found it
            follower.stop(timeout=WAIT)
    finally:
        lock.release()
