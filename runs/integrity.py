"""Checkpoint integrity at three levels, without trusting a byte of the file.

quick: the zip's central directory is readable, it holds a data.pkl whose globals a weights-only
       load allows, and the size matches the manifest.
full:  ONE sequential read computes the sha256 of all bytes and the CRC32 of every zip record
       (runs.zipscan), then the sha256 is compared with the manifest.
deep:  after full passes, `torch.load(weights_only=True, mmap=True)` (torch imported here, lazily),
       the keys a resume needs, and the identity (run_id, model shapes) to compare with the run's.

Nothing is ever unpickled before the static pickle scan (runs.pickle_scan) has passed, and then
only by torch's weights-only unpickler. What reading a file establishes is cached per process,
keyed by (path, size, mtime_ns, inode) of the opened file: a re-list costs an open and an fstat.
The manifest is compared afresh on every call (judge), so a new manifest needs no re-read.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from runctl.runs import zipscan
from runctl.runs.layout import is_temp_name, step_from_name
from runctl.runs.manifest import ManifestEntry
from runctl.runs.model import CheckpointInfo
from runctl.runs.zipscan import CRC_MISMATCH, NOT_A_CHECKPOINT, TRUNCATED, UNSAFE_PICKLE

LEVELS = ("quick", "full", "deep")
CHECKPOINT_FORMAT = "runctl/1"
# What a resume reads from a checkpoint (DESIGN.md "Checkpoint").
RESUME_KEYS = ("format", "step", "model", "optimizer", "rng", "data")

# Reasons a file is corrupt; `CheckpointInfo.reason` starts with one of them, then ": detail".
# The zip scan names TRUNCATED, CRC_MISMATCH, NOT_A_CHECKPOINT and UNSAFE_PICKLE.
__all__ = ["CHECKPOINT_FORMAT", "CRC_MISMATCH", "EMPTY", "LEVELS", "NOT_A_CHECKPOINT", "RESUME_KEYS",
           "SHA256_MISMATCH", "SIZE_MISMATCH", "TRUNCATED", "UNREADABLE", "UNSAFE_PICKLE",
           "CheckpointIdentity", "clear_cache", "identity_of", "judge", "verify_file"]
SHA256_MISMATCH = "sha256 mismatch"
SIZE_MISMATCH = "size mismatch"
EMPTY = "empty"
# Not a verdict on the file: it could not be read (permissions, I/O error); status stays unchecked.
UNREADABLE = "unreadable"

@dataclass(frozen=True)
class CheckpointIdentity:
    """What ties a checkpoint to a run, read by a deep verify: the run_id it was saved with and its
    model's {key: shape}. None in a field means unknown (and is not compared)."""

    run_id: str | None
    model_shapes: dict[str, tuple[int, ...]] | None


@dataclass(frozen=True)
class _Facts:
    """What reading a file established, independent of any manifest (so it can be cached)."""

    level: str
    problem: str | None = None        # a corrupt reason, or None
    sha256: str | None = None         # full and deep
    incompatible: str | None = None   # deep: loads, but a resume cannot use it
    identity: CheckpointIdentity | None = None  # deep


