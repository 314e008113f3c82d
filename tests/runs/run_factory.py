"""Real checkpoints and run directories for the runs/ tests, written the way the engine writes them:
`torch.save({"format": "runctl/1", ...})` plus a manifest entry through runs.manifest."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from runctl.runs.atomic import atomic_write_json, atomic_write_text
from runctl.runs.layout import CHECKPOINT_DIR, METRICS_JSONL, STATUS_JSON, checkpoint_name
from runctl.runs.manifest import ManifestEntry, read_manifest, write_manifest


def checkpoint_state(step: int, hidden: int = 8, **overrides: Any) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(step)
    state = {
        "format": "runctl/1", "run_id": "r", "step": step, "config": {"max_steps": 100},
        "model": {"layer.weight": torch.randn(hidden, 4, generator=generator),
                  "layer.bias": torch.zeros(hidden)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        "scheduler": {}, "rng": {"torch": torch.get_rng_state()},
        "data": {"epoch": 0, "position": step * 4},
    }
    state.update(overrides)
    return state


def write_checkpoint(path: Path, step: int, state: dict[str, Any] | None = None, **overrides: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state if state is not None else checkpoint_state(step, **overrides), path)
    return path


def manifest_entry_for(path: Path, step: int, kind: str = "periodic") -> ManifestEntry:
    data = path.read_bytes()
    return ManifestEntry(step=step, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                         saved_at=time.time(), kind=kind)


def record_in_manifest(path: Path, step: int, kind: str = "periodic") -> ManifestEntry:
    manifest = read_manifest(path.parent)
    entry = manifest_entry_for(path, step, kind)
    manifest.files[path.name] = entry
    write_manifest(path.parent, manifest)
    return entry


def save_checkpoint(run_dir: Path, step: int, kind: str = "periodic", **overrides: Any) -> Path:
    """A checkpoint in the run's checkpoints/ folder, listed in its manifest."""
    path = write_checkpoint(run_dir / CHECKPOINT_DIR / checkpoint_name(step), step, **overrides)
    record_in_manifest(path, step, kind)
    return path


def make_run(root: Path, name: str, *, state: str = "finished", step: int = 100, max_steps: int = 100,
             every: int = 50, keep_last: int | None = 3, checkpoint_steps: tuple[int, ...] = (50, 100),
             losses: tuple[float, ...] = (2.0, 1.5, 1.25), heartbeat_age: float = 0.0,
             error: str | None = None) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"run_id": name, "name": name, "created_at": time.time() - 3600, "parent": None,
              "max_steps": max_steps, "task": "digits_mlp",
              "checkpoint": {"every": every, "keep_last": keep_last, "keep_best": True, "async": True},
              "eval": {"every": 50, "batches": 2, "metric": "val/loss", "mode": "min"}}
    atomic_write_text(run_dir / "run.yaml", json.dumps(config))  # JSON is valid YAML
    now = time.time()
    atomic_write_json(run_dir / STATUS_JSON, {
        "state": state, "pid": 1, "host": "h", "step": step, "max_steps": max_steps,
        "heartbeat_at": now - heartbeat_age, "started_at": now - 3600, "updated_at": now - heartbeat_age,
        "world_size": 1, "error": error, "checkpoint": None})
    with open(run_dir / METRICS_JSONL, "w") as f:
        for i, loss in enumerate(losses):
            f.write(json.dumps({"step": (i + 1) * 10, "time": now, "train/loss": loss, "lr": 1e-3}) + "\n")
        f.write(json.dumps({"step": len(losses) * 10, "time": now, "val/loss": 1.75, "val/acc": 0.5}) + "\n")
    for ckpt_step in checkpoint_steps:
        kind = "final" if state == "finished" and ckpt_step == max_steps else "periodic"
        save_checkpoint(run_dir, ckpt_step, kind)
    return run_dir


class _Reduce:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint does on load."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def malicious_checkpoint(path: Path, payload: Any, protocol: int = 2) -> Path:
    """A torch-style zip (archive/data.pkl, version, byteorder, a tensor record) whose data.pkl
    runs `payload` (a _Reduce) when unpickled by an unsafe loader."""
    state = {"format": "runctl/1", "step": 1, "model": payload}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(state, protocol=protocol))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", b"\x00" * 64)
        archive.writestr("archive/version", "3\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def reduce_call(func: Any, *args: Any) -> _Reduce:
    return _Reduce(func, args)


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def member_data_offset(path: Path, suffix: str) -> tuple[int, int]:
    """(offset of the first data byte, size) of the zip record whose name ends with `suffix`."""
    with zipfile.ZipFile(path) as archive:
        member = next(m for m in archive.infolist() if m.filename.endswith(suffix))
    raw = path.read_bytes()
    header = member.header_offset
    name_len = int.from_bytes(raw[header + 26:header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28:header + 30], "little")
    return header + 30 + name_len + extra_len, member.compress_size
