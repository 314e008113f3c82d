"""The files an engine writes for its readers: status.json, events.jsonl, metrics.jsonl.

status.json is rewritten atomically on every state change and by a heartbeat thread every ~2 s,
so a reader can tell a live engine from a killed one (stale heartbeat, free lock). The same thread
watches the published step (engine.stall): a step that stops advancing turns the state `stalled`,
with every thread's stack in a `stalled` event, and back to `running` when it moves again. events.jsonl
and metrics.jsonl are append-only, one complete JSON line per record; a metrics line may wait in
memory for a tenth of a second to be written with the next ones (METRICS_WRITE_S), never past
the next event, state change or heartbeat. Every event is also handed
to `on_event` (the in-process UI), from whichever thread produced it (the checkpoint writer
reports from its own thread), so all writes here hold one lock.

Only rank 0 writes these: other ranks get a RunLog with `enabled=False`. In a distributed run
(world size > 1) every rank, rank 0 included, also beats its own `ranks/<rank>.json` from the same
heartbeat thread (runs.ranks reads them), and rank 0 names the ranks that went silent in
status.json's `silent_ranks`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runctl.runs.atomic import JsonlAppender, append_jsonl
from runctl.runs.layout import EVENTS_JSONL, METRICS_JSONL, STATUS_JSON
from runctl.runs.ranks import rank_file, silent_ranks
from runctl.runs.store import RunStore

from runctl.console import tell

if TYPE_CHECKING:
    from runctl.engine.stall import StallWatch

EventCallback = Callable[[dict[str, Any]], None]
MetricsCallback = Callable[[dict[str, Any]], None]

HEARTBEAT_SECONDS = 2.0
# A metrics line logged within this long of the last write waits in memory for the next one, so a
# fast loop (digits_mlp logs ~130 lines a second) pays one write a tenth of a second instead of one
# a line. A line never waits longer than this while lines keep coming; when they stop (a long
# evaluation, a hung step), the next event, the heartbeat or the end of the run writes it.
METRICS_WRITE_S = 0.1
# States in which the engine is alive and its heartbeat keeps status.json fresh.
LIVE_STATES = ("running", "stalled")


class RunLog:
    def __init__(self, run_dir: Path, *, max_steps: int, step: int = 0, world_size: int = 1,
                 on_event: EventCallback | None = None, on_metrics: MetricsCallback | None = None,
                 enabled: bool = True, heartbeat: float = HEARTBEAT_SECONDS, rank: int = 0,
                 local_rank: int = 0, node_rank: int = 0, nodes: int = 1) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._on_event = on_event
        self._on_metrics = on_metrics
        self._heartbeat_interval = heartbeat
        self._lock = threading.RLock()
        self._stop_heartbeat = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        now = time.time()
        self._status: dict[str, Any] = {
            "state": "running", "pid": os.getpid(), "host": socket.gethostname(), "step": step,
            "max_steps": max_steps, "heartbeat_at": now, "started_at": now, "updated_at": now,
            "world_size": world_size, "nodes": nodes, "error": None, "checkpoint": None,
        }
        if world_size > 1:
            self._status["silent_ranks"] = []
        self._rank_path = rank_file(self.run_dir, rank) if world_size > 1 else None  # None: no beat file
        self._rank_beat: dict[str, Any] = {"rank": rank, "local_rank": local_rank, "node": node_rank,
                                           "host": self._status["host"], "pid": os.getpid(),
                                           "world_size": world_size}
        self._reported_ranks: set[int] = set()  # ranks whose stalled stacks rank 0 has logged
        self._callback_failed = False
        self._unwritable: set[Path] = set()  # logs whose last append failed (warned once)
        self._metrics_file = JsonlAppender(self.run_dir / METRICS_JSONL)
        self._metrics_write_at = 0.0  # monotonic time from which a new line is written at once
        self._store = RunStore(self.run_dir)
        self.stall: StallWatch | None = None
        self._stop_requested: Callable[[], bool] = lambda: False

    def watch_stalls(self, watch: StallWatch, stop_requested: Callable[[], bool]) -> None:
        """Let the heartbeat judge stalls with `watch`; `stop_requested` (called only while stalled,
        from the heartbeat thread) says whether a stop waits for the hung step to end."""
        self.stall = watch
        self._stop_requested = stop_requested

    # ---------------------------------------------------------------- status.json

    def start(self, checkpoint: str | None = None) -> None:
        """Mark the run running and start the heartbeat."""
        with self._lock:
            self._status["checkpoint"] = checkpoint
        if self._rank_path is not None and self.enabled:
            self._forget_ranks_beyond(int(self._status["world_size"]))
        self.set_state("running")
        if (self.enabled or self._rank_path is not None) and self._heartbeat_thread is None:
            self._heartbeat_thread = threading.Thread(target=self._beat, name="runctl-heartbeat", daemon=True)
            self._heartbeat_thread.start()

    def set_progress(self, step: int, max_steps: int) -> None:
        """Cheap, called every step: the heartbeat publishes it."""
        self._status["step"] = step
        self._status["max_steps"] = max_steps

    def set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._write_waiting_metrics()
            self._status["state"] = state
            self._status["error"] = error
            if state != "stalled":
                self._status.pop("stalled", None)
            self._write_status()
            if self._rank_path is not None:
                self._append(self._rank_path, self._write_rank_beat)

    def close(self) -> None:
        with self._lock:
            self._write_waiting_metrics()
            self._metrics_file.close()
        self._stop_heartbeat.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join()
            self._heartbeat_thread = None

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(self._heartbeat_interval):
            with self._lock:
                self._write_waiting_metrics()
                if self._status["state"] not in LIVE_STATES:
                    continue
                # A full disk must not kill the heartbeat; the next beat retries.
                if self._rank_path is not None:
                    self._append(self._rank_path, self._write_rank_beat)
                    if self.enabled:
                        self._status["silent_ranks"] = [s.to_json() for s in silent_ranks(self.run_dir, self._status)]
                self._append(self.run_dir / STATUS_JSON, self._write_status)
            if self.stall is not None:
                self._watch_stall(self.stall)

    def _watch_stall(self, watch: StallWatch) -> None:
        from runctl.engine.stall import innermost_frame, thread_stacks

        change = watch.observe(self._status["step"])
        seconds = round(watch.seconds_since_progress(), 1)
        with self._lock:
            if self._status["state"] not in LIVE_STATES:
                return
            if change == "stalled":
                stacks = thread_stacks()
                training = next((s for s in stacks if s["ident"] == watch.training_thread), None) \
                    or next((s for s in stacks if s["thread"] == "MainThread"), None)
                stack = training["stack"] if training else ""
                # status.json carries the training thread's stack (what `ls` shows); the event, all.
                self._status["stalled"] = {"since": time.time() - seconds, "after_s": round(watch.threshold(), 3),
                                           "thread": training["thread"] if training else None,
                                           "where": innermost_frame(stack), "stack": stack}
                if self._rank_path is not None:
                    # Only rank 0 writes events: the other ranks' stacks travel in their beat files.
                    self._rank_beat["stalled"] = {"where": innermost_frame(stack), "stacks": stacks}
                self._append(self.run_dir / STATUS_JSON, lambda: self.set_state("stalled"))
                self.event("stalled", seconds=seconds, after_s=round(watch.threshold(), 3), pid=os.getpid(),
                           rank=self._rank_beat["rank"], where=innermost_frame(stack), stacks=stacks)
            elif change == "unstalled":
                self._rank_beat.pop("stalled", None)
                self._reported_ranks.clear()
                self._append(self.run_dir / STATUS_JSON, lambda: self.set_state("running"))
                self.event("unstalled", seconds=seconds)
            if watch.stalled and self.enabled and self._rank_path is not None:
                self._report_other_ranks()
        if watch.stalled and watch.stop_pending(self._stop_requested()):
            self.event("warning", message=f"the step has not ended {watch.grace_s:g} s after the stop "
                                          "was asked: interrupting it")

    def _report_other_ranks(self) -> None:
        """Rank 0, while stalled: a `stalled` event with the stacks of each other rank that found
        itself stalled too (once per rank and stall)."""
        for rank in range(1, int(self._status["world_size"])):
            if rank in self._reported_ranks:
                continue
            try:
                beat = json.loads(rank_file(self.run_dir, rank).read_bytes())
            except (OSError, ValueError):
                continue
            stalled = beat.get("stalled") if isinstance(beat, dict) else None
            if isinstance(stalled, dict):
                self._reported_ranks.add(rank)
                self.event("stalled", step=beat.get("step"), rank=rank, pid=beat.get("pid"),
                           host=beat.get("host"), where=stalled.get("where"), stacks=stalled.get("stacks") or [])

    def _write_status(self) -> None:
        if not self.enabled:
            return
        now = time.time()
        self._status["heartbeat_at"] = now
        self._status["updated_at"] = now
        self._store.write_status(self._status)

    def _write_rank_beat(self) -> None:
        if self._rank_path is None:
            return
        self._store.write_rank_beat(self._rank_beat["rank"], {**self._rank_beat, "step": self._status["step"],
                                                              "state": self._status["state"],
                                                              "heartbeat_at": time.time()})

    def _forget_ranks_beyond(self, world_size: int) -> None:
        """An earlier attempt ran with more ranks: their beats say nothing about this one."""
        try:
            self._store.forget_rank_beats(beyond=world_size)
        except OSError:
            pass

    # ---------------------------------------------------------------- events.jsonl

    def event(self, name: str, step: int | None = None, **fields: Any) -> dict[str, Any]:
        """Append one event line and hand it to on_event; returns the event dict."""
        record: dict[str, Any] = {"time": time.time(), "event": name,
                                  "step": self._status["step"] if step is None else step}
        record.update(fields)
        return self.record_event(record)

    def record_event(self, record: dict[str, Any]) -> dict[str, Any]:
        """Log an event dict built elsewhere (the checkpoint manager's); fills in time and step."""
        record = {"time": time.time(), "step": self._status["step"], **record}
        if not self.enabled:
            return record
        with self._lock:
            self._write_waiting_metrics()  # a reader of both files sees the lines logged before it
            if record["event"] == "checkpoint" and record.get("file"):
                self._status["checkpoint"] = record["file"]
            self._append(self.run_dir / EVENTS_JSONL, lambda: append_jsonl(self.run_dir / EVENTS_JSONL, record))
            self._notify(self._on_event, record)
        return record

    # ---------------------------------------------------------------- metrics.jsonl

    def metrics(self, line: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._metrics_file.append(line, write=False)
            if time.monotonic() >= self._metrics_write_at:
                self._write_waiting_metrics()
            self._notify(self._on_metrics, line)

    def _write_waiting_metrics(self) -> None:
        """Write the metrics lines waiting in memory (the lock held)."""
        if not self._metrics_file.waiting:
            return
        try:
            self._metrics_file.flush()
        except OSError as exc:
            self._not_written(self._metrics_file.path, exc)
        else:
            self._metrics_write_at = time.monotonic() + METRICS_WRITE_S
            if self._unwritable:
                self._written_again(self._metrics_file.path)

    def _append(self, path: Path, append: Callable[[], None]) -> None:
        """A log line (or heartbeat) that cannot be written (disk full) is lost, not the run:
        training goes on, and the checkpoint writes, which fail the same way, are reported as
        checkpoint_failed. One warning per file until it is written again."""
        try:
            append()
        except OSError as exc:
            self._not_written(path, exc)
            return
        if self._unwritable:
            self._written_again(path)

    def _not_written(self, path: Path, exc: OSError) -> None:
        if path not in self._unwritable:
            self._unwritable.add(path)
            from runctl.runs.disk_full import disk_full_reason

            reason = disk_full_reason(exc, path.parent) or exc.strerror or exc
            tell(f"runctl: {path}: not written ({reason}); training "
                 "continues, and later lines are written once there is room\n")

    def _written_again(self, path: Path) -> None:
        if path in self._unwritable:
            self._unwritable.discard(path)
            tell(f"runctl: {path}: written again; the lines in between are lost\n")

    def _notify(self, callback: Callable[[dict[str, Any]], None] | None, record: dict[str, Any]) -> None:
        if callback is None:
            return
        try:
            callback(dict(record))
        except Exception as exc:  # noqa: BLE001 - a broken listener must not stop training
            if not self._callback_failed:
                self._callback_failed = True
                tell(f"runctl: event listener failed ({exc.__class__.__name__}: {exc}); "
                     "training continues, events are still written to the run folder\n")

