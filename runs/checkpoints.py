"""A run's checkpoints: what is there, what should be there, and which one a resume will use.

`newest_valid` is the one answer to "which checkpoint does resume load?": the engine, the CLI and
the UI all call it, so they always agree.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.runs import integrity, safe_files
from runctl.runs.layout import (
    CHECKPOINT_DIR,
    LIVE_STATES,
    MANIFEST_JSON,
    QUARANTINE_DIR,
    REASONS_JSON,
    SET_ASIDE_DIRS,
    TEMP_MARKER,
    checkpoint_name,
    is_step_folder_name,
    is_temp_name,
    step_from_name,
)
from runctl.runs.manifest import Manifest, ManifestEntry, read_manifest
from runctl.runs.model import CheckpointInfo
from runctl.runs.step_folder import folder_bytes, folder_files, irregular_member

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# Statuses a resume may load: intact files, with or without a manifest entry (a crash between
# the rename and the manifest update leaves a complete file that the manifest does not list yet).
VALID_STATUSES = ("ok", "unverified")


def _is_checkpoint_name(name: str) -> bool:
    base = name.split(TEMP_MARKER, 1)[0]
    return base.endswith(CHECKPOINT_SUFFIXES) or is_step_folder_name(name)


def _size_and_mtime(entry: os.DirEntry[str]) -> tuple[int, float]:
    """A file's size, or a step folder's total (its files' sizes); raises OSError like stat."""
    st = entry.stat()
    if entry.is_dir() and is_step_folder_name(entry.name):
        return folder_bytes(Path(entry.path))
    return st.st_size, st.st_mtime


def _scan(ckpt_dir: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(ckpt_dir) as entries:
            return [e for e in entries if _is_checkpoint_name(e.name)]
    except OSError:  # absent, a file, a symlink loop, no permission: discovery reports which
        return []


def _order(info: CheckpointInfo) -> tuple[int, int, float, str]:
    return (info.step is None, info.step or 0, info.mtime, info.name)


def list_checkpoints(run_dir: Path, level: str | None = "quick", manifest: Manifest | None = None,
                     folder: Path | None = None) -> list[CheckpointInfo]:
    """Every checkpoint file of a runctl run, oldest first; temp files as `partial`.

    level None reads no checkpoint bytes: the status then comes from stat and the manifest only
    (`level` stays None in each record), which is what a fast listing of many runs can afford.
    Files the manifest lists but that are gone are reported as `missing`. `folder` overrides
    where the files are (default: the run's checkpoints/), e.g. a plain folder of .pt files.
    """
    ckpt_dir = Path(folder) if folder is not None else Path(run_dir) / CHECKPOINT_DIR
    manifest = read_manifest(ckpt_dir) if manifest is None else manifest
    infos: list[CheckpointInfo] = []
    seen = set()
    for entry in _scan(ckpt_dir):
        seen.add(entry.name)
        manifest_entry = manifest.files.get(entry.name)
        if level is not None and entry.name.endswith(".bin") and not integrity.is_torch_file(Path(entry.path)):
            continue  # a data file (nanoGPT's train.bin), not a torch.save
        if level is None:
            info = _from_stat(Path(entry.path), entry, manifest_entry, run_dir)
        else:
            info = integrity.verify_file(Path(entry.path), level, manifest_entry, within=run_dir)
        if info.status in ("unchecked", "missing") and not os.path.lexists(entry.path):
            continue  # deleted since the scan (retention, a user): no longer a checkpoint of the run
        infos.append(info)
    gone = [name for name in manifest.files if name not in seen]
    moved = moved_aside(run_dir, {name: manifest.files[name] for name in gone}) if gone and folder is None else set()
    for name in gone:
        manifest_entry = manifest.files[name]
        if name not in moved:
            infos.append(CheckpointInfo(path=ckpt_dir / name, name=name, step=manifest_entry.step,
                                        kind=manifest_entry.kind, bytes=0, mtime=0.0, status="missing",
                                        reason=f"listed in {MANIFEST_JSON} but the file is gone"))
    if level == "deep":
        _mark_incompatible_models(infos, manifest)
    infos.sort(key=_order)
    return infos


def _irregularity(entry: os.DirEntry[str], run_dir: Path | str) -> str | None:
    """What a non-regular entry is (see safe_files.irregularity); None for a regular file, which
    the directory entry's type answers without a system call."""
    if entry.is_file(follow_symlinks=False):
        return None
    if is_step_folder_name(entry.name) and entry.is_dir(follow_symlinks=False):
        return None  # a sharded checkpoint: a folder of files, read by runs.step_folder
    return safe_files.irregularity(entry.path, within=run_dir)


def _from_stat(path: Path, entry: os.DirEntry[str], manifest_entry: ManifestEntry | None,
               run_dir: Path) -> CheckpointInfo:
    info = CheckpointInfo(path=path, name=entry.name,
                          step=manifest_entry.step if manifest_entry else step_from_name(entry.name),
                          kind=manifest_entry.kind if manifest_entry else None,
                          bytes=0, mtime=0.0, status="unchecked")
    irregular = _irregularity(entry, run_dir)
    if irregular is not None:
        info.status, info.reason = integrity.not_regular_status(irregular)
        return info
    try:
        info.bytes, info.mtime = _size_and_mtime(entry)
    except OSError as exc:
        info.reason = f"unreadable: {exc.strerror or exc.__class__.__name__}"
        return info
    info.status, info.reason = _classify(entry.name, info.bytes, manifest_entry, _member_problem(entry))
    return info


def _member_problem(entry: os.DirEntry[str]) -> str | None:
    """Why a step folder holds something that is not a regular file (lstat only: nothing opened)."""
    if is_temp_name(entry.name) or not (is_step_folder_name(entry.name) and entry.is_dir(follow_symlinks=False)):
        return None
    try:
        member = irregular_member(Path(entry.path), folder_files(Path(entry.path)))
    except OSError:
        return None  # gone or unreadable: the size said what it could
    return f"{integrity.NOT_REGULAR}: {member}" if member else None


def _classify(name: str, size: int, manifest_entry: ManifestEntry | None,
              member_problem: str | None = None) -> tuple[str, str | None]:
    """Status and reason from the name, the size, a step folder's member listing and the manifest
    alone (no bytes read)."""
    if is_temp_name(name):
        return "partial", "being written (temporary file)"
    if member_problem is not None:
        return "corrupt", member_problem
    if size == 0:
        return "corrupt", integrity.EMPTY
    if manifest_entry is None:
        return "unverified", "no manifest entry"
    if size != manifest_entry.bytes:
        word = integrity.TRUNCATED if size < manifest_entry.bytes else integrity.SIZE_MISMATCH
        return "corrupt", f"{word}: {size} bytes, manifest says {manifest_entry.bytes}"
    return "ok", None


@dataclass
class CheckpointTally:
    """What a listing of many runs needs about one run's checkpoints, from stat and the manifest."""

    count: int = 0                                   # files on disk, temp files excluded
    bytes: int = 0
    steps: set[int] = field(default_factory=set)     # steps of the files on disk
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    partial: int = 0
    gone: list[int] = field(default_factory=list)    # steps the manifest lists whose file is gone


def tally_checkpoints(run_dir: Path, manifest: Manifest | None = None) -> CheckpointTally:
    """Counts, sizes and size-level damage of a run's checkpoints; reads no checkpoint bytes.

    The cheap sibling of list_checkpoints(level=None) (no record objects), so `runctl ls` on
    a thousand runs stays well under a second.
    """
    ckpt_dir = os.path.join(run_dir, CHECKPOINT_DIR)
    manifest = read_manifest(Path(ckpt_dir)) if manifest is None else manifest
    tally = CheckpointTally()
    seen = set()
    for entry in _scan(Path(ckpt_dir)):
        seen.add(entry.name)
        manifest_entry = manifest.files.get(entry.name)
        irregular = _irregularity(entry, run_dir)
        if irregular is not None:
            tally.count += 1
            status, reason = integrity.not_regular_status(irregular)
            if status == "corrupt":
                tally.corrupt.append((entry.name, reason))
            continue
        try:
            size, _ = _size_and_mtime(entry)
        except FileNotFoundError:
            continue  # deleted since the scan (retention, a user)
        except OSError as exc:
            tally.corrupt.append((entry.name, f"unreadable: {exc.strerror or exc.__class__.__name__}"))
            continue
        status, reason = _classify(entry.name, size, manifest_entry, _member_problem(entry))
        if status == "partial":
            tally.partial += 1
            continue
        tally.count += 1
        tally.bytes += size
        step = manifest_entry.step if manifest_entry else step_from_name(entry.name)
        if step is not None:
            tally.steps.add(step)
        if status == "corrupt":
            tally.corrupt.append((entry.name, reason or ""))
    gone = {name: e for name, e in manifest.files.items() if name not in seen}
    moved = moved_aside(Path(run_dir), gone) if gone else set()
    tally.gone = sorted(e.step for name, e in gone.items() if name not in moved)
    return tally


def quarantined_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """The checkpoints a resume skipped and moved to RUN/quarantine/<time>-from-<step>/: status
    `quarantined`, name `quarantine/<folder>/<file>`, the reason it was skipped in `reason`.
    Reads no checkpoint bytes (`runctl verify RUN/quarantine/<folder>` verifies the files)."""
    infos: list[CheckpointInfo] = []
    for folder in set_aside_folders(run_dir):
        if folder.parent.name != QUARANTINE_DIR:
            continue
        manifest = read_manifest(folder)
        reasons = _read_reasons(folder / REASONS_JSON)
        where = f"{QUARANTINE_DIR}/{folder.name}"
        for entry in _scan(folder):
            if is_temp_name(entry.name):
                continue
            listed = manifest.files.get(entry.name)
            try:
                st = entry.stat()
            except OSError:
                continue
            why = reasons.get(entry.name) or "reason not recorded"
            infos.append(CheckpointInfo(
                path=Path(entry.path), name=f"{where}/{entry.name}",
                step=listed.step if listed else step_from_name(entry.name),
                kind=listed.kind if listed else None, bytes=st.st_size, mtime=st.st_mtime,
                status="quarantined", reason=f"skipped by resume: {why}"))
    infos.sort(key=_order)
    return infos


def _read_reasons(path: Path) -> dict[str, str]:
    try:
        raw = safe_files.read_json(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    files = raw.get("files") if isinstance(raw, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def set_aside_folders(run_dir: Path) -> list[Path]:
    """RUN/superseded/* then RUN/quarantine/*, each oldest first (by name: its time): the folders of
    checkpoints moved out of checkpoints/."""
    folders: list[Path] = []
    for kind in SET_ASIDE_DIRS:
        try:
            with os.scandir(Path(run_dir) / kind) as entries:
                folders += sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return folders


def moved_aside(run_dir: Path, entries: Mapping[str, ManifestEntry]) -> set[str]:
    """The names among `entries` (manifest entries whose file is gone from checkpoints/) whose file,
    of the listed size, lies in a set-aside folder: a move whose last manifest write was cut short
    by a kill (the next start finishes it, runs.store.RunStore.recover), not a lost checkpoint."""
    found: set[str] = set()
    for folder in set_aside_folders(run_dir):
        for name, entry in entries.items():
            try:
                if name not in found and os.stat(folder / name).st_size == entry.bytes:
                    found.add(name)
            except OSError:
                continue
    return found


def _identity_key(identity: integrity.CheckpointIdentity) -> tuple[Any, ...]:
    return identity.run_id, tuple(sorted((identity.model_shapes or {}).items()))


def _run_reference(infos: list[CheckpointInfo], manifest: Manifest) -> integrity.CheckpointIdentity | None:
    """The identity of the run's trusted checkpoints: the most common among those the manifest
    lists (the engine vouched for them), else among all; on a tie, the newest one's."""
    identities = {i.name: ident for i in infos if i.status in VALID_STATUSES
                  and (ident := integrity.identity_of(i.path)) is not None}
    listed = {name: ident for name, ident in identities.items() if name in manifest.files}
    pool = listed or identities
    if not pool:
        return None
    votes = Counter(_identity_key(ident) for ident in pool.values())
    top = max(votes.values())
    newest_first = sorted((i for i in infos if i.name in pool), key=_order, reverse=True)
    return next(pool[i.name] for i in newest_first if votes[_identity_key(pool[i.name])] == top)


def _mark_incompatible_models(infos: list[CheckpointInfo], manifest: Manifest) -> None:
    """Deep: a checkpoint saved by another run or holding another model than the run's own."""
    reference = _run_reference(infos, manifest)
    if reference is None:
        return
    for i, info in enumerate(infos):
        if info.status in VALID_STATUSES:
            infos[i] = integrity.verify_file(info.path, "deep", manifest.files.get(info.name), reference=reference)


def newest_valid(run_dir: Path, level: str = "full") -> tuple[CheckpointInfo | None, list[CheckpointInfo]]:
    """The checkpoint a resume will load, and the newer ones skipped (each with its reason).

    Checks files newest first (by step, then mtime) and stops at the first intact one, so a run
    with 20 good checkpoints costs one verification. A file no manifest entry vouches for is
    either the newest save of an engine killed before its manifest update, or a stranger (copied
    in from another run); it is loaded (deep) and compared with the run's listed checkpoints
    before a resume may use it.
    """
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    manifest = read_manifest(ckpt_dir)
    candidates = sorted(list_checkpoints(run_dir, level=None, manifest=manifest), key=_order, reverse=True)
    skipped: list[CheckpointInfo] = []
    for listed in candidates:
        if listed.status in ("partial", "missing"):
            skipped.append(listed)
            continue
        if listed.reason and listed.reason.startswith(integrity.NOT_REGULAR):
            skipped.append(listed)
            continue
        info = integrity.verify_file(listed.path, level, manifest.files.get(listed.name), within=run_dir)
        if info.status == "unverified" and listed.path.is_dir():
            skipped.append(info)  # nothing vouches for its .metadata pickle: never loaded
            continue
        if info.status == "unverified" and level != "deep":
            info = _vouch_for_unlisted(info, candidates, manifest, level)
        if info.status in VALID_STATUSES:
            return info, skipped
        skipped.append(info)
    return None, skipped


def _vouch_for_unlisted(info: CheckpointInfo, candidates: list[CheckpointInfo], manifest: Manifest,
                        level: str) -> CheckpointInfo:
    """`info` if a deep look finds it belongs to this run, else the deep verdict (incompatible)."""
    try:
        import torch  # noqa: F401 - without torch (a reader-only install) the deep look is impossible
    except ImportError:
        return info
    reference = _trusted_identity(candidates, manifest, exclude=info.name)
    deep = integrity.verify_file(info.path, "deep", None, reference=reference)
    return info if deep.status in VALID_STATUSES else deep


def trusted_identity(run_dir: Path, exclude: str | None = None) -> integrity.CheckpointIdentity | None:
    """The identity (run_id, model shapes) of the run's newest checkpoint that its manifest lists
    and that verifies deep: what another file must match to belong to this run. Loads one file."""
    manifest = read_manifest(Path(run_dir) / CHECKPOINT_DIR)
    candidates = sorted(list_checkpoints(run_dir, level=None, manifest=manifest), key=_order, reverse=True)
    return _trusted_identity(candidates, manifest, exclude)


def _trusted_identity(newest_first: list[CheckpointInfo], manifest: Manifest,
                      exclude: str | None) -> integrity.CheckpointIdentity | None:
    for other in newest_first:
        if other.name != exclude and other.name in manifest.files and other.status == "ok":
            checked = integrity.verify_file(other.path, "deep", manifest.files[other.name])
            if checked.status == "ok":
                return integrity.identity_of(other.path)
    return None


def expected_checkpoints(cfg: Mapping[str, Any], state: str, step: int | None,
                         present: Iterable[int] = ()) -> list[int]:
    """The steps whose checkpoints should exist now, given the config, the state and the step.

    Saves happen at every multiple of checkpoint.every up to `step` (for a running run, up to one
    interval earlier: the newest save may still be being written), at max_steps when the run
    finished (the final one) and at the step a stopped run stopped. Retention, like the engine's,
    then keeps the newest keep_last files on disk, whatever their kind: `present` (the steps of
    the checkpoints that exist, e.g. best ones saved at evaluations) compete for those places.
    The final checkpoint is always kept. What this returns is thus never more than a correct
    engine leaves behind: reported missing means lost.
    """
    ckpt_cfg = cfg.get("checkpoint") if isinstance(cfg.get("checkpoint"), Mapping) else {}
    every = _positive_int(ckpt_cfg.get("every"))
    # None keeps all; otherwise at least the newest one survives (the engine's rule).
    keep_last = _non_negative_int(ckpt_cfg.get("keep_last"))
    current = _non_negative_int(step) or 0
    # A running engine's newest periodic save may still be in flight (async checkpoints).
    settled = max(0, current - every) if state in LIVE_STATES and every else current
    saved: set[int] = set(range(every, settled + 1, every)) if every else set()
    final = None
    if state == "finished":
        final = _final_max_steps(cfg) or current or None
    elif state == "stopped" and current > 0:
        saved.add(current)
    if final is not None:
        saved.add(final)
    on_disk = sorted(saved | {s for s in present if isinstance(s, int)})
    kept = set(on_disk if keep_last is None else on_disk[-max(keep_last, 1):])
    if final is not None:
        kept.add(final)
    return sorted(s for s in kept if s > 0)


def missing_checkpoints(expected: Iterable[int], present: Iterable[CheckpointInfo],
                        ckpt_dir: Path) -> list[CheckpointInfo]:
    """A `missing` record for every expected step that no file (intact or not) covers."""
    # A file the manifest lists but that is gone already has its own `missing` record.
    have = {info.step for info in present if info.status != "partial"}
    return [CheckpointInfo(path=ckpt_dir / checkpoint_name(step), name=checkpoint_name(step), step=step,
                           kind=None, bytes=0, mtime=0.0, status="missing",
                           reason="expected from checkpoint.every, max_steps and keep_last")
            for step in expected if step not in have]


def _final_max_steps(cfg: Mapping[str, Any]) -> int | None:
    """max_steps, raised by any `runctl extend` recorded in run.yaml's extensions."""
    value = _positive_int(cfg.get("max_steps"))
    extensions = cfg.get("extensions")
    if isinstance(extensions, list):
        for ext in extensions:
            if isinstance(ext, Mapping) and _positive_int(ext.get("max_steps")):
                value = _positive_int(ext.get("max_steps"))
    return value


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _non_negative_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
