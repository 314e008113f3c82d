"""Concurrency: one engine per run, stale locks never block, readers never see half-written files.

- A second engine on a running run is refused with exit 2 naming the holder's pid and host, and
  the first engine goes on to finish undisturbed.
- A lock left by `kill -9` never blocks: the OS dropped the flock with the process.
- While an engine writes a checkpoint at every step (with retention deleting old ones), readers
  poll `runctl ls --json`, `runctl verify --json` and the files themselves: every read parses,
  every checkpoint under its final name is complete, temp files show only as `partial`.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import zipfile
from collections import Counter
from pathlib import Path

from support.cli import Engine, cli_env, run_cli, start_cli, wait_run_dir
from support.run_files import (
    checkpoint_files,
    events,
    manifest,
    records_by_name,
    status,
    strict_json,
    temp_files,
)
from support.waiting import wait_for


def sleepy_config(tmp: Path, max_steps: int, every: int, step_sleep: float) -> Path:
    config = tmp / "sleepy.yaml"
    config.write_text(
        'task: "support.tasks:factory"\n'
        f"max_steps: {max_steps}\n"
        f"model: {{hidden: 16, step_sleep: {step_sleep}}}\n"
        "data: {batch_size: 32}\n"
        "log: {every: 1}\n"
        "eval: {every: 25, batches: 2}\n"
        f"checkpoint: {{every: {every}, keep_last: 3, async: true}}\n")
    return config


def start(tmp: Path, config: Path, extra_env: dict[str, str] | None = None) -> Engine:
    env = cli_env(extra_env)
    return start_cli(["train", config, "--root", tmp / "runs"], cwd=tmp, log_dir=tmp / "logs", env=env)


def test_second_engine_on_a_run_is_refused(tmp_path: Path) -> None:
    first = start(tmp_path, sleepy_config(tmp_path, max_steps=1000, every=50, step_sleep=0.05))
    try:
        run_dir = wait_run_dir(tmp_path / "runs", first)
        wait_for(lambda: status(run_dir).get("state") == "running", timeout=120, what="the first engine running",
                 alive=first)
        wait_for(lambda: manifest(run_dir)["files"], timeout=120, what="a first checkpoint", alive=first)
        # (`extend` and `stop` on a running run are commands to its engine, not a second engine.)
        for args in (["resume", run_dir], ["resume", run_dir, "--from", "latest"]):
            second = run_cli(args, cwd=tmp_path)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2, f"{args[0]}: exit {second.returncode}: {second.stderr}"
            assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
            assert f"pid {first.pid}" in lines[0] and socket.gethostname() in lines[0], lines[0]
        assert first.running(), "the refused engine disturbed the first one"
        first.signal(signal.SIGTERM)  # the first engine still answers, and stops cleanly
        code = first.wait(timeout=120)
    finally:
        first.ensure_dead()
    assert code == 128 + signal.SIGTERM, first.stderr()
    assert status(run_dir).get("state") == "interrupted", status(run_dir)
    assert len(events(run_dir, "started")) == 1 and not events(run_dir, "resumed"), \
        "the refused engine wrote to the run's event log"


def test_lock_left_by_kill9_never_blocks(tmp_path: Path) -> None:
    """Killed while it held the lock, mid-checkpoint: `ls` says interrupted, resume takes the lock."""
    engine = start(tmp_path, sleepy_config(tmp_path, max_steps=30, every=5, step_sleep=0.0),
                   {"RUNCTL_TEST_SLOW_WRITE": "0.5"})
    try:
        run_dir = wait_run_dir(tmp_path / "runs", engine)
        wait_for(lambda: temp_files(run_dir), timeout=120, what="a checkpoint write", alive=engine)
        engine.signal(signal.SIGKILL)
        engine.wait(timeout=30)
    finally:
        engine.ensure_dead()
    assert (run_dir / "lock").exists() and status(run_dir).get("state") == "running"  # as the engine left it
    listing = strict_json(run_cli(["ls", tmp_path / "runs", "--json"], cwd=tmp_path).stdout)
    assert [r["state"] for r in listing["runs"]] == ["interrupted"], listing
    done = run_cli(["resume", run_dir], cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    assert status(run_dir).get("state") == "finished"


class Readers:
    """Reader threads hammering the run while the engine writes; each records what it saw."""

    def __init__(self, tmp: Path, run_dir: Path) -> None:
        self.tmp, self.run_dir = tmp, run_dir
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._guard, args=(fn,), daemon=True)
                        for fn in (self._files, self._ls, self._verify)]

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _guard(self, loop: object) -> None:
        try:
            while not self.stop.is_set():
                loop()  # type: ignore[operator]
                if loop != self._files:  # leave the CPU to the engine between two CLI polls
                    self.stop.wait(0.2)
        except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
            self.failures.append(f"{exc.__class__.__name__}: {exc}")

    def _files(self) -> None:
        """status.json and manifest.json always parse; a checkpoint under its final name is a whole zip."""
        for path in (self.run_dir / "status.json", self.run_dir / "checkpoints" / "manifest.json"):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                json.loads(data)
            except ValueError:
                self.failures.append(f"half-written {path.name}: {data[:200]!r}")
            self.counts[path.name] += 1
        for ckpt in checkpoint_files(self.run_dir):
            try:
                with zipfile.ZipFile(ckpt) as archive:
                    bad = archive.testzip()
            except FileNotFoundError:
                continue  # deleted by retention between the listing and the read
            except (zipfile.BadZipFile, OSError) as exc:
                self.failures.append(f"{ckpt.name} under its final name is not a whole zip: {exc}")
                continue
            if bad is not None:
                self.failures.append(f"{ckpt.name}: CRC error in {bad}")
            self.counts["checkpoint"] += 1

    def _ls(self) -> None:
        done = run_cli(["ls", self.run_dir.parent, "--json"], cwd=self.tmp)
        if done.returncode != 0:
            self.failures.append(f"ls exit {done.returncode}: {done.stderr}")
            return
        runs = strict_json(done.stdout)["runs"]
        # A checkpoint still in flight may be reported missing; a torn file would show up here.
        torn = [p for r in runs for p in r.get("problems") or []
                if any(word in p for word in ("status.json", "manifest.json", "run.yaml", "not valid",
                                              "unreadable", "corrupt"))]
        if [r["name"] for r in runs] != [self.run_dir.name] or runs[0].get("state") not in ("running", "finished") \
                or torn:
            self.failures.append(f"ls saw {runs}")
        self.counts["ls"] += 1

    def _verify(self) -> None:
        done = run_cli(["verify", self.run_dir, "--json"], cwd=self.tmp)
        document = strict_json(done.stdout)
        for name, record in records_by_name(document).items():
            partial = ".tmp." in name
            allowed = ("partial", "missing") if partial else ("ok", "missing", "unverified")
            # missing: renamed or deleted between listing and reading; unverified: renamed, not yet
            # in the manifest
            if record["status"] not in allowed:
                self.failures.append(f"verify: {name} {record['status']} ({record.get('reason')})")
        if done.returncode != 0:
            self.failures.append(f"verify exit {done.returncode}: {done.stderr}")
        self.counts["verify"] += 1


def test_readers_never_see_half_written_files(tmp_path: Path) -> None:
    config = sleepy_config(tmp_path, max_steps=100, every=1, step_sleep=0.02)
    engine = start(tmp_path, config)
    try:
        run_dir = wait_run_dir(tmp_path / "runs", engine)
        # Before status.json exists, ls rightly says "never started?": read from the start of training.
        wait_for(lambda: (run_dir / "status.json").exists(), timeout=120, what="status.json", alive=engine)
        with Readers(tmp_path, run_dir) as readers:
            code = engine.wait(timeout=300)
    finally:
        engine.ensure_dead()
    assert code == 0, engine.stderr()
    assert not readers.failures, readers.failures[:10]
    # the readers really overlapped the writes
    assert readers.counts["status.json"] >= 50 and readers.counts["checkpoint"] >= 20, readers.counts
    assert readers.counts["ls"] >= 3 and readers.counts["verify"] >= 3, readers.counts
    assert status(run_dir).get("state") == "finished"

