"""Where the weights, the optimizer state and the step sit in a loaded checkpoint of any layout.

Training scripts store the same things under different keys: runctl and nanoGPT `model`, most
hand-written scripts `model_state_dict`, Lightning `state_dict` (keys prefixed with the
LightningModule's attribute, e.g. `model.`), a bare state dict at the top. This module reads an
already loaded object (duck-typed: a tensor is anything with a `shape`), so runs/ stays free of torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WEIGHT_KEYS = ("model", "model_state_dict", "state_dict", "module", "net", "network")
OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optim", "opt")
STEP_KEYS = ("step", "global_step", "iter_num", "iteration", "iter", "steps")
# Prefixes that wrappers add in front of every key: torch.compile, DataParallel/DDP.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass(frozen=True)
class Layout:
    """What a checkpoint holds and where."""

    weights_key: str | None          # None: the object itself is the state dict
    weights: dict[str, Any] | None   # the model state dict as found (prefixes not removed)
    optimizer_key: str | None
    optimizer: dict[str, Any] | None  # a torch optimizer state dict ({"state", "param_groups"})
    step: int | None


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def is_state_dict(value: Any) -> bool:
    """A non-empty mapping of str -> tensor (a model's state_dict)."""
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(k, str) and _is_tensor(v) for k, v in value.items()))


def is_optimizer_state(value: Any) -> bool:
    return isinstance(value, Mapping) and "state" in value and "param_groups" in value


def _step(state: Mapping[str, Any]) -> int | None:
    for key in STEP_KEYS:
        value = state.get(key)
        if _is_tensor(value) and tuple(value.shape) == ():
            value = value.item()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def find_layout(state: Any) -> Layout:
    """The weights, optimizer state and step of a loaded checkpoint, wherever they are."""
    if is_state_dict(state):
        return Layout(None, dict(state), None, None, None)
    if not isinstance(state, Mapping):
        return Layout(None, None, None, None, None)
    weights_key = next((k for k in WEIGHT_KEYS if is_state_dict(state.get(k))), None)
    optimizer_key = next((k for k in OPTIMIZER_KEYS if is_optimizer_state(state.get(k))), None)
    optimizer = state.get(optimizer_key) if optimizer_key else None
    if optimizer is None:
        # Lightning keeps a list of optimizer states, one per configured optimizer.
        states = state.get("optimizer_states")
        if isinstance(states, list) and len(states) == 1 and is_optimizer_state(states[0]):
            optimizer_key, optimizer = "optimizer_states[0]", states[0]
    return Layout(weights_key, dict(state[weights_key]) if weights_key else None,
                  optimizer_key, dict(optimizer) if optimizer is not None else None, _step(state))


def strip_prefixes(weights: Mapping[str, Any], expected: set[str] | None = None) -> dict[str, Any]:
    """Remove `_orig_mod.` / `module.` wrappers; with `expected` (the model's own keys), also a common
    leading attribute such as Lightning's `model.` when that makes the keys match."""
    out = dict(weights)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if out and all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    if expected is not None and not set(out) & expected:
        heads = {k.split(".", 1)[0] for k in out}
        if len(heads) == 1 and all("." in k for k in out):
            head = heads.pop() + "."
            trimmed = {k[len(head):]: v for k, v in out.items()}
            if set(trimmed) & expected:
                out = trimmed
    return out


def describe(state: Any) -> str:
    """One line saying what a loaded file holds, e.g. "model weights (12 tensors, 3,882 values),
    optimizer state, step 1000"."""
    if is_optimizer_state(state):
        return f"optimizer state ({len(state.get('state') or {})} parameter states)"
    if isinstance(state, Mapping) and "base_lrs" in state and "last_epoch" in state:
        return f"LR scheduler state (last_epoch {state.get('last_epoch')})"
    layout = find_layout(state)
    parts = []
    if layout.weights is not None:
        values = sum(_numel(v) for v in layout.weights.values())
        where = f" under '{layout.weights_key}'" if layout.weights_key else ""
        parts.append(f"model weights{where} ({len(layout.weights)} tensors, {values:,} values)")
    if layout.optimizer is not None:
        parts.append("optimizer state")
    if layout.step is not None:
        parts.append(f"step {layout.step}")
    if parts:
        return ", ".join(parts)
    if isinstance(state, Mapping):
        keys = ", ".join(map(str, list(state)[:6])) + (", ..." if len(state) > 6 else "")
        return f"a dict of {len(state)} keys ({keys}), no model weights found"
    return f"a {type(state).__name__}, no model weights found"


def _numel(value: Any) -> int:
    count = 1
    for dim in getattr(value, "shape", ()):
        count *= int(dim)
    return count
