"""Where and how the math runs: device, mixed precision, host-to-device copies, torch.compile.

Everything CUDA-only is guarded so the same code path runs with the device forced to CPU (the
tests): bf16 autocast works on CPU too, fp32 gets a disabled autocast, and the GradScaler is
always present but enabled only for fp16 on CUDA, so the loop calls it unconditionally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from runctl.engine.schema import RunConfig, as_run_config
from runctl.runs.errors import RunctlError
from torch import nn

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """`auto` -> this rank's GPU if there is one, else the CPU; `cuda` -> this rank's GPU."""
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if not torch.cuda.is_available():
        raise RunctlError(f"device: {spec} requested but CUDA is not available here; use device=auto or cpu")
    if spec == "cuda":
        return torch.device("cuda", local_rank)
    index = int(spec.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise RunctlError(f"device: {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


@dataclass
class Runtime:
    device: torch.device
    precision: str                       # fp32 | bf16 | fp16
    scaler: torch.amp.GradScaler         # enabled only for fp16 on CUDA
    compile: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype autocast computes in; None for fp32 (autocast() is then a no-op)."""
        return _AUTOCAST_DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def to_device(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Copy a CPU batch to the device; on CUDA through pinned memory, without blocking."""
        if not self.is_cuda:
            return tuple(batch)
        return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in batch)

    def prepare(self, model: nn.Module) -> nn.Module:
        """The module the loop calls: compiled when asked (the raw module keeps clean state keys)."""
        return torch.compile(model) if self.compile else model


def check_runtime(cfg: RunConfig | Mapping[str, Any], origin: str, local_rank: int = 0) -> torch.device:
    """The device this config trains on here; RunctlError `<origin>: <key>: ...` if it cannot."""
    cfg = as_run_config(cfg)
    try:
        device = resolve_device(cfg.device, local_rank)
    except RunctlError as err:
        raise RunctlError(f"{origin}: {err}") from None
    if cfg.precision == "fp16" and device.type != "cuda":
        raise RunctlError(f"{origin}: precision: fp16 needs a CUDA device (device is {device}); use bf16 or fp32")
    return device


def make_runtime(cfg: RunConfig | Mapping[str, Any], local_rank: int = 0, origin: str = "config") -> Runtime:
    """Build the runtime for a resolved config; RunctlError for a setting this machine cannot honour."""
    cfg = as_run_config(cfg)
    device = check_runtime(cfg, origin, local_rank)
    precision = cfg.precision
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # TF32 matmuls: the usual speed-up on Ampere+, no effect elsewhere.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16" and device.type == "cuda"))
    return Runtime(device=device, precision=precision, scaler=scaler, compile=cfg.compile)
