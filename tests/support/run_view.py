"""Run folders for the run view's tests and snapshots, written per the run-directory contract on a
fixed clock (its own: the snapshots show times relative to it).

Checkpoints are real `torch.save` zip files with the keys a resume needs and a manifest carrying
their true sha256, so full and deep verification judge them as they would an engine's files.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml
from runctl.engine.config import load_config
from runctl.engine.schedule import Schedule
from runctl.runs.layout import (
    CHECKPOINT_DIR,
    EVENTS_JSONL,
    METRICS_JSONL,
    RUN_YAML,
    STATUS_JSON,
    checkpoint_name,
)
from runctl.runs.manifest import Manifest, ManifestEntry, write_manifest
from runctl.tui.app import RunctlApp, make_app

# 2026-11-22 00:00:00 UTC: every time in these runs is relative to it.
FIXED_NOW = 1_795_305_600.0
CREATED_AT = FIXED_NOW - 3600.0

_checkpoint_bytes: dict[tuple[int, int], bytes] = {}


def checkpoint_bytes(step: int, width: int = 4) -> bytes:
    """A small, valid runctl checkpoint for `step` (cached: torch.save is the slow part).

    `width` sets the model's layer size: a different width is another model (incompatible)."""
    if (step, width) not in _checkpoint_bytes:
        import torch

        state = {
            "format": "runctl/1", "run_id": "fixture", "step": step, "config": {},
            "model": {"layer.weight": torch.full((width, 3), float(step)), "layer.bias": torch.zeros(width)},
            "optimizer": {"state": {}, "param_groups": []}, "scheduler": {},
            "rng": {"python": None}, "data": {"epoch": 0, "position": step},
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _checkpoint_bytes[(step, width)] = buffer.getvalue()
    return _checkpoint_bytes[(step, width)]


def loss_at(step: int) -> float:
    return 2.3 * math.exp(-step / 120.0) + 0.15 + 0.04 * math.sin(step / 7.0)


def write_run(
    root: Path,
    name: str = "alpha",
    *,
    state: str = "interrupted",
    step: int = 300,
    max_steps: int = 400,
    every: int = 100,
    keep_last: int = 5,
    checkpoints: tuple[int, ...] = (100, 200, 300),
    corrupt: tuple[int, ...] = (),
    missing: tuple[int, ...] = (),
    other_model: tuple[int, ...] = (),
    parent: dict[str, Any] | None = None,
    log_every: int = 10,
) -> Path:
    """A run directory `root/name`; `corrupt` steps are truncated, `missing` steps are never written,
    `other_model` steps hold a differently shaped model (intact files, but incompatible)."""
    run_dir = Path(root) / name
    (run_dir / CHECKPOINT_DIR).mkdir(parents=True)
    cfg = load_config("digits_mlp", [f"max_steps={max_steps}", f"checkpoint.every={every}",
                                     f"checkpoint.keep_last={keep_last}", f"log.every={log_every}",
                                     "eval.every=100", "schedule.warmup_steps=20", "device=cpu"])
    run_yaml = {**cfg, "run_id": name, "name": name, "created_at": CREATED_AT, "parent": parent,
                "extensions": []}
    (run_dir / RUN_YAML).write_text(yaml.safe_dump(run_yaml, sort_keys=False), encoding="utf-8")

    def at(s: int) -> float:
        return CREATED_AT + 10.0 * s

    schedule = Schedule.from_config(run_yaml)
    lines = []
    for s in range(log_every, step + 1, log_every):
        lines.append({"step": s, "time": at(s), "train/loss": loss_at(s), "lr": schedule.lr(s - 1),
                      "grad_norm": 1.0, "step_time": 0.01, "samples_per_s": 6400.0})
        if s % 100 == 0:
            lines.append({"step": s, "time": at(s), "val/loss": loss_at(s) + 0.1, "val/acc": 0.9})
    (run_dir / METRICS_JSONL).write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")

    events: list[dict[str, Any]] = [{"time": at(0), "event": "started", "step": 0}]
    if parent:
        events.append({"time": at(0), "event": "branched", "step": 0, "parent": parent["run_id"],
                       "checkpoint": parent["checkpoint"]})
    manifest = Manifest()
    for s in checkpoints:
        if s in missing:
            continue
        data = checkpoint_bytes(s, width=5 if s in other_model else 4)
        file_name = checkpoint_name(s)
        path = run_dir / CHECKPOINT_DIR / file_name
        kind = "final" if s == max_steps else ("interrupt" if state == "interrupted" and s == step
                                                and s % every else "periodic")
        manifest.files[file_name] = ManifestEntry(step=s, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                                  saved_at=at(s), kind=kind)
        path.write_bytes(data[: len(data) // 2] if s in corrupt else data)
        os.utime(path, (at(s), at(s)))
        events.append({"time": at(s), "event": "checkpoint", "step": s, "file": file_name, "kind": kind,
                       "bytes": len(data)})
    write_manifest(run_dir / CHECKPOINT_DIR, manifest)
    if state == "interrupted":
        events.append({"time": at(step), "event": "interrupted", "step": step, "signal": "SIGKILL"})
    elif state == "crashed":
        events.append({"time": at(step), "event": "crashed", "step": step, "error": "RuntimeError: boom",
                       "traceback": "Traceback (most recent call last):\n  File \"trainer.py\", line 1\n"
                                    "RuntimeError: boom"})
    elif state in ("finished", "stopped"):
        events.append({"time": at(step), "event": state, "step": step})
    (run_dir / EVENTS_JSONL).write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")

    status = {"state": state, "pid": 12345, "host": "fixture-host", "step": step, "max_steps": max_steps,
              "heartbeat_at": at(step), "started_at": at(0), "updated_at": at(step), "world_size": 1,
              "error": "RuntimeError: boom" if state == "crashed" else None,
              "checkpoint": checkpoint_name(max(checkpoints)) if checkpoints else None}
    (run_dir / STATUS_JSON).write_text(json.dumps(status), encoding="utf-8")
    return run_dir


def append_metric(run_dir: Path, step: int, loss: float) -> None:
    with open(run_dir / METRICS_JSONL, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "time": CREATED_AT + 10.0 * step, "train/loss": loss, "lr": 1e-3}) + "\n")


def make_test_app(root: Path, tmp_path: Path, watch: bool = False) -> RunctlApp:
    """The app on these runs' clock, with no user keymap and no file watcher unless `watch`."""
    return make_app(root, watch=watch, now=lambda: FIXED_NOW, keymap_path=tmp_path / "no-keys.yaml")
