"""Integrity of a sharded checkpoint: a step folder written by torch.distributed.checkpoint.

`step_00001000/` holds DCP's `.metadata` (a pickle, written last by DCP: its commit marker), one
`__<rank>_0.distcp` per saving rank, and runctl's `runctl.pt` (the step's non-tensor state, a
weights_only torch.save file). The manifest entry lists every file with its bytes and sha256.

quick: the folder holds exactly the listed files, each of the listed size; runctl.pt's zip is intact.
full:  the sha256 of every file against the manifest (and runctl.pt's zip CRCs).
deep:  full, then runctl.pt loads with weights_only=True and has what a resume needs, and
       `.metadata`, whose sha256 has just matched the manifest, is read by DCP's own reader: it
       must list the model's and the optimizer's tensors. A folder the manifest does not list is
       `unverified` at every level and its `.metadata` is never read: nothing vouches for that pickle.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from runctl.runs.layout import DCP_METADATA, STEP_STATE, is_temp_name, step_from_name
from runctl.runs.manifest import ManifestEntry
from runctl.runs.model import CheckpointInfo

_CHUNK = 1 << 20
# The non-tensor keys a resume reads from runctl.pt; the tensors (model, optimizer) are DCP's.
STEP_STATE_KEYS = ("format", "step", "rng", "data")


def folder_files(folder: Path) -> dict[str, os.stat_result]:
    """{name: stat} of the entries in a step folder (lstat: a symlink is reported, not followed)."""
    with os.scandir(folder) as entries:
        return {entry.name: entry.stat(follow_symlinks=False) for entry in entries}


def folder_bytes(folder: Path) -> tuple[int, float]:
    """Total size and newest mtime of a step folder's regular files; (0, 0.0) if unreadable."""
    try:
        files = folder_files(folder)
    except OSError:
        return 0, 0.0
    regular = [st for st in files.values() if stat.S_ISREG(st.st_mode)]
    return sum(st.st_size for st in regular), max((st.st_mtime for st in regular), default=0.0)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_step_folder(path: Path, level: str = "quick", entry: ManifestEntry | None = None) -> CheckpointInfo:
    """Verify a step folder at `level`; never raises for anything wrong with it."""
    path = Path(path)
    info = CheckpointInfo(path=path, name=path.name, step=entry.step if entry else step_from_name(path.name),
                          kind=entry.kind if entry else None, bytes=0, mtime=0.0, status="unchecked")
    info.bytes, info.mtime = folder_bytes(path)
    if is_temp_name(path.name):
        info.status, info.reason = "partial", "being written (temporary folder)"
        return info
    try:
        files = folder_files(path)
    except FileNotFoundError:
        info.status, info.reason = "missing", "folder not found"
        return info
    except OSError as exc:
        info.reason = f"unreadable: {exc.strerror or exc.__class__.__name__}"
        return info
    info.level = level
    problem = _shape_problem(files, entry)
    if problem is None and level in ("full", "deep") and entry is not None and entry.files is not None:
        problem = _hash_problem(path, entry)
        info.sha256 = entry.sha256 if problem is None else None
    if problem is None:
        problem = _state_file_problem(path, level, entry)
    if problem is not None:
        info.status, info.reason = ("unchecked", problem) if problem.startswith("unreadable") else ("corrupt", problem)
        return info
    if entry is None or entry.files is None:
        info.status, info.reason = "unverified", f"no manifest entry (its {DCP_METADATA}, a pickle, is not read)"
        return info
    if level == "deep":
        incompatible = resume_problem(path)
        if incompatible is not None:
            info.status, info.reason = "incompatible", incompatible
            return info
    info.status, info.reason = "ok", None
    return info


def _shape_problem(files: dict[str, os.stat_result], entry: ManifestEntry | None) -> str | None:
    odd = sorted(name for name, st in files.items() if not stat.S_ISREG(st.st_mode))
    if odd:
        return f"not a step folder: {odd[0]} is not a regular file"
    for needed in (DCP_METADATA, STEP_STATE):
        if needed not in files:
            return f"truncated: {needed} missing"
    if entry is None or entry.files is None:
        return None
    for name, listed in sorted(entry.files.items()):
        if name not in files:
            return f"truncated: {name} missing"
        size = files[name].st_size
        if size != listed["bytes"]:
            word = "truncated" if size < listed["bytes"] else "size mismatch"
            return f"{word}: {name} has {size} bytes, manifest says {listed['bytes']}"
    extra = sorted(set(files) - set(entry.files))
    if extra:
        return f"unlisted file {extra[0]} (not written with this checkpoint)"
    return None


def _hash_problem(path: Path, entry: ManifestEntry) -> str | None:
    assert entry.files is not None
    for name, listed in sorted(entry.files.items()):
        try:
            digest = sha256_of(path / name)
        except OSError as exc:
            return f"unreadable: {name}: {exc.strerror or exc.__class__.__name__}"
        if digest != listed["sha256"]:
            return f"sha256 mismatch: {name}, manifest says {listed['sha256'][:12]}..."
    return None


def _state_file_problem(path: Path, level: str, entry: ManifestEntry | None) -> str | None:
    """runctl.pt's zip structure (quick) or its record CRCs (full): it is unpickled only deep."""
    from runctl.runs.integrity import verify_file

    listed = (entry.files or {}).get(STEP_STATE) if entry is not None else None
    state_entry = ManifestEntry(step=entry.step, bytes=listed["bytes"], sha256=listed["sha256"], saved_at=0.0,
                                kind=entry.kind) if entry is not None and listed else None
    checked = verify_file(path / STEP_STATE, "quick" if level == "quick" else "full", state_entry)
    if checked.status in ("ok", "unverified"):
        return None
    return f"{STEP_STATE}: {checked.reason or checked.status}"


def resume_problem(path: Path) -> str | None:
    """Why a resume cannot use this verified step folder (torch imported here, lazily), or None."""
    from runctl.runs.integrity import resume_problem as state_problem

    problem = state_problem(load_step_state(path), required=STEP_STATE_KEYS)
    if problem is not None:
        return f"{STEP_STATE}: {problem}"
    shapes = tensor_shapes(path)
    for prefix in ("model", "optimizer"):
        if not any(name.startswith(prefix + ".") for name in shapes):
            return f"{DCP_METADATA} lists no {prefix} tensors"
    return None


def load_step_state(path: Path) -> Any:
    import torch

    return torch.load(Path(path) / STEP_STATE, map_location="cpu", weights_only=True)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{dotted key: global shape} of every tensor DCP's `.metadata` lists. Call only after the
    file's sha256 has matched the manifest: DCP unpickles it."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = FileSystemReader(str(path)).read_metadata()
    return {key: tuple(meta.size) for key, meta in metadata.state_dict_metadata.items()
            if isinstance(meta, TensorStorageMetadata)}
