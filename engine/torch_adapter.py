"""The training step's fast paths: the one module that uses torch names outside its stable API.

pyproject asks only for torch >= 2.4, and the fast paths lean on names torch does not promise to
keep: `torch.utils._foreach_utils._get_fused_kernels_supported_devices` (which devices have the
fused AdamW kernel), `torch._foreach_norm` / `torch._foreach_mul_` (the gradient norm and clipping
in three calls) and `torch._foreach_lerp_` (the EMA in one call). `torch.nn.utils.get_total_norm`
is public but only from torch 2.6. Each function here takes its fast path when the name exists and
an equivalent public path when it does not, so a torch release that drops a name costs speed, never
a crash.

Tested range: torch 2.4 to 2.13 (CI pins 2.13.0). tests/engine/test_torch_adapter.py compares every
function, fast path and fallback alike, with the public torch call it stands for (clip_grad_norm_,
AdamW without fused kernels, Tensor.lerp_), so a release that changes what a private name computes
fails there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

TESTED_TORCH_RANGE = ("2.4", "2.13")

HAS_FOREACH_NORM = hasattr(torch, "_foreach_norm") and hasattr(torch, "_foreach_mul_")
HAS_FOREACH_LERP = hasattr(torch, "_foreach_lerp_")


def fused_adamw_devices() -> frozenset[str]:
    """Device types with the fused AdamW kernel; empty when torch does not say."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return frozenset(_get_fused_kernels_supported_devices())
    except (ImportError, AttributeError):
        return frozenset()


def fused_adamw_fits(params: Sequence[torch.Tensor]) -> bool:
    """Whether AdamW(fused=True) accepts these parameters: plain floating-point Parameters on a
    device with the kernel (FSDP's DTensors and integer buffers are not)."""
    devices = fused_adamw_devices()
    return bool(params) and all(
        type(p) is nn.Parameter and p.is_floating_point() and p.device.type in devices for p in params)


@torch.no_grad()
def total_norm(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients together (the norm of the per-tensor norms), as clip_grad_norm_
    computes it. All gradients must share one device and dtype and be plain tensors."""
    if not grads:
        return torch.tensor(0.0)
    if HAS_FOREACH_NORM:
        norms = torch._foreach_norm(list(grads), 2.0)
    else:
        norms = [torch.linalg.vector_norm(g, 2.0) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)


@torch.no_grad()
def clip_gradients_(grads: Sequence[torch.Tensor], clip: float | None) -> torch.Tensor:
    """The total gradient norm; with `clip`, every gradient is scaled by clip / (norm + 1e-6)
    clamped to 1, always multiplied so no device sync is needed (clip_grad_norm_'s arithmetic).
    All gradients must share one device and dtype."""
    norm = total_norm(grads)
    if clip and grads:
        coefficient = torch.clamp(clip / (norm + 1e-6), max=1.0)
        if HAS_FOREACH_NORM:
            torch._foreach_mul_(list(grads), coefficient)
        else:
            for grad in grads:
                grad.mul_(coefficient)
    return norm


@torch.no_grad()
def lerp_(targets: list[torch.Tensor], sources: list[torch.Tensor], weight: float) -> None:
    """targets[i] += weight * (sources[i] - targets[i]) for every i, in place."""
    if HAS_FOREACH_LERP:
        torch._foreach_lerp_(targets, sources, weight)
        return
    for target, source in zip(targets, sources, strict=True):
        target.lerp_(source, weight)


def gradient_norm_of(parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    """The total gradient 2-norm of parameters of any devices, dtypes or kinds (FSDP's DTensors
    included), without changing a gradient."""
    get_total_norm = getattr(nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm([p.grad for p in parameters if p.grad is not None])
    # Before torch 2.6: clip_grad_norm_ with an infinite bound computes the same norm and scales
    # every gradient by exactly 1.
    return nn.utils.clip_grad_norm_(parameters, float("inf"))
