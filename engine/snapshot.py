"""Freeze a checkpoint's state in CPU memory, and capture / restore every RNG a resume depends on.

A snapshot is what the background writer serialises while training goes on, so it must not share
storage with live tensors: CUDA tensors are copied to (pinned) host memory with non_blocking copies
and a single synchronize; CPU tensors are cloned, because the optimizer updates them in place.

RNG states are converted to types `torch.load(weights_only=True)` accepts (tensors, ints, floats,
strings, lists, tuples, dicts): numpy's state array becomes a list of ints.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch

_IMMUTABLE_LEAVES = (int, float, bool, str, bytes, type(None))


def snapshot_to_cpu(state: Any, clone_cpu: bool = True) -> Any:
    """A copy of `state` (nested dicts / lists / tuples) whose tensors live in CPU memory of their own.

    `clone_cpu=False` keeps CPU tensors shared: right for a synchronous write, where nothing can
    change them before the write ends.
    """
    copied_from_cuda = [False]
    result = _snapshot(state, clone_cpu, copied_from_cuda)
    if copied_from_cuda[0]:
        # One synchronize for all the non_blocking device-to-host copies issued above.
        torch.cuda.synchronize()
    return result


def _snapshot(value: Any, clone_cpu: bool, copied_from_cuda: list[bool]) -> Any:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.device.type == "cpu":
            return tensor.clone() if clone_cpu else tensor
        if tensor.device.type == "cuda":
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            copied_from_cuda[0] = True
            return host
        # Other accelerators: a blocking copy is correct everywhere.
        return tensor.to("cpu")
    if isinstance(value, dict):
        return {key: _snapshot(item, clone_cpu, copied_from_cuda) for key, item in value.items()}
    if isinstance(value, list):
        return [_snapshot(item, clone_cpu, copied_from_cuda) for item in value]
    if isinstance(value, tuple):
        return tuple(_snapshot(item, clone_cpu, copied_from_cuda) for item in value)
    if isinstance(value, _IMMUTABLE_LEAVES):
        return value
    return copy.deepcopy(value)


def capture_rng() -> dict[str, Any]:
    """Every global RNG state, as weights_only-loadable values: {python, numpy, torch, cuda}."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(numpy_state["bit_generator"]),
            "key": [int(k) for k in numpy_state["state"]["key"]],
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Undo capture_rng. CUDA states go to as many devices as both machines have."""
    version, internal, gauss_next = rng["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    numpy_state = rng["numpy"]
    np.random.set_state({
        "bit_generator": numpy_state["bit_generator"],
        "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": int(numpy_state["pos"])},
        "has_gauss": int(numpy_state["has_gauss"]),
        "gauss": float(numpy_state["gauss"]),
    })
    torch.set_rng_state(_as_byte_tensor(rng["torch"]))
    cuda_states = rng.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for device_index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(_as_byte_tensor(cuda_state), device_index)


def _as_byte_tensor(state: Any) -> torch.Tensor:
    tensor = state if isinstance(state, torch.Tensor) else torch.tensor(state, dtype=torch.uint8)
    return tensor.to(device="cpu", dtype=torch.uint8)
