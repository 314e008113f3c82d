"""Checkpoints for the tests: real ones written the way the engine writes them
(`torch.save({"format": "runctl/1", ...})` plus a manifest entry through runs.manifest), hostile and
damaged ones, and loading and comparing them with `torch.load(weights_only=True)`."""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from runctl.runs.layout import CHECKPOINT_DIR, checkpoint_name
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


class _Reduce:
    """Pickles as a call of `func(*args)`: what a malicious checkpoint does on load."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def reduce_call(func: Any, *args: Any) -> _Reduce:
    return _Reduce(func, args)


def malicious_checkpoint(path: Path, payload: Any, protocol: int = 2) -> Path:
    """A torch-style zip (archive/data.pkl, version, byteorder, a tensor record) whose data.pkl
    runs `payload` (a reduce_call) when unpickled by an unsafe loader."""
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


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def final_checkpoint(run_dir: Path, step: int) -> dict[str, Any]:
    """The state of the run's checkpoint at `step`; fails naming what the folder holds instead."""
    path = run_dir / "checkpoints" / f"step_{step:08d}.pt"
    assert path.is_file(), f"{path} missing; have {sorted(p.name for p in path.parent.glob('*'))}"
    return load_state(path)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists to {"a.b.0": leaf}."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list | tuple):
        out = {}
        for index, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): tree}


def tensors_of(tree: Any) -> dict[str, torch.Tensor]:
    """Every tensor in a nested state, by path."""
    return {path: leaf for path, leaf in flatten(tree).items() if isinstance(leaf, torch.Tensor)}


def assert_bit_identical(a: dict[str, Any], b: dict[str, Any],
                         keys: Sequence[str] = ("model", "optimizer", "ema")) -> None:
    """Weights, optimizer state (and EMA) equal to the last bit."""
    assert a["step"] == b["step"]
    for key in keys:
        assert (key in a) == (key in b), key
        if key not in a:
            continue
        left, right = tensors_of(a[key]), tensors_of(b[key])
        assert left.keys() == right.keys(), key
        assert left, f"no tensors under {key}"
        differing = [name for name in left if not torch.equal(left[name], right[name])]
        assert not differing, f"{key}: {len(differing)} tensors differ, e.g. {differing[:3]}"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


def state_differences(a: dict[str, Any], b: dict[str, Any],
                      sections: Iterable[str] = ("step", "model", "optimizer", "scheduler")) -> list[str]:
    """What differs between two checkpoints in `sections`; tensors compare with torch.equal."""
    problems = []
    for section in sections:
        left, right = flatten(a.get(section), f"{section}."), flatten(b.get(section), f"{section}.")
        if left.keys() != right.keys():
            problems.append(f"{section}: keys differ: {sorted(left.keys() ^ right.keys())[:5]}")
            continue
        for key in left:
            x, y = left[key], right[key]
            if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
                same = (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                        and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y))
            elif isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
                same = True
            else:
                same = x == y
            if not same:
                problems.append(f"{key} differs")
    return problems


def all_finite(tree: Any) -> bool:
    for leaf in flatten(tree).values():
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and not torch.isfinite(leaf).all():
            return False
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return False
    return True
