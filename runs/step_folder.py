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

A folder is written by anyone: a member that is not a regular file (a FIFO, a socket, a device, a
folder, any symlink; DCP writes none of these) makes the step folder `corrupt` with a reason that
names the member and what it is, at every level, before any member is opened; every member that is
read is opened through runs.safe_files (a FIFO swapped in after the listing cannot block the open).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.integrity import NOT_REGULAR, UNREADABLE, read_failed, verify_file
from runctl.runs.integrity import resume_problem as state_problem
from runctl.runs.layout import DCP_METADATA, STEP_STATE, is_temp_name, step_from_name
from runctl.runs.manifest import ManifestEntry
from runctl.runs.model import CheckpointInfo

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


def irregular_member(folder: Path, files: dict[str, os.stat_result]) -> str | None:
    """"<member> is a <what>" for the first member of a step folder that is not a regular file
    (a symlink is named by where it leads: "link to fifo", "link leaving the step folder"), or None."""
    for name in sorted(files):
        mode = files[name].st_mode
        if stat.S_ISREG(mode):
            continue
        if stat.S_ISLNK(mode):
            what = safe_files.irregularity(folder / name, within=folder) or "symbolic link"
            what = what.replace("the run folder", "the step folder")
        else:
            what = safe_files.kind_of(mode) or "special file"
        return f"{name} is a {what}"
    return None


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
    except OSError as exc:
        return read_failed(info, exc, "folder")
    info.level = level
    irregular = irregular_member(path, files)
    if irregular is not None:
        info.status, info.reason = "corrupt", f"{NOT_REGULAR}: {irregular}"
        return info
    problem = _shape_problem(files, entry)
    if problem is None and level in ("full", "deep") and entry is not None and entry.files is not None:
        problem = _hash_problem(path, entry)
        info.sha256 = entry.sha256 if problem is None else None
    if problem is None:
        problem = _state_file_problem(path, level, entry)
    if problem is not None:
        info.status, info.reason = ("unchecked", problem) if problem.startswith(UNREADABLE) else ("corrupt", problem)
        return info
    if entry is None or entry.files is None:
        info.status, info.reason = "unverified", f"no manifest entry (its {DCP_METADATA}, a pickle, is not read)"
        return info
    if level == "deep":
        incompatible = resume_problem(path, entry.files[DCP_METADATA]["sha256"])
        if incompatible is not None:
            info.status, info.reason = "incompatible", incompatible
            return info
    info.status, info.reason = "ok", None
    return info


def _shape_problem(files: dict[str, os.stat_result], entry: ManifestEntry | None) -> str | None:
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
            digest = safe_files.sha256_of(path / name)
        except safe_files.NotRegularFile as exc:  # swapped in after the listing
            return f"{NOT_REGULAR}: {name} is a {exc.kind}"
        except OSError as exc:
            return f"{UNREADABLE}: {name}: {exc.strerror or exc.__class__.__name__}"
        if digest != listed["sha256"]:
            return f"sha256 mismatch: {name}, manifest says {listed['sha256'][:12]}..."
    return None


def _state_file_problem(path: Path, level: str, entry: ManifestEntry | None) -> str | None:
    """runctl.pt's zip structure (quick) or its record CRCs (full): it is unpickled only deep."""
    listed = (entry.files or {}).get(STEP_STATE) if entry is not None else None
    state_entry = ManifestEntry(step=entry.step, bytes=listed["bytes"], sha256=listed["sha256"], saved_at=0.0,
                                kind=entry.kind) if entry is not None and listed else None
    checked = verify_file(path / STEP_STATE, "quick" if level == "quick" else "full", state_entry, within=path)
    if checked.status in ("ok", "unverified"):
        return None
    return f"{STEP_STATE}: {checked.reason or checked.status}"


def resume_problem(path: Path, metadata_sha256: str) -> str | None:
    """Why a resume cannot use this verified step folder (torch imported here, lazily), or None."""
    problem = state_problem(load_step_state(path), required=STEP_STATE_KEYS)
    if problem is not None:
        return f"{STEP_STATE}: {problem}"
    shapes = tensor_shapes(path, metadata_sha256)
    for prefix in ("model", "optimizer"):
        if not any(name.startswith(prefix + ".") for name in shapes):
            return f"{DCP_METADATA} lists no {prefix} tensors"
    return None


def load_step_state(path: Path) -> Any:
    """runctl.pt, loaded weights_only from the regular file opened and checked (safe_files)."""
    import torch

    with safe_files.open_regular(Path(path) / STEP_STATE) as file:
        return torch.load(file, map_location="cpu", weights_only=True)


def tensor_shapes(path: Path, sha256: str) -> dict[str, tuple[int, ...]]:
    """{dotted key: global shape} of every tensor DCP's `.metadata` lists. `.metadata` is a pickle:
    its bytes are read once (a regular file only), compared with `sha256` (the manifest's), and
    only those bytes are unpickled, as DCP's own reader does (ValueError if they do not match)."""
    import pickle

    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    data = safe_files.read_bytes(Path(path) / DCP_METADATA, limit=safe_files.MAX_HISTORY_BYTES)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{Path(path) / DCP_METADATA}: sha256 does not match the manifest")
    metadata = pickle.loads(data)  # noqa: S301 - the manifest vouches for these exact bytes
    return {key: tuple(meta.size) for key, meta in metadata.state_dict_metadata.items()
            if isinstance(meta, TensorStorageMetadata)}
