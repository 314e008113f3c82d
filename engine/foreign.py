"""Starting a runctl run from a checkpoint another tool wrote (nanoGPT, Lightning, Hugging Face,
a hand-written script).

The weights are found wherever the writer put them (runs.state_layout: `model`,
`model_state_dict`, Lightning's `state_dict` with its module prefix, a bare state dict, a
`.safetensors` file or a Hugging Face checkpoint-N/ folder), with `_orig_mod.` and `module.`
prefixes removed. The optimizer state is taken, with the step, only when it fits the run's
optimizer exactly (same kind, same groups, every moment the shape of its parameter); otherwise the
run starts from the weights alone, and says why. Files are verified first and loaded with
`torch.load(weights_only=True)` only; a safetensors file is read from its header and raw bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from runctl.engine.compat import compare_state_dicts, format_incompatibility
from runctl.runs import safe_files
from runctl.runs.errors import RunctlError
from runctl.runs.integrity import verify_file
from runctl.runs.state_layout import find_layout, strip_prefixes
from torch import nn

# Statuses a foreign file may be loaded in: intact (there is never a manifest beside it) or legacy.
LOADABLE = ("ok", "unverified", "legacy")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
# The per-parameter state each runctl optimizer keeps (engine.trainer.build_optimizer).
_OPTIMIZER_STATE_KEYS = {"adamw": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}


@dataclass
class ForeignCheckpoint:
    path: Path
    weights: dict[str, torch.Tensor]   # as found (prefixes not yet removed)
    weights_from: str                  # where: "model of ckpt.pt", "model.safetensors", ...
    optimizer: dict[str, Any] | None
    step: int | None


def read_foreign(path: Path) -> ForeignCheckpoint:
    """The weights, optimizer state and step of a foreign checkpoint file or Hugging Face folder."""
    path = Path(path)
    if path.is_dir():
        return _read_hf_folder(path)
    if path.suffix == ".safetensors":
        return ForeignCheckpoint(path, load_safetensors(path), path.name, None, None)
    state = _load_torch(path)
    layout = find_layout(state)
    if layout.weights is None:
        keys = ", ".join(map(str, list(state)[:6])) if isinstance(state, dict) else type(state).__name__
        raise RunctlError(f"{path}: no model weights found (looked for a state dict at the top and under "
                          f"model, model_state_dict, state_dict; the file has {keys})")
    where = f"{layout.weights_key} of {path.name}" if layout.weights_key else path.name
    return ForeignCheckpoint(path, layout.weights, where, layout.optimizer, layout.step)


def _verified(path: Path) -> None:
    if not path.is_file():
        raise RunctlError(f"{path}: no such file")
    info = verify_file(path, "full")
    if info.status not in LOADABLE:
        raise RunctlError(f"{path}: refusing to load: {info.status}: {info.reason}")


def _load_torch(path: Path) -> Any:
    _verified(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises several types; all mean "refuse"
        first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise RunctlError(f"{path}: refusing to load: not loadable with weights_only=True ({first_line})") from exc


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file's tensors, read from its checked header and raw bytes (no pickle at all)."""
    _verified(path)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise RunctlError(f"{path}: tensor {name!r} has dtype {entry['dtype']}, which runctl cannot load")
        begin, end = entry["data_offsets"]
        raw = bytearray(data[base + begin:base + end])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(entry["shape"])
    return tensors


def _read_hf_folder(folder: Path) -> ForeignCheckpoint:
    weights: dict[str, torch.Tensor] = {}
    source = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    index = next((folder / name for name in HF_INDEXES if (folder / name).is_file()), None)
    if source is not None:
        weights = load_safetensors(source) if source.suffix == ".safetensors" else _bare(_load_torch(source), source)
        where = source.name
    elif index is not None:
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise RunctlError(f"{index}: not a readable weight index ({exc.__class__.__name__})") from None
        for shard in shards:
            shard_path = folder / shard
            weights.update(load_safetensors(shard_path) if shard.endswith(".safetensors")
                           else _bare(_load_torch(shard_path), shard_path))
        where = f"{len(shards)} shards of {index.name}"
    else:
        raise RunctlError(f"{folder}: no model weights ({', '.join(HF_WEIGHTS + HF_INDEXES)})")
    optimizer = None
    if (folder / "optimizer.pt").is_file():
        loaded = _load_torch(folder / "optimizer.pt")
        optimizer = loaded if isinstance(loaded, dict) and "state" in loaded else None
    step = None
    try:
        step = safe_files.read_json(folder / "trainer_state.json", limit=64 * 2**20).get("global_step")
    except (OSError, ValueError, AttributeError):
        step = None
    return ForeignCheckpoint(folder, weights, where, optimizer, step if isinstance(step, int) else None)


def _bare(state: Any, path: Path) -> dict[str, torch.Tensor]:
    layout = find_layout(state)
    if layout.weights is None:
        raise RunctlError(f"{path}: no model weights found")
    return layout.weights


def fit_weights(model: nn.Module, checkpoint: ForeignCheckpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights keyed like `model`'s state dict; RunctlError (exit 2) naming the
    missing, unexpected and mis-shaped keys when the model does not fit."""
    expected = model.state_dict()
    weights = strip_prefixes(checkpoint.weights, set(expected))
    report = compare_state_dicts(expected, weights)
    if not report.ok:
        raise RunctlError(f"{checkpoint.path}: the checkpoint ({checkpoint.weights_from}) does not fit the "
                          f"config's model: {format_incompatibility(report)}")
    return weights


def optimizer_misfit(model: nn.Module, optim_name: str, optimizer: dict[str, Any] | None) -> str | None:
    """Why the foreign optimizer state cannot continue in the run's optimizer, or None if it can.

    The run's optimizer groups parameters as engine.trainer.build_optimizer does; a saved state
    fits when it has the same groups with the same number of parameters in the same order, and every
    saved moment has its parameter's shape.
    """
    if not optimizer:
        return "the checkpoint has no optimizer state"
    groups = optimizer.get("param_groups")
    state = optimizer.get("state") or {}
    params = [p for p in model.parameters() if p.requires_grad]
    ours = [[p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]]
    if not isinstance(groups, list) or [len(g.get("params", ())) for g in groups] != [len(g) for g in ours]:
        theirs = [len(g.get("params", ())) for g in groups] if isinstance(groups, list) else "?"
        return (f"its parameter groups hold {theirs} parameters, the run's optimizer "
                f"{[len(g) for g in ours]}")
    wanted = _OPTIMIZER_STATE_KEYS.get(optim_name, ())
    for group, our_group in zip(groups, ours, strict=True):
        for index, param in zip(group["params"], our_group, strict=True):
            entry = state.get(index) if isinstance(state, dict) else None
            if entry is None:
                continue  # a parameter the writer never updated
            if not all(key in entry for key in wanted):
                return f"its state is not {optim_name}'s (has {', '.join(sorted(entry))})"
            for key in wanted:
                if tuple(entry[key].shape) != tuple(param.shape):
                    return (f"{key} of parameter {index} has shape {list(entry[key].shape)}, "
                            f"the model's parameter {list(param.shape)}")
    return None


def start_state(checkpoint: ForeignCheckpoint, model: nn.Module, weights_only: bool) -> dict[str, Any]:
    """A state for Trainer.load_state_dict: the fitted weights, and (unless weights_only) the
    optimizer state and step; no RNG or data position (the run's own seed and a fresh epoch)."""
    state: dict[str, Any] = {"model": fit_weights(model, checkpoint)}
    if not weights_only:
        state.update(step=checkpoint.step, optimizer=checkpoint.optimizer)
    return state
