"""Does a checkpoint fit the model and settings it is about to be loaded into?

Resume and branch use this to refuse (exit 2) a model that does not match the checkpoint, naming
the first few missing / unexpected keys and shape mismatches, and to warn about changed settings
that make a resumed run a different experiment (batch size, block size, grad accumulation, model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# torch.compile wraps a module as OptimizedModule, whose state_dict keys gain this segment.
COMPILE_PREFIX_SEGMENT = "_orig_mod"

# Settings whose change between a checkpoint and its resume deserves a warning:
# exact dotted keys, and prefixes whose every sub-key counts.
WATCHED_SETTINGS = ("task", "data.batch_size", "data.block_size", "data.stride", "optim.grad_accum")
WATCHED_PREFIXES = ("model.",)

_SHOWN_NAMES = 3


@dataclass
class CompatReport:
    missing: list[str] = field(default_factory=list)       # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)    # in the checkpoint, not in the model
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    # (key, shape in the checkpoint, shape the model expects)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)


def strip_compile_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop `_orig_mod.` segments (torch.compile) from every key, wherever they sit (DDP adds `module.`)."""
    return {_strip_key(key): value for key, value in state_dict.items()}


def _strip_key(key: str) -> str:
    if COMPILE_PREFIX_SEGMENT not in key:
        return key
    return ".".join(part for part in key.split(".") if part != COMPILE_PREFIX_SEGMENT)


def compare_state_dicts(model_sd_expected: Mapping[str, Any], ckpt_sd: Mapping[str, Any]) -> CompatReport:
    """Compare by key and shape; `_orig_mod.` prefixes on either side are ignored."""
    expected = strip_compile_prefix(model_sd_expected)
    found = strip_compile_prefix(ckpt_sd)
    report = CompatReport(
        missing=[key for key in expected if key not in found],
        unexpected=[key for key in found if key not in expected],
    )
    for key, value in expected.items():
        if key not in found:
            continue
        want, got = _shape(value), _shape(found[key])
        if want is not None and got is not None and want != got:
            report.shape_mismatches.append((key, got, want))
    return report


def _shape(value: Any) -> tuple[int, ...] | None:
    shape = getattr(value, "shape", None)
    return tuple(int(n) for n in shape) if shape is not None else None


def format_incompatibility(report: CompatReport) -> str:
    """One line: 'missing 2 keys (a, b), 1 shape mismatch (head.weight: [10,64] -> [10,128])'."""
    parts = []
    if report.missing:
        parts.append(f"missing {_count(len(report.missing), 'key')} ({_first_few(report.missing)})")
    if report.unexpected:
        parts.append(f"unexpected {_count(len(report.unexpected), 'key')} ({_first_few(report.unexpected)})")
    if report.shape_mismatches:
        shown = [f"{key}: {_dims(got)} -> {_dims(want)}" for key, got, want in report.shape_mismatches]
        parts.append(f"{_count(len(shown), 'shape mismatch', 'shape mismatches')} ({_first_few(shown)})")
    return ", ".join(parts) if parts else "compatible"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _first_few(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_NAMES])
    return shown + (", ..." if len(items) > _SHOWN_NAMES else "")


def _dims(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(n) for n in shape) + "]"


def settings_changes(old_cfg: Mapping[str, Any], new_cfg: Mapping[str, Any]) -> list[str]:
    """'data.batch_size: 64 -> 128' for each watched setting that differs between two configs."""
    old_flat, new_flat = _flatten(old_cfg), _flatten(new_cfg)
    changes = []
    for key in sorted(set(old_flat) | set(new_flat)):
        if key not in WATCHED_SETTINGS and not key.startswith(WATCHED_PREFIXES):
            continue
        old, new = old_flat.get(key, _UNSET), new_flat.get(key, _UNSET)
        if old != new:
            changes.append(f"{key}: {_show(old)} -> {_show(new)}")
    return changes


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, _Unset) else str(value)


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
