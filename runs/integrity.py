"""Checkpoint integrity at three levels, without trusting a byte of the file.

Every file is read by what its first bytes say it is, whatever its name:
- a torch zip (torch.save since 1.6): quick parses the central directory and checks data.pkl's
  record and the globals its pickle references; full computes in ONE sequential read the sha256 of
  all bytes and the CRC32 of every zip record (runs.zipscan);
- a legacy torch file (torch.save with _use_new_zipfile_serialization=False): status `legacy`; the
  format has no checksums, so quick/full check its pickles' globals statically and full adds sha256;
- a `.safetensors` file: header, offsets, dtypes and shapes against the file size
  (runs.safetensors_scan), plus sha256 at full;
deep: after full passes, `torch.load(weights_only=True, mmap=True)` (torch imported here, lazily)
and one line saying what the file holds (runs.state_layout); a runctl checkpoint must also have the
keys a resume needs, and its identity (run_id, model shapes) is compared with the run's.

`corrupt` means damaged bytes. A healthy file that a weights-only load refuses by design (a pickled
TrainingArguments, numpy arrays in an RNG state, an argparse.Namespace) is `unsafe` ("not loadable
safely: pickled ..."); a pickle that imports code (os.system, eval, ...) is planted, never written
by a training script, and stays corrupt. Nothing is ever unpickled before the static pickle scan
(runs.pickle_scan) has passed, and then only by torch's weights-only unpickler.

What reading a file establishes is cached per process, and at full and deep also on disk under the
user's cache directory (runs.verify_cache, never in the run's folder), keyed by (path, size,
mtime_ns, inode) of the opened file: a re-list costs an open and an fstat. The manifest is compared
afresh on every call (judge), so a new manifest needs no re-read. A file without a manifest entry
is `unverified`, with a reason saying what was checked (a foreign file has no manifest at all).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from runctl.runs import safe_files, safetensors_scan, verify_cache, zipscan
from runctl.runs.layout import CHECKPOINT_DIR, RUN_YAML, is_step_folder_name, is_temp_name, step_from_name
from runctl.runs.manifest import ManifestEntry
from runctl.runs.model import CheckpointInfo
from runctl.runs.pickle_scan import legacy_unsafe_globals, runs_code
from runctl.runs.state_layout import describe
from runctl.runs.zipscan import CRC_MISMATCH, NOT_A_CHECKPOINT, TRUNCATED, UNSAFE_PICKLE

LEVELS = ("quick", "full", "deep")
CHECKPOINT_FORMAT = "runctl/1"
# What a resume reads from a checkpoint (DESIGN.md "Checkpoint").
RESUME_KEYS = ("format", "step", "model", "optimizer", "rng", "data")

# Reasons a file is corrupt; `CheckpointInfo.reason` starts with one of them, then ": detail".
# The zip scan names TRUNCATED, CRC_MISMATCH, NOT_A_CHECKPOINT and UNSAFE_PICKLE.
__all__ = ["CHECKPOINT_FORMAT", "CRC_MISMATCH", "EMPTY", "LEVELS", "NOT_A_CHECKPOINT", "NOT_LOADABLE_SAFELY", "NOT_REGULAR",
           "RESUME_KEYS",
           "SHA256_MISMATCH", "SIZE_MISMATCH", "TRUNCATED", "UNREADABLE", "UNSAFE_PICKLE",
           "CheckpointIdentity", "clear_cache", "identity_of", "in_runctl_run", "is_torch_file", "judge",
           "not_regular_status", "read_failed", "resume_problem", "verify_file"]
SHA256_MISMATCH = "sha256 mismatch"
SIZE_MISMATCH = "size mismatch"
EMPTY = "empty"
# Not a verdict on the file: it could not be read (permissions, I/O error); status stays unchecked.
UNREADABLE = "unreadable"
NOT_LOADABLE_SAFELY = "not loadable safely"
LEGACY_REASON = "legacy torch format (not a zip): no CRCs to check"
SAFETENSORS_NOTE = "safetensors has no checksums: header, offsets and size checked"
# torch.save's legacy format starts with a protocol-2 pickle of this magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ZIP_MAGIC = b"PK\x03\x04"
# A FIFO, socket, device, directory or a link to one (or dangling, or leaving the run folder): never
# opened for reading, since a FIFO blocks the open and a device never ends. The reason goes on with
# what it is ("not a regular file: fifo").
NOT_REGULAR = "not a regular file"


def not_regular_status(what: str) -> tuple[str, str]:
    """Status and reason of a checkpoint name that is not a regular file. A directory may be a
    format runctl does not read (DeepSpeed saves `*.ckpt/` folders): unchecked, not corrupt."""
    return ("unchecked" if what.endswith("directory") else "corrupt"), f"{NOT_REGULAR}: {what}"

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
    format: str = "zip"               # zip | legacy | safetensors
    unsafe: str | None = None         # healthy, but a weights-only load refuses it by design
    holds: str | None = None          # deep (safetensors: from full on): what the file holds


_CacheKey = tuple[str, int, int, int]
_cache: dict[_CacheKey, dict[str, _Facts]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every result, in this process and in the user's cache directory."""
    with _cache_lock:
        _cache.clear()
    verify_cache.clear()


