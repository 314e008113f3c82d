"""Run folders for the runs list's tests and snapshots, written by hand per the run-directory
contract (docs/ARCHITECTURE.md, "Files the engine writes") on a fixed clock. No torch: checkpoints
are small zip files with a manifest entry (enough for listing; integrity tests plant their own damage).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from runctl.runs import layout
from runctl.runs.lock import RunLock
from runctl.tui.app import RunctlApp, make_app

# 2025-11-22 08:53:20 UTC: every timestamp in fixtures counts from here; tests pass now=FIXED_NOW.
FIXED_NOW = 1_763_801_600.0


def fixed_now() -> float:
    return FIXED_NOW


def _fake_checkpoint(step: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", f"step {step}".encode())
    return buf.getvalue()


def write_run(
    root: Path,
    name: str,
    *,
    state: str | None,
    step: int = 0,
    max_steps: int = 100,
    loss_start: float = 2.3,
    checkpoints: Iterable[int] = (),
    best: dict[str, Any] | None = None,
    step_time: float = 0.05,
    updated_ago: float = 60.0,
    error: str | None = None,
    log_every: int = 10,
) -> Path:
    """One run folder as the engine leaves it. state=None: created but never started (no status)."""
    run_dir = root / name
    (run_dir / layout.CHECKPOINT_DIR).mkdir(parents=True)
    created_at = FIXED_NOW - updated_ago - step * step_time - 30
    cfg = {"task": "digits_mlp", "seed": 0, "max_steps": max_steps,
           "checkpoint": {"every": 10**9, "keep_last": 3, "keep_best": True, "async": False},
           "run_id": name, "name": name, "created_at": created_at, "parent": None, "extensions": []}
    (run_dir / layout.RUN_YAML).write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    if state is None:
        return run_dir

    updated_at = FIXED_NOW - updated_ago
    metrics = []
    events = [{"time": created_at, "event": "started", "step": 0}]
    for s in range(log_every, step + 1, log_every):
        t = created_at + s * step_time
        loss = loss_start / (1 + 0.05 * s)
        metrics.append({"step": s, "time": t, "train/loss": round(loss, 6), "lr": 1e-3,
                        "grad_norm": 0.5, "step_time": step_time, "samples_per_s": 32 / step_time})
    entries = {}
    for s in checkpoints:
        data = _fake_checkpoint(s)
        file_name = layout.checkpoint_name(s)
        (run_dir / layout.CHECKPOINT_DIR / file_name).write_bytes(data)
        kind = "final" if s == max_steps else "periodic"
        entries[file_name] = {"step": s, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                              "saved_at": created_at + s * step_time, "kind": kind}
        events.append({"time": created_at + s * step_time, "event": "checkpoint", "step": s,
                       "file": file_name, "kind": kind, "bytes": len(data)})
    manifest: dict[str, Any] = {"files": entries}
    if best is not None:
        manifest["best"] = best
    (run_dir / layout.CHECKPOINT_DIR / layout.MANIFEST_JSON).write_text(json.dumps(manifest), encoding="utf-8")
    if state in ("stopped", "crashed", "finished"):
        events.append({"time": updated_at, "event": state, "step": step,
                       **({"error": error, "traceback": f"Traceback ...\n{error}"} if error else {})})
    status = {"state": state, "pid": 4242, "host": "gpu-box", "step": step, "max_steps": max_steps,
              # a running run must have a fresh heartbeat (real clock) and a held lock to look running
              "heartbeat_at": updated_at, "started_at": created_at, "updated_at": updated_at,
              "world_size": 1, "error": error,
              "checkpoint": layout.checkpoint_name(max(checkpoints)) if checkpoints else None}
    (run_dir / layout.STATUS_JSON).write_text(json.dumps(status), encoding="utf-8")
    (run_dir / layout.METRICS_JSONL).write_text("".join(json.dumps(m) + "\n" for m in metrics), encoding="utf-8")
    (run_dir / layout.EVENTS_JSONL).write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return run_dir


def make_live(run_dir: Path) -> RunLock:
    """Make a 'running' fixture look alive to readers: a held lock and a fresh heartbeat.

    The caller releases the returned lock. The heartbeat uses the real clock because runs.status
    judges staleness by it; what the UI shows ("updated ago") comes from updated_at, which stays fixed.
    """
    import time

    status = json.loads((run_dir / layout.STATUS_JSON).read_text())
    status["heartbeat_at"] = time.time()
    (run_dir / layout.STATUS_JSON).write_text(json.dumps(status), encoding="utf-8")
    lock = RunLock(run_dir)
    lock.acquire()
    return lock


def every_state_root(root: Path) -> tuple[Path, RunLock]:
    """A root with one run in every state (and one never started); returns (root, the live lock)."""
    root.mkdir(parents=True, exist_ok=True)
    running = write_run(root, "gpt-small-lr3e-4", state="running", step=420, max_steps=1000,
                        checkpoints=[250], best={"metric": "val/loss", "value": 1.4821, "step": 400},
                        step_time=0.12, updated_ago=2)
    write_run(root, "mlp-baseline", state="finished", step=1000, max_steps=1000,
              checkpoints=[500, 750, 1000], best={"metric": "val/loss", "value": 0.1034, "step": 1000},
              loss_start=1.9, updated_ago=3 * 3600)
    write_run(root, "cnn-aug", state="stopped", step=300, max_steps=2000, checkpoints=[250, 300],
              best={"metric": "val/loss", "value": 0.3312, "step": 300}, updated_ago=25 * 60)
    # status says running, but nobody holds the lock: killed with kill -9
    write_run(root, "vit-patch4", state="running", step=730, max_steps=2000, checkpoints=[500],
              best={"metric": "val/loss", "value": 0.5127, "step": 700}, updated_ago=2 * 86400)
    write_run(root, "gpt-nan", state="crashed", step=150, max_steps=1000, checkpoints=[100],
              error="RuntimeError: loss is nan at step 151", updated_ago=40)
    write_run(root, "branch-not-started", state=None, max_steps=500)
    return root, make_live(running)


def write_many_runs(root: Path, count: int) -> Path:
    """`count` finished runs (for the 1,000-run first-paint measurement)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_run(root, f"run-{i:04d}", state="finished", step=200, max_steps=200, checkpoints=[100, 200],
                  best={"metric": "val/loss", "value": 0.5 + (i % 17) / 100, "step": 200},
                  updated_ago=60 + i)
    return root


def make_test_app(root: Path, tmp_path: Path, keymap: Path | None = None, watch: bool = False) -> RunctlApp:
    """The app on these runs' clock, with no user keymap unless `keymap`, no file watcher unless `watch`."""
    return make_app(root, watch=watch, now=fixed_now, keymap_path=keymap or tmp_path / "no-keys.yaml")


def watched_app_with_one_run(tmp_path: Path, name: str) -> tuple[Path, RunctlApp]:
    """(root, app): a root holding one stopped run (20 of 100 steps, a checkpoint at 20) and the app
    on it with its file watcher, for the tests of what the list does when the run's files change."""
    root = tmp_path / "runs"
    root.mkdir()
    write_run(root, name, state="stopped", step=20, max_steps=100, checkpoints=[20])
    return root, make_test_app(root, tmp_path, watch=True)