_CacheKey = tuple[str, int, int, int]
_cache: dict[_CacheKey, dict[str, _Facts]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def verify_file(path: Path, level: str = "quick", manifest_entry: ManifestEntry | None = None,
                *, reference: CheckpointIdentity | None = None) -> CheckpointInfo:
    """Verify one checkpoint file at `level`; never raises for anything wrong with the file.

    `reference` (deep only): the identity of the run's trusted checkpoints; a file saved by another
    run or holding another model is `incompatible`.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown integrity level {level!r}; expected one of {LEVELS}")
    path = Path(path)
    info = CheckpointInfo(path=path, name=path.name,
                          step=manifest_entry.step if manifest_entry else step_from_name(path.name),
                          kind=manifest_entry.kind if manifest_entry else None,
                          bytes=0, mtime=0.0, status="unchecked")
    if is_temp_name(path.name):
        try:
            st = os.stat(path)
        except OSError:
            st = None
        info.bytes, info.mtime = (st.st_size, st.st_mtime) if st else (0, 0.0)
        info.status, info.reason = "partial", "being written (temporary file)"
        return info
    try:
        # Stat the open file, not the name: a rename in between cannot pair one file's identity
        # (the cache key) with another file's bytes.
        with open(path, "rb", buffering=0) as file:
            st = os.fstat(file.fileno())
            info.bytes, info.mtime = st.st_size, st.st_mtime
            facts = facts_for(path, file, st, level)
    except FileNotFoundError:
        info.status, info.reason = "missing", "file not found"
        return info
    except OSError as exc:
        info.reason = f"{UNREADABLE}: {exc.strerror or exc.__class__.__name__}"
        return info
    return judge(info, facts, manifest_entry, reference)


def facts_for(path: Path, file: BinaryIO, st: os.stat_result, level: str) -> _Facts:
    """The cached facts for this exact file version at `level` or above, computing them if needed."""
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    rank = LEVELS.index(level)
    with _cache_lock:
        known = dict(_cache.get(key, {}))
    for have in reversed(LEVELS[rank:]):  # the most thorough answer known
        if have in known:
            facts = known[have]
            if have == "deep" and level != "deep":
                # Damage found by any level is real; "cannot resume" is a deep-level judgement only
                # (a weights-only branch may still use such a file).
                facts = replace(facts, incompatible=None, identity=None)
            return facts
    facts = _compute(path, file, st.st_size, level, known)
    if not (facts.problem or "").startswith(UNREADABLE):  # a chmod fixes that without touching mtime
        with _cache_lock:
            _cache.setdefault(key, {})[facts.level] = facts
    return facts


def identity_of(path: Path) -> CheckpointIdentity | None:
    """The identity a deep verify read from this exact file version, if one did."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    with _cache_lock:
        deep = _cache.get((str(path), st.st_size, st.st_mtime_ns, st.st_ino), {}).get("deep")
    return deep.identity if deep else None


def judge(info: CheckpointInfo, facts: _Facts, entry: ManifestEntry | None,
          reference: CheckpointIdentity | None = None) -> CheckpointInfo:
    """Turn the file's facts plus its manifest entry into a status and reason."""
    info.level, info.sha256 = facts.level, facts.sha256
    if entry is not None and info.bytes != entry.bytes and facts.problem != EMPTY:
        short = info.bytes < entry.bytes
        info.status = "corrupt"
        info.reason = (f"{TRUNCATED if short else SIZE_MISMATCH}: {info.bytes} bytes, "
                       f"manifest says {entry.bytes}")
    elif facts.problem is not None:
        unreadable = facts.problem.startswith(UNREADABLE)
        info.status, info.reason = ("unchecked" if unreadable else "corrupt"), facts.problem
    elif entry is not None and facts.sha256 is not None and facts.sha256 != entry.sha256:
        info.status, info.reason = "corrupt", f"{SHA256_MISMATCH}: manifest says {entry.sha256[:12]}..."
    elif facts.incompatible is not None:
        info.status, info.reason = "incompatible", facts.incompatible
    elif reference is not None and facts.identity is not None and \
            (why := _identity_difference(facts.identity, reference)) is not None:
        info.status, info.reason = "incompatible", why
    elif entry is None:
        info.status, info.reason = "unverified", "no manifest entry"
    else:
        info.status, info.reason = "ok", None
    return info


def _full(file: BinaryIO, size: int) -> _Facts:
    problem, sha256 = zipscan.full_scan(file, size)
    return _Facts(level="full", problem=problem, sha256=sha256)


def _compute(path: Path, file: BinaryIO, size: int, level: str, known: dict[str, _Facts]) -> _Facts:
    if size == 0:
        return _Facts(level=level, problem=EMPTY)
    try:
        if level == "quick":
            return _Facts(level="quick", problem=zipscan.quick_scan(file))
        full = known.get("full") or _full(file, size)
        if level == "full" or full.problem is not None:
            return full
        return _deep(path, full)
    except OSError as exc:
        return _Facts(level=level, problem=f"{UNREADABLE}: {exc.strerror or exc.__class__.__name__}")


# ----------------------------------------------------------------------------------------- deep

def _deep(path: Path, full: _Facts) -> _Facts:
    import pickle

    import torch  # deep only: runs/ must import without torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        return _deep_facts(full, problem=f"{UNSAFE_PICKLE}: {_unpickler_refusal(exc)}")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file it cannot load
        return _deep_facts(full, problem=f"{NOT_A_CHECKPOINT}: torch.load failed ({_first_line(exc)})")
    run_id = state.get("run_id") if isinstance(state, dict) else None
    identity = CheckpointIdentity(run_id=run_id if isinstance(run_id, str) else None, model_shapes=_shapes(state))
    return _deep_facts(full, incompatible=_resume_problem(state), identity=identity)


def _deep_facts(full: _Facts, **kwargs: Any) -> _Facts:
    return _Facts(level="deep", sha256=full.sha256, **kwargs)


def _resume_problem(state: Any) -> str | None:
    if not isinstance(state, dict):
        return f"not a checkpoint dict (a {type(state).__name__})"
    if state.get("format") != CHECKPOINT_FORMAT:
        return f"format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(state["model"], dict):
        return "model is not a state dict"
    return None


def _shapes(state: Any) -> dict[str, tuple[int, ...]] | None:
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict):
        return None
    return {str(k): tuple(getattr(v, "shape", ())) for k, v in model.items()}


def _identity_difference(identity: CheckpointIdentity, reference: CheckpointIdentity) -> str | None:
    if identity.run_id and reference.run_id and identity.run_id != reference.run_id:
        return f"saved by run {identity.run_id!r}, this run's checkpoints say {reference.run_id!r}"
    if identity.model_shapes is not None and reference.model_shapes is not None:
        return _shape_difference(identity.model_shapes, reference.model_shapes)
    return None


def _shape_difference(shapes: dict[str, tuple[int, ...]], reference: dict[str, tuple[int, ...]]) -> str | None:
    if shapes == reference:
        return None
    missing = sorted(set(reference) - set(shapes))
    extra = sorted(set(shapes) - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks model keys {', '.join(missing[:3])}")
        if extra:
            parts.append(f"has unexpected model keys {', '.join(extra[:3])}")
        return "; ".join(parts)
    key = next(k for k in sorted(shapes) if shapes[k] != reference[k])
    return f"model {key} has shape {list(shapes[key])}, the run's other checkpoints {list(reference[key])}"


def _unpickler_refusal(exc: BaseException) -> str:
    """The line of torch's refusal that names the offending global (its first line only advises
    weights_only=False, which is exactly what must not be done)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "GLOBAL" in line or "Unsupported" in line or "unrecognized" in line:
            return line.split(" was not an allowed global", 1)[0]
    return "refused by the weights-only unpickler"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