def verify_file(path: Path, level: str = "quick", manifest_entry: ManifestEntry | None = None,
                *, reference: CheckpointIdentity | None = None, within: Path | None = None) -> CheckpointInfo:
    """Verify one checkpoint file at `level`; never raises for anything wrong with the file.

    `reference` (deep only): the identity of the run's trusted checkpoints; a file saved by another
    run or holding another model is `incompatible`. `within`: the run folder; a link to a file
    outside it is not read. Anything but a regular file is `corrupt` (NOT_REGULAR) and never opened.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown integrity level {level!r}; expected one of {LEVELS}")
    path = Path(path)
    if is_step_folder_name(path.name) and path.is_dir() and not path.is_symlink():
        from runctl.runs.step_folder import verify_step_folder

        return verify_step_folder(path, level, manifest_entry)
    info = CheckpointInfo(path=path, name=path.name,
                          step=manifest_entry.step if manifest_entry else step_from_name(path.name),
                          kind=manifest_entry.kind if manifest_entry else None,
                          bytes=0, mtime=0.0, status="unchecked")
    irregular = safe_files.irregularity(path, within=within)
    if irregular is not None:
        return _not_regular(info, path, irregular)
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
        with safe_files.open_regular(path, buffering=0) as file:
            st = os.fstat(file.fileno())
            info.bytes, info.mtime = st.st_size, st.st_mtime
            facts = facts_for(path, file, st, level,
                              written_sha256=manifest_entry.sha256 if manifest_entry else None)
    except safe_files.NotRegularFile as exc:  # swapped in after the check above
        return _not_regular(info, path, exc.kind)
    except OSError as exc:
        return read_failed(info, exc)
    return judge(info, facts, manifest_entry, reference)


def read_failed(info: CheckpointInfo, exc: OSError, what: str = "file") -> CheckpointInfo:
    """The verdict on a checkpoint (file or step folder) that could not be read: `missing` when it
    is gone, else `unchecked` with why (a permission or an I/O error says nothing of its bytes)."""
    if isinstance(exc, FileNotFoundError):
        info.status, info.reason = "missing", f"{what} not found"
    else:
        info.status, info.reason = "unchecked", f"{UNREADABLE}: {exc.strerror or exc.__class__.__name__}"
    return info


def is_torch_file(path: Path) -> bool:
    """The file starts like a torch.save (zip or legacy); False when it cannot be read or is not a
    regular file (a FIFO would block the open)."""
    try:
        with safe_files.open_regular(path) as file:
            head = file.read(len(_LEGACY_MAGIC))
    except OSError:
        return False
    return head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_MAGIC)


def in_runctl_run(path: Path) -> bool:
    """The file sits in a runctl run's checkpoints/ folder, where every file should have a manifest entry."""
    parent = path.parent
    return parent.name == CHECKPOINT_DIR and (parent.parent / RUN_YAML).exists()
def _not_regular(info: CheckpointInfo, path: Path, what: str) -> CheckpointInfo:
    try:
        st = os.lstat(path)
        info.mtime = st.st_mtime
    except OSError:
        pass
    info.status, info.reason = not_regular_status(what)
    return info


def facts_for(path: Path, file: BinaryIO, st: os.stat_result, level: str,
              written_sha256: str | None = None) -> _Facts:
    """The cached facts for this exact file version at `level` or above, computing them if needed.

    `written_sha256`: the hash its writer recorded, if any; a torch zip whose bytes still have it
    skips the CRC walk (see runs.zipscan)."""
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    rank = LEVELS.index(level)
    with _cache_lock:
        known = dict(_cache.get(key, {}))
    if not any(have in known for have in LEVELS[rank:]) and level != "quick":
        for have in reversed(LEVELS[rank:]):
            stored = verify_cache.load(key, have)
            if stored is not None:
                known[have] = _facts_from_json(stored)
                with _cache_lock:
                    _cache.setdefault(key, {})[have] = known[have]
                break
    for have in reversed(LEVELS[rank:]):  # the most thorough answer known
        if have in known:
            facts = known[have]
            if have == "deep" and level != "deep":
                # Damage found by any level is real; "cannot resume" is a deep-level judgement only
                # (a weights-only branch may still use such a file).
                facts = replace(facts, incompatible=None, identity=None)
            return facts
    facts = _compute(path, file, st.st_size, level, known, written_sha256)
    if not (facts.problem or "").startswith(UNREADABLE):  # a chmod fixes that without touching mtime
        with _cache_lock:
            _cache.setdefault(key, {})[facts.level] = facts
        if facts.level != "quick":
            verify_cache.store(key, facts.level, _facts_to_json(facts))
    return facts


