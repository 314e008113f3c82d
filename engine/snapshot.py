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
from collections.abc import Collection
from typing import Any

import numpy as np
import torch

_IMMUTABLE_LEAVES = (int, float, bool, str, bytes, type(None))


class HostBuffers:
    """Host tensors reused from one snapshot to the next, keyed by their place in the state.

    Allocating pinned memory is slow (cudaHostAlloc), so, like torchtitan's cached CPU state dict,
    the buffers of the previous snapshot are refilled. Safe only once the previous write is done:
    the CheckpointManager waits for it before taking the next snapshot.
    """

    def __init__(self, pin_memory: bool = True) -> None:
        self.pin_memory = pin_memory
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def get(self, key: tuple[Any, ...], like: torch.Tensor, pin_memory: bool | None = None) -> torch.Tensor:
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype:
            buffer = _host_tensor(like, self.pin_memory if pin_memory is None else pin_memory)
            self._buffers[key] = buffer
        return buffer


def _host_tensor(like: torch.Tensor, pin_memory: bool) -> torch.Tensor:
    if pin_memory:
        try:
            return torch.empty(like.shape, dtype=like.dtype, pin_memory=True)
        except RuntimeError:
            # Locked memory can be capped (ulimit -l, containers): pageable memory is slower for
            # the copy (it becomes synchronous) but just as correct.
            pass
    return torch.empty(like.shape, dtype=like.dtype)


class PendingCopies:
    """CPU tensor copies a snapshot left for later, run off the training thread by `run()`.

    Staging (torchtitan's "async with pinned memory" idea, done for the CPU): the copy of the big
    tensors overlaps the next step's forward and backward, which read but never write them; the
    trainer waits for it (CheckpointManager.wait_for_staging) only before the optimizer step.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (destination, source)

    def __len__(self) -> int:
        return len(self.pairs)

    def run(self) -> None:
        for destination, source in self.pairs:
            destination.copy_(source)
        self.pairs = []


def snapshot_to_cpu(state: Any, clone_cpu: bool = True, host_buffers: HostBuffers | None = None) -> Any:
    """A copy of `state` (nested dicts / lists / tuples) whose tensors live in CPU memory of their own.

    `clone_cpu=False` keeps CPU tensors shared: right for a synchronous write, where nothing can
    change them before the write ends. With `host_buffers`, CUDA and (cloned) CPU tensors are copied
    into the buffers of the previous snapshot (pinned where possible), which the caller keeps.
    The same tensor reached twice (tied weights) stays one tensor, so it is written once.
    """
    return stage_to_cpu(state, host_buffers, clone_cpu=clone_cpu)[0]


def stage_to_cpu(state: Any, host_buffers: HostBuffers | None, *, clone_cpu: bool = True,
                 defer: Collection[int] = ()) -> tuple[Any, PendingCopies]:
    """snapshot_to_cpu, except that CPU tensors whose storage (data_ptr) is in `defer` get their
    buffer now and their copy later: the snapshot is complete once the PendingCopies have run.

    Only tensors nothing writes before the caller's fence may be deferred (parameters, optimizer
    moments, EMA weights: all change in or after optimizer.step()); buffers such as BatchNorm's
    running statistics change in the forward pass and are copied at once.
    """
    walk = _Snapshotter(clone_cpu, host_buffers, frozenset(defer))
    result = walk.copy(state, ())
    for device in walk.cuda_devices:
        # One synchronize per device for all the non_blocking device-to-host copies issued above.
        torch.cuda.synchronize(device)
    return result, walk.pending


class _Snapshotter:
    def __init__(self, clone_cpu: bool, host_buffers: HostBuffers | None, defer: frozenset[int] = frozenset()) -> None:
        self.clone_cpu = clone_cpu
        self.host_buffers = host_buffers
        self.defer = defer
        self.pending = PendingCopies()
        self.cuda_devices: set[torch.device] = set()
        self._seen: dict[tuple[Any, ...], torch.Tensor] = {}

    def copy(self, value: Any, where: tuple[Any, ...]) -> Any:
        if isinstance(value, torch.Tensor):
            return self._tensor(value.detach(), where)
        if isinstance(value, dict):
            return {key: self.copy(item, (*where, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.copy(item, (*where, index)) for index, item in enumerate(value)]
        if isinstance(value, tuple):
            return tuple(self.copy(item, (*where, index)) for index, item in enumerate(value))
        if isinstance(value, _IMMUTABLE_LEAVES):
            return value
        return copy.deepcopy(value)

    def _tensor(self, tensor: torch.Tensor, where: tuple[Any, ...]) -> torch.Tensor:
        alias_key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                     tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if alias_key in self._seen:
            return self._seen[alias_key]
        if tensor.device.type == "cpu":
            if not self.clone_cpu:
                result = tensor
            elif self.host_buffers is not None:
                # Into last snapshot's buffer: a fresh clone page-faults its memory in, which made
                # the training-thread stall 3-10x a plain copy (bench/bench_checkpoint.py).
                result = self.host_buffers.get(where, tensor, pin_memory=False)  # no DMA from CPU tensors
                if tensor.untyped_storage().data_ptr() in self.defer:
                    self.pending.pairs.append((result, tensor))
                else:
                    result.copy_(tensor)
            else:
                result = tensor.clone()
        elif tensor.device.type == "cuda":
            if self.host_buffers is not None:
                result = self.host_buffers.get(where, tensor)
            else:
                result = _host_tensor(tensor, pin_memory=True)
            result.copy_(tensor, non_blocking=True)
            self.cuda_devices.add(tensor.device)
        else:
            # Other accelerators: a blocking copy is correct everywhere.
            result = tensor.to("cpu")
        self._seen[alias_key] = result
        return result


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
