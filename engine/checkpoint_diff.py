"""How far a model moved between two checkpoints: per tensor, the relative L2 change, the cosine
similarity and the largest absolute change, plus the same over the whole model.

Only the model's tensors are compared (optimizer, scheduler and RNG state are left out). Both files
are verified (runs.integrity, full level: every zip CRC, sha256 against the manifest) before a
byte is unpickled, and then loaded with `torch.load(weights_only=True, mmap=True)`, so a model
larger than memory is read tensor by tensor from the page cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from runctl.engine.compat import strip_compile_prefix
from runctl.runs.errors import RunctlError
from runctl.runs.integrity import verify_file
from runctl.runs.manifest import read_manifest

# Where a model's state dict sits in the checkpoint formats runctl reads: runctl and nanoGPT
# ("model"), Lightning ("state_dict"); a file that is itself a flat state dict is used as it is.
MODEL_KEYS = ("model", "state_dict")
# How many key names a mismatch message lists before "and N more".
NAMES_SHOWN = 3


@dataclass(frozen=True)
class TensorChange:
    """One tensor's change from checkpoint A to B. `cosine` is None when either side is all zeros."""

    name: str
    shape: tuple[int, ...]
    numel: int
    rel_l2: float          # ||B - A|| / ||A|| (inf when A is zero and B is not)
    cosine: float | None
    max_abs: float         # max |B - A|


@dataclass(frozen=True)
class CheckpointDiff:
    a: Path
    b: Path
    tensors: list[TensorChange]   # largest relative change first
    total: TensorChange           # the whole model as one vector (name "total")

    def to_json(self) -> dict[str, Any]:
        return {"a": str(self.a), "b": str(self.b),
                "tensors": [_change_json(t) for t in self.tensors], "total": _change_json(self.total)}


def diff_checkpoints(a: Path | str, b: Path | str) -> CheckpointDiff:
    """Compare the model tensors of checkpoints `a` and `b`.

    RunctlError (exit 2) for a file that fails verification or does not load weights-only, and for
    two models whose keys or shapes differ (the message names them).
    """
    a, b = Path(a), Path(b)
    model_a, model_b = _model_tensors(a), _model_tensors(b)
    mismatch = _mismatch(model_a, model_b)
    if mismatch:
        raise RunctlError(f"{b}: not the same model as {a}: {mismatch}")
    changes: list[TensorChange] = []
    sum_a2 = sum_b2 = sum_d2 = sum_ab = 0.0
    max_abs = 0.0
    numel = 0
    for name in model_a:
        x = model_a[name].detach().reshape(-1).to(torch.float64)
        y = model_b[name].detach().reshape(-1).to(torch.float64)
        a2, b2 = float(x.dot(x)), float(y.dot(y))
        d = y - x
        d2 = float(d.dot(d))
        ab = float(x.dot(y))
        biggest = float(d.abs().max()) if d.numel() else 0.0
        changes.append(TensorChange(name, tuple(model_a[name].shape), x.numel(), _relative(d2, a2),
                                    _cosine(ab, a2, b2), biggest))
        sum_a2, sum_b2, sum_d2, sum_ab = sum_a2 + a2, sum_b2 + b2, sum_d2 + d2, sum_ab + ab
        max_abs = max(max_abs, biggest)
        numel += x.numel()
    changes.sort(key=lambda c: (-_sortable(c.rel_l2), c.name))
    total = TensorChange("total", (numel,), numel, _relative(sum_d2, sum_a2), _cosine(sum_ab, sum_a2, sum_b2),
                         max_abs)
    return CheckpointDiff(a, b, changes, total)


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RunctlError(f"{path}: no such checkpoint file")
    entry = read_manifest(path.parent).files.get(path.name)
    info = verify_file(path, "full", entry)
    if info.status not in ("ok", "unverified"):
        raise RunctlError(f"{path}: refusing to load: {info.status}" + (f" ({info.reason})" if info.reason else ""))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises several types; all mean "refuse"
        first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise RunctlError(f"{path}: refusing to load: not loadable with weights_only=True ({first_line})") from None
    model = _find_model(state)
    if model is None:
        raise RunctlError(f"{path}: holds no model state dict (looked for {', '.join(MODEL_KEYS)})")
    return model


def _find_model(state: Any) -> dict[str, torch.Tensor] | None:
    if not isinstance(state, Mapping):
        return None
    for key in MODEL_KEYS:
        candidate = state.get(key)
        if isinstance(candidate, Mapping) and _tensor_dict(candidate):
            return _tensor_dict(candidate)
    return _tensor_dict(state)


def _tensor_dict(mapping: Mapping[Any, Any]) -> dict[str, torch.Tensor] | None:
    """The mapping's numeric tensors by name, or None when it holds none (not a state dict)."""
    tensors = {str(k): v for k, v in strip_compile_prefix(dict(mapping)).items()
               if isinstance(v, torch.Tensor) and not v.is_complex()}
    return tensors or None


def _mismatch(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    parts = []
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    if missing:
        parts.append(f"lacks {_names(missing)}")
    if extra:
        parts.append(f"has unexpected {_names(extra)}")
    reshaped = [f"{k} {list(a[k].shape)} -> {list(b[k].shape)}" for k in sorted(set(a) & set(b))
                if a[k].shape != b[k].shape]
    if reshaped:
        more = f" and {len(reshaped) - NAMES_SHOWN} more" if len(reshaped) > NAMES_SHOWN else ""
        parts.append("shape of " + ", ".join(reshaped[:NAMES_SHOWN]) + more)
    return "; ".join(parts) or None


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - NAMES_SHOWN} more" if len(keys) > NAMES_SHOWN else ""
    return ", ".join(keys[:NAMES_SHOWN]) + more


def _relative(d2: float, a2: float) -> float:
    if a2 == 0.0:
        return 0.0 if d2 == 0.0 else math.inf
    return math.sqrt(d2 / a2)


def _cosine(ab: float, a2: float, b2: float) -> float | None:
    if a2 == 0.0 or b2 == 0.0:
        return None
    return max(-1.0, min(1.0, ab / math.sqrt(a2 * b2)))


def _sortable(value: float) -> float:
    return -1.0 if math.isnan(value) else value


def _change_json(change: TensorChange) -> dict[str, Any]:
    data = asdict(change)
    data["shape"] = list(change.shape)
    return data