def _facts_to_json(facts: _Facts) -> dict[str, Any]:
    identity = None
    if facts.identity is not None:
        shapes = facts.identity.model_shapes
        identity = {"run_id": facts.identity.run_id,
                    "model_shapes": {k: list(v) for k, v in shapes.items()} if shapes is not None else None}
    return {"level": facts.level, "problem": facts.problem, "sha256": facts.sha256,
            "incompatible": facts.incompatible, "identity": identity, "format": facts.format,
            "unsafe": facts.unsafe, "holds": facts.holds}


def _facts_from_json(data: dict[str, Any]) -> _Facts:
    identity = data.get("identity")
    if identity is not None:
        shapes = identity.get("model_shapes")
        identity = CheckpointIdentity(identity.get("run_id"),
                                      {k: tuple(v) for k, v in shapes.items()} if shapes is not None else None)
    return _Facts(level=data["level"], problem=data.get("problem"), sha256=data.get("sha256"),
                  incompatible=data.get("incompatible"), identity=identity,
                  format=data.get("format", "zip"), unsafe=data.get("unsafe"), holds=data.get("holds"))


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
    info.format, info.holds = facts.format, facts.holds
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
    elif facts.unsafe is not None:
        info.status, info.reason = "unsafe", facts.unsafe
    elif facts.format == "legacy":
        info.status, info.reason = "legacy", LEGACY_REASON
    elif facts.incompatible is not None:
        info.status, info.reason = "incompatible", facts.incompatible
    elif reference is not None and facts.identity is not None and \
            (why := _identity_difference(facts.identity, reference)) is not None:
        info.status, info.reason = "incompatible", why
    elif entry is None:
        info.status, info.reason = "unverified", _without_manifest(info.path, facts)
    else:
        info.status, info.reason = "ok", None
    return info


def _without_manifest(path: Path, facts: _Facts) -> str | None:
    """Why a file no manifest vouches for is unverified: inside a runctl run its entry is missing;
    beside another tool's files no manifest is expected, and only safetensors' limit is worth a word."""
    if in_runctl_run(path):
        return "no manifest entry"
    return SAFETENSORS_NOTE if facts.format == "safetensors" else None


def _full(file: BinaryIO, size: int, written_sha256: str | None) -> _Facts:
    problem, sha256 = zipscan.full_scan(file, size, written_sha256)
    return _Facts(level="full", problem=problem, sha256=sha256)


def _compute(path: Path, file: BinaryIO, size: int, level: str, known: dict[str, _Facts],
             written_sha256: str | None = None) -> _Facts:
    if size == 0:
        return _Facts(level=level, problem=EMPTY)
    try:
        head = file.read(len(_LEGACY_MAGIC))
        file.seek(0)
        if head.startswith(_LEGACY_MAGIC):
            return _legacy(path, file, level, known)
        if not head.startswith(_ZIP_MAGIC) and (
                path.suffix == ".safetensors" or safetensors_scan.looks_like_safetensors(head)):
            return _safetensors(file, size, level)
        if level == "quick":
            return _split_unsafe(_Facts(level="quick", problem=zipscan.quick_scan(file)))
        full = known.get("full") or _split_unsafe(_full(file, size, written_sha256))
        if level == "full" or full.problem is not None or full.unsafe is not None:
            return full
        return _deep(path, full, _name_of_open_file(path, file))
    except OSError as exc:
        return _Facts(level=level, problem=f"{UNREADABLE}: {exc.strerror or exc.__class__.__name__}")


def _split_unsafe(facts: _Facts) -> _Facts:
    """A pickle global that is data (a class of a library, numpy's array rebuild) is not damage:
    move it from `problem` to `unsafe`. One that imports code stays a problem."""
    problem = facts.problem or ""
    prefix = f"{UNSAFE_PICKLE}: "
    if not problem.startswith(prefix):
        return facts
    name = problem[len(prefix):]
    if " " in name or runs_code(name):  # "opcode STACK_GLOBAL", "undecodable pickle (...)", os.system
        return facts
    return replace(facts, problem=None, unsafe=not_loadable_safely(name))


