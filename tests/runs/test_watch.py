"""runs.watch: typed changes from a real watchdog observer, native (inotify) and polling.

Waits are bounded (a change must arrive within WAIT seconds); latency is measured in
bench/bench_metrics.py, not asserted here.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import runctl.runs.watch
from runctl.runs.atomic import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text
from runctl.runs.errors import RunctlError
from runctl.runs.watch import Change, ChangeKind, RunWatcher, diff_run, snapshot_run
from support.waiting import wait_for
from watchdog.observers import Observer

WAIT = 5.0
FAST_POLL = 0.05  # polling tests poll faster than the default to keep the suite quick


class Collector:
    """Gathers delivered changes; `expect` waits (bounded) for one matching change."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.batches: list[list[Change]] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()
        self._seen = 0

    def __call__(self, changes: list[Change]) -> None:
        with self._cond:
            self.changes.extend(changes)
            self.batches.append(list(changes))
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def expect(self, kind: ChangeKind, path: Path) -> list[Change]:
        """Wait for `kind` at `path`; returns the changes delivered since the previous expect."""

        def found() -> bool:
            return any(c.kind == kind and c.path == path for c in self.changes[self._seen :])

        with self._cond:
            assert self._cond.wait_for(found, timeout=WAIT), (
                f"no {kind} for {path} within {WAIT}s; got {self.changes[self._seen :]}"
            )
            batch = self.changes[self._seen :]
            self._seen = len(self.changes)
        return batch


