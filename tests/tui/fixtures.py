"""Run directories written by hand per the run-directory contract (docs/ARCHITECTURE.md, "Files the
engine writes"), with fixed timestamps, for UI tests and snapshots. No torch: checkpoints are small
zip files with a manifest entry (enough for listing; integrity tests plant their own damage).
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
from runctl.runs.layout import (
    CHECKPOINT_DIR,
    EVENTS_JSONL,
    MANIFEST_JSON,
    METRICS_JSONL,
    RUN_YAML,
    STATUS_JSON,
    checkpoint_name,
)
from runctl.runs.lock import RunLock

# 2025-11-22 08:53:20 UTC: every timestamp in fixtures counts from here; tests pass now=FIXED_NOW.
FIXED_NOW = 1_763_801_600.0


def fixed_now() -> float:
    return FIXED_NOW


def tiny_config(max_steps: int = 40, **sections: Any) -> dict[str, Any]:
    """A resolved digits_mlp config small enough to train in about a second on CPU."""
    from runctl.engine.config import load_config

    cfg = load_config("digits_mlp", [
        f"max_steps={max_steps}", "model.hidden=16", "model.depth=1", "data.batch_size=32",
        "log.every=5", "eval.every=20", "eval.batches=2", "checkpoint.every=10", "checkpoint.async=false",
        "schedule.warmup_steps=2",
    ])
    for key, value in sections.items():
        cfg[key] = value
    return cfg


def write_tiny_config(path: Path, max_steps: int = 40) -> Path:
    """The tiny config as a YAML file a user could pass to `n` or `runctl train`."""
    cfg = tiny_config(max_steps)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


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
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True)
    created_at = FIXED_NOW - updated_ago - step * step_time - 30
    cfg = {"task": "digits_mlp", "seed": 0, "max_steps": max_steps,
           "checkpoint": {"every": 10**9, "keep_last": 3, "keep_best": True, "async": False},
           "run_id": name, "name": name, "created_at": created_at, "parent": None, "extensions": []}
    (run_dir / RUN_YAML).write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
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
        file_name = checkpoint_name(s)
        (run_dir / CHECKPOINT_DIR / file_name).write_bytes(data)
        kind = "final" if s == max_steps else "periodic"
        entries[file_name] = {"step": s, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                              "saved_at": created_at + s * step_time, "kind": kind}
        events.append({"time": created_at + s * step_time, "event": "checkpoint", "step": s,
                       "file": file_name, "kind": kind, "bytes": len(data)})
    manifest: dict[str, Any] = {"files": entries}
    if best is not None:
        manifest["best"] = best
    (run_dir / CHECKPOINT_DIR / MANIFEST_JSON).write_text(json.dumps(manifest), encoding="utf-8")
    if state in ("stopped", "crashed", "finished"):
        events.append({"time": updated_at, "event": state, "step": step,
                       **({"error": error, "traceback": f"Traceback ...\n{error}"} if error else {})})
    status = {"state": state, "pid": 4242, "host": "gpu-box", "step": step, "max_steps": max_steps,
              # a running run must have a fresh heartbeat (real clock) and a held lock to look running
              "heartbeat_at": updated_at, "started_at": created_at, "updated_at": updated_at,
              "world_size": 1, "error": error,
              "checkpoint": checkpoint_name(max(checkpoints)) if checkpoints else None}
    (run_dir / STATUS_JSON).write_text(json.dumps(status), encoding="utf-8")
    (run_dir / METRICS_JSONL).write_text("".join(json.dumps(m) + "\n" for m in metrics), encoding="utf-8")
    (run_dir / EVENTS_JSONL).write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return run_dir


def make_live(run_dir: Path) -> RunLock:
    """Make a 'running' fixture look alive to readers: a held lock and a fresh heartbeat.

    The caller releases the returned lock. The heartbeat uses the real clock because runs.status
    judges staleness by it; what the UI shows ("updated ago") comes from updated_at, which stays fixed.
    """
    import time

    status = json.loads((run_dir / STATUS_JSON).read_text())
    status["heartbeat_at"] = time.time()
    (run_dir / STATUS_JSON).write_text(json.dumps(status), encoding="utf-8")
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


def write_task_config(path: Path, *, max_steps: int, step_sleep: float = 0.0, crash_at: int | None = None,
                      checkpoint_every: int = 10**6) -> Path:
    """A config for tests/tui/tui_test_task.py: sleeps each step, optionally crashes at a step."""
    cfg: dict[str, Any] = {
        "task": "tui_test_task:factory", "seed": 0, "max_steps": max_steps,
        "model": {"step_sleep": step_sleep}, "data": {"batch_size": 32},
        "log": {"every": 1}, "eval": {"every": 10**6, "batches": 1},
        "checkpoint": {"every": checkpoint_every, "keep_last": 5, "keep_best": False, "async": False},
        "schedule": {"name": "constant", "warmup_steps": 0},
        "loss": {"crash": 0},
    }
    if crash_at is not None:
        cfg["curriculum"] = [{"at_step": crash_at, "set": {"loss.crash": 1}}]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path