def not_loadable_safely(global_name: str) -> str:
    """ "not loadable safely: pickled TrainingArguments (transformers.training_args.TrainingArguments)" """
    if global_name.split(".", 1)[0] == "numpy":
        what = "numpy arrays"
    else:
        what = global_name.rsplit(".", 1)[-1]
    return f"{NOT_LOADABLE_SAFELY}: pickled {what} ({global_name})"


def _sha256(file: BinaryIO) -> str:
    import hashlib

    file.seek(0)
    return hashlib.file_digest(file, "sha256").hexdigest()


def _legacy(path: Path, file: BinaryIO, level: str, known: dict[str, _Facts]) -> _Facts:
    bad = legacy_unsafe_globals(file)
    facts = _Facts(level=level, format="legacy")
    if bad is not None:
        facts = _split_unsafe(replace(facts, problem=f"{UNSAFE_PICKLE}: {bad}"))
    if level == "quick" or facts.problem is not None:
        return facts
    full = known.get("full") or replace(facts, level="full", sha256=_sha256(file))
    if level == "full" or full.unsafe is not None:
        return full
    return _deep(path, full, _name_of_open_file(path, file))


def _safetensors(file: BinaryIO, size: int, level: str) -> _Facts:
    header, problem = safetensors_scan.scan(file, size)
    if header is None:
        return _Facts(level=level, format="safetensors", problem=problem)
    holds = (f"model weights ({header.tensors} tensors, {header.parameters:,} values, "
             f"{'/'.join(header.dtypes)})")
    sha256 = None if level == "quick" else _sha256(file)
    return _Facts(level=level, format="safetensors", sha256=sha256, holds=holds)


# ----------------------------------------------------------------------------------------- deep

def _name_of_open_file(path: Path, file: BinaryIO) -> Path:
    """A name torch.load can open that is the file already open and checked, not whatever the
    path names by now (a FIFO swapped in would block the load): /proc's link to the descriptor."""
    proc = Path(f"/proc/self/fd/{file.fileno()}")
    return proc if proc.exists() else path


def _deep(path: Path, full: _Facts, source: Path | None = None) -> _Facts:
    """Load `source` (the checked open file, default `path`) weights-only; `path` names it."""
    import pickle

    import torch  # deep only: runs/ must import without torch

    try:
        # mmap needs the zip format; a legacy file is read into memory.
        state = torch.load(source or path, map_location="cpu", weights_only=True, mmap=full.format == "zip")
    except pickle.UnpicklingError as exc:
        refusal = _unpickler_refusal(exc)
        name = refusal.rsplit("GLOBAL ", 1)[-1].strip() if "GLOBAL " in refusal else None
        if name and not runs_code(name):
            return _deep_facts(full, unsafe=not_loadable_safely(name))
        return _deep_facts(full, problem=f"{UNSAFE_PICKLE}: {refusal}")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file it cannot load
        return _deep_facts(full, problem=f"{NOT_A_CHECKPOINT}: torch.load failed ({_first_line(exc)})")
    run_id = state.get("run_id") if isinstance(state, dict) else None
    identity = CheckpointIdentity(run_id=run_id if isinstance(run_id, str) else None, model_shapes=_shapes(state))
    runctl_format = isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT
    # A foreign file is judged by whether it loads; what a runctl resume needs is asked of runctl's own.
    incompatible = resume_problem(state) if runctl_format or in_runctl_run(path) else None
    return _deep_facts(full, incompatible=incompatible, identity=identity, holds=describe(state))


def _deep_facts(full: _Facts, **kwargs: Any) -> _Facts:
    return _Facts(level="deep", sha256=full.sha256, format=full.format, **kwargs)


def resume_problem(state: Any, required: Iterable[str] = RESUME_KEYS) -> str | None:
    """Why a loaded checkpoint `state` cannot start a resume (not runctl's format, or a key in
    `required` missing), or None. A single file's state holds every key; a step folder's runctl.pt
    holds the non-tensor ones (runs.step_folder), its tensors are DCP's."""
    if not isinstance(state, dict):
        return f"not a checkpoint dict (a {type(state).__name__})"
    if state.get("format") != CHECKPOINT_FORMAT:
        return f"format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
    missing = [key for key in required if key not in state]
    if missing:
        return f"lacks {', '.join(missing)}"
    if "model" in state and not isinstance(state["model"], dict):
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