@pytest.fixture(params=["native", "polling"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def watch(tmp_path: Path, mode: str) -> Iterator[Callable[[], tuple[RunWatcher, Collector]]]:
    watchers: list[RunWatcher] = []

    def start() -> tuple[RunWatcher, Collector]:
        collector = Collector()
        watcher = RunWatcher(tmp_path / "root", collector, poll=mode == "polling", poll_interval=FAST_POLL)
        watcher.start()
        watchers.append(watcher)
        assert watcher.mode == mode
        return watcher, collector

    (tmp_path / "root").mkdir()
    yield start
    for watcher in watchers:
        watcher.stop()


def new_run(run_dir: Path) -> None:
    run_dir.mkdir()
    atomic_write_text(run_dir / "run.yaml", "run_id: r\nmax_steps: 100\n")


def test_every_kind_of_change(watch: Callable[[], tuple[RunWatcher, Collector]], tmp_path: Path) -> None:
    root = tmp_path / "root"
    watcher, got = watch()
    run = root / "run-a"
    ckpts = run / "checkpoints"

    new_run(run)  # mkdir of ROOT/<new> after start
    got.expect(ChangeKind.RUN_ADDED, run)

    atomic_write_json(run / "status.json", {"state": "running", "step": 0})
    got.expect(ChangeKind.STATUS_CHANGED, run / "status.json")

    append_jsonl(run / "metrics.jsonl", {"step": 1, "train/loss": 2.0})
    got.expect(ChangeKind.METRICS_APPENDED, run / "metrics.jsonl")

    append_jsonl(run / "events.jsonl", {"event": "started", "step": 0})
    got.expect(ChangeKind.EVENTS_APPENDED, run / "events.jsonl")

    ckpts.mkdir()
    temp = ckpts / f"step_00000010.pt.tmp.{os.getpid()}"
    with open(temp, "wb") as f:  # a checkpoint being written: partial
        f.write(b"x" * 4096)
    got.expect(ChangeKind.CHECKPOINT_CHANGED, temp)

    os.replace(temp, ckpts / "step_00000010.pt")  # the rename into place
    got.expect(ChangeKind.CHECKPOINT_ADDED, ckpts / "step_00000010.pt")
    (with_added,) = [b for b in got.batches if any(c.kind == ChangeKind.CHECKPOINT_ADDED for c in b)]
    assert not [c for c in with_added if c.path == temp], "a temp renamed into place is no extra change"

    atomic_write_json(ckpts / "manifest.json", {"files": {}})
    batch = got.expect(ChangeKind.CHECKPOINT_CHANGED, ckpts / "manifest.json")
    assert not [c for c in batch if ".tmp." in c.path.name], "manifest temps are not reported"

    atomic_write_bytes(ckpts / "step_00000010.pt", b"y" * 5000)
    got.expect(ChangeKind.CHECKPOINT_CHANGED, ckpts / "step_00000010.pt")

    (ckpts / "step_00000010.pt").unlink()
    got.expect(ChangeKind.CHECKPOINT_REMOVED, ckpts / "step_00000010.pt")

    atomic_write_text(run / "run.yaml", "run_id: r\nmax_steps: 200\n")
    got.expect(ChangeKind.RUN_CHANGED, run / "run.yaml")

    # A status temp left behind (a writer killed mid-save) is no change of its own.
    (run / f"status.json.tmp.{os.getpid()}").write_text("{")
    append_jsonl(run / "metrics.jsonl", {"step": 2, "train/loss": 1.0})
    batch = got.expect(ChangeKind.METRICS_APPENDED, run / "metrics.jsonl")
    assert [c.kind for c in batch] == [ChangeKind.METRICS_APPENDED]

    shutil.rmtree(run)
    got.expect(ChangeKind.RUN_REMOVED, run)

    assert threading.main_thread().name not in got.threads
    assert watcher.known_runs() == []


def test_diff_of_a_removed_run_is_one_change(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_00000001.pt").write_bytes(b"x")
    append_jsonl(run / "metrics.jsonl", {"step": 1})
    before = snapshot_run(run)
    shutil.rmtree(run)
    assert diff_run(run, before, snapshot_run(run)) == [Change(ChangeKind.RUN_REMOVED, run, run)]
    assert diff_run(run, None, before) == [Change(ChangeKind.RUN_ADDED, run, run)]
    assert diff_run(run, before, before) == []


def test_diff_of_a_checkpoint_save(tmp_path: Path) -> None:
    run = tmp_path / "run"
    new_run(run)
    ckpts = run / "checkpoints"
    ckpts.mkdir()
    before = snapshot_run(run)
    temp = ckpts / "step_00000002.pt.tmp.99"
    temp.write_bytes(b"partial")
    (ckpts / "manifest.json.tmp.99").write_text("{")
    writing = snapshot_run(run)
    assert diff_run(run, before, writing) == [Change(ChangeKind.CHECKPOINT_CHANGED, run, temp)]
    os.replace(temp, ckpts / "step_00000002.pt")
    os.replace(ckpts / "manifest.json.tmp.99", ckpts / "manifest.json")
    assert diff_run(run, writing, snapshot_run(run)) == [
        Change(ChangeKind.CHECKPOINT_ADDED, run, ckpts / "step_00000002.pt"),
        Change(ChangeKind.CHECKPOINT_CHANGED, run, ckpts / "manifest.json"),
    ]


def test_runs_present_at_start_moved_in_and_out(
    watch: Callable[[], tuple[RunWatcher, Collector]], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    old = root / "old"
    new_run(old)
    nested = root / "notes" / "nested"
    (root / "notes").mkdir()
    new_run(nested)  # a run deeper down, as runs.discovery finds it for a listing
    too_deep = root / "a" / "b" / "c" / "d" / "too-deep"
    too_deep.parent.mkdir(parents=True)
    new_run(too_deep)  # deeper than a listing looks (depth 4)
    (root / ".trash").mkdir()
    new_run(root / ".trash" / "hidden")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    new_run(elsewhere / "moved")
    watcher, got = watch()
    assert watcher.known_runs() == [nested, old]

    atomic_write_json(old / "status.json", {"state": "finished"})
    batch = got.expect(ChangeKind.STATUS_CHANGED, old / "status.json")
    assert ChangeKind.RUN_ADDED not in [c.kind for c in batch]

    atomic_write_json(nested / "status.json", {"state": "running"})
    batch = got.expect(ChangeKind.STATUS_CHANGED, nested / "status.json")
    assert ChangeKind.RUN_ADDED not in [c.kind for c in batch]

    atomic_write_json(too_deep / "status.json", {"state": "running"})
    atomic_write_json(root / ".trash" / "hidden" / "status.json", {"state": "running"})
    os.rename(elsewhere / "moved", root / "moved")  # a run folder moved in from outside
    batch = got.expect(ChangeKind.RUN_ADDED, root / "moved")
    assert all(c.run_dir in (old, nested, root / "moved") for c in batch)

    os.rename(old, elsewhere / "old")  # moved out: gone
    got.expect(ChangeKind.RUN_REMOVED, old)
    assert watcher.known_runs() == [root / "moved", nested]
    assert all(c.run_dir in (old, nested, root / "moved") for c in got.changes)


def test_the_root_itself_can_be_a_run(watch: Callable[[], tuple[RunWatcher, Collector]], tmp_path: Path) -> None:
    root = tmp_path / "root"
    atomic_write_text(root / "run.yaml", "run_id: r\n")
    watcher, got = watch()
    assert watcher.known_runs() == [root]
    append_jsonl(root / "metrics.jsonl", {"step": 1, "train/loss": 1.0})
    batch = got.expect(ChangeKind.METRICS_APPENDED, root / "metrics.jsonl")
    assert {c.run_dir for c in batch} == {root}


def test_a_symlink_loop_under_the_root_is_harmless(
    watch: Callable[[], tuple[RunWatcher, Collector]], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir()
    (root / "a" / "back").symlink_to("..")
    (root / "self").symlink_to(".")
    watcher, got = watch()
    new_run(root / "run")
    got.expect(ChangeKind.RUN_ADDED, root / "run")
    assert watcher.known_runs() == [root / "run"]


def test_a_failing_callback_does_not_stop_the_watcher(
    watch: Callable[[], tuple[RunWatcher, Collector]], tmp_path: Path
) -> None:
    watcher, got = watch()
    calls = []

    def flaky(changes: list[Change]) -> None:
        calls.append(changes)
        if len(calls) == 1:
            raise RuntimeError("UI bug")
        got(changes)

    watcher.callback = flaky
    new_run(tmp_path / "root" / "a")
    wait_for(lambda: calls, WAIT, "the first change to reach the callback")
    new_run(tmp_path / "root" / "b")
    got.expect(ChangeKind.RUN_ADDED, tmp_path / "root" / "b")


@pytest.mark.parametrize("where, code", [("start", errno.ENOSPC), ("constructor", errno.EMFILE)])
def test_falls_back_to_polling_when_the_native_observer_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, code: int
) -> None:
    def refuse(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    if where == "start":  # inotify_add_watch: max_user_watches reached
        monkeypatch.setattr(Observer, "start", refuse)
    else:  # inotify_init: max_user_instances reached
        monkeypatch.setattr(runctl.runs.watch, "Observer", refuse)
    before = set(threading.enumerate())
    got = Collector()
    watcher = RunWatcher(tmp_path, got, poll_interval=FAST_POLL)
    try:
        watcher.start()
        assert watcher.mode == "polling"
        assert watcher.fallback_reason is not None and os.strerror(code) in watcher.fallback_reason
        new_run(tmp_path / "r")
        got.expect(ChangeKind.RUN_ADDED, tmp_path / "r")
    finally:
        watcher.stop()
    assert set(threading.enumerate()) - before == set(), "the failed native observer left a thread"


def test_files_that_are_not_run_files_are_no_change(
    watch: Callable[[], tuple[RunWatcher, Collector]], tmp_path: Path
) -> None:
    run = tmp_path / "root" / "run"
    new_run(run)
    watcher, got = watch()
    (run / "control").mkdir()
    atomic_write_json(run / "control" / "1-a.json", {"command": "stop"})
    (run / "wandb" / "files").mkdir(parents=True)
    (run / "wandb" / "files" / "status.json").write_text("{}")
    (run / "lock").write_text("")
    (tmp_path / "root" / "notes.txt").write_text("hello")
    append_jsonl(run / "metrics.jsonl", {"step": 1})
    batch = got.expect(ChangeKind.METRICS_APPENDED, run / "metrics.jsonl")
    assert [c.kind for c in batch] == [ChangeKind.METRICS_APPENDED]


def test_start_and_stop_are_idempotent_and_stop_joins(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    for poll in (False, True):
        watcher = RunWatcher(tmp_path, lambda changes: None, poll=poll, poll_interval=FAST_POLL)
        watcher.start()
        watcher.start()
        assert watcher.running
        watcher.stop()
        watcher.stop()
        assert not watcher.running
        # Restartable after a stop.
        watcher.start()
        watcher.stop()
    assert set(threading.enumerate()) - before == set()


def test_a_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunctlError, match="nope"):
        RunWatcher(tmp_path / "nope", lambda changes: None).start()


def test_watching_imports_neither_textual_nor_torch() -> None:
    code = (
        "import sys, runctl.runs.watch, runctl.runs.metrics, runctl.runs.events, runctl.runs.downsample\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'torch'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
