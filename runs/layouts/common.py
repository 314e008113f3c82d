"""What the foreign layouts share: steps and roles from file names, checkpoint records from stat or
from runs.integrity, the copy a `last.ckpt` is of, and the state a folder's files let one know."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from runctl.runs import integrity, safe_files
from runctl.runs.manifest import ManifestEntry, read_manifest
from runctl.runs.model import CheckpointInfo, RunSummary
from runctl.runs.pickle_peek import peek_checkpoint

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# A folder whose newest file changed this recently is taken as being written to (seconds).
ACTIVE_SECONDS = 60.0
# Keys that say a checkpoint's step, most telling first (read from data.pkl at verify levels).
STEP_KEYS = ("global_step", "step", "iter_num", "iteration", "iter")

# Step patterns, most specific first: Lightning's epoch=3-step=24, Hugging Face's checkpoint-500,
# checkpoint_step_01000, model_step000256, step_500, step=24, iter_2000.
_STEP_PATTERNS = (
    re.compile(r"epoch=\d+-step=(\d+)"),
    re.compile(r"(?:^|[^a-z])(?:global_)?step[_\-=]?(\d+)", re.IGNORECASE),
    re.compile(r"^checkpoint[_\-](\d+)(?:\.|$)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])iter(?:ation)?[_\-=]?(\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])ckpt[_\-](\d+)", re.IGNORECASE),
)
_ROLES = (
    (re.compile(r"^best"), "best"),
    (re.compile(r"^(final|model_final)"), "final"),
    (re.compile(r"^(last|latest|ckpt)([_\-.]|$)"), "last"),
)


# Every checkpoint-like name has a checkpoint suffix at its end or before a temporary marker: a
# search for it turns away the other names (images, code) without a Python loop over them.
_MAYBE_CHECKPOINT = re.compile(r"\.(?:pt|pth|ckpt|bin|safetensors)(?:\Z|\.tmp|\.part)", re.IGNORECASE)


def is_checkpoint_name(name: str) -> bool:
    """`x.pt`, `x.safetensors` ..., and their temporary names (`x.pt.tmp.123`, `x.ckpt.part`)."""
    if _MAYBE_CHECKPOINT.search(name) is None:
        return False
    lower = name.lower()
    if lower.endswith(CHECKPOINT_SUFFIXES):
        return True
    return ("tmp" in lower or "part" in lower) and strip_temp(lower).endswith(CHECKPOINT_SUFFIXES)


def any_checkpoint_name(names: Iterable[str]) -> bool:
    """Whether any of `names` is checkpoint-like (a folder of 1,000 images is looked at by every
    listing: the search runs over them in C, the full check only on the few it lets through)."""
    return any(is_checkpoint_name(name) for name in filter(_MAYBE_CHECKPOINT.search, names))


def is_temp(name: str) -> bool:
    """Names writers give a file before its final rename (`x.pt.tmp`, `x.pt.tmp.123`, `tmp-...`)."""
    lower = name.lower()
    return lower.endswith((".tmp", ".part", ".partial")) or ".tmp." in lower or lower.startswith("tmp")


def strip_temp(name: str) -> str:
    lower = name.lower()
    for marker in (".tmp.", ".tmp", ".part", ".partial"):
        index = lower.find(marker)
        if index > 0:
            return name[:index]
    return name


def step_from_name(name: str) -> int | None:
    stem = strip_temp(name)
    for pattern in _STEP_PATTERNS:
        match = pattern.search(stem)
        if match:
            return int(match.group(1))
    return None


def role_from_name(name: str) -> str | None:
    stem = strip_temp(name).lower()
    for pattern, role in _ROLES:
        if pattern.search(stem):
            return role
    return None


def checkpoint_record(path: Path, name: str, step: int | None, kind: str | None,
                      level: str | None, st: os.stat_result | None = None,
                      manifest_entry: ManifestEntry | None = None) -> CheckpointInfo:
    """One foreign checkpoint file: from stat alone (level None) or verified at `level` (against
    `manifest_entry` when the folder has a runctl manifest, e.g. checkpoints a resume set aside)."""
    if level is not None and not is_temp(path.name):
        info = integrity.verify_file(path, level, manifest_entry)
        # No manifest is expected beside another tool's files: its absence says nothing.
        reason = None if info.reason == "no manifest entry" else info.reason
        info = replace(info, name=name, step=step, kind=kind, reason=reason)
        if info.step is None and info.status in ("ok", "unverified"):
            info.step = step_from_content(path)
        return info
    info = CheckpointInfo(path=path, name=name, step=step, kind=kind, bytes=0, mtime=0.0, status="unverified")
    try:
        st = st or os.stat(path)
    except OSError as exc:
        info.status, info.reason = "unchecked", f"unreadable: {exc.strerror or exc.__class__.__name__}"
        return info
    info.bytes, info.mtime = st.st_size, st.st_mtime
    if is_temp(path.name):
        info.status, info.reason = "partial", "being written (temporary file)"
    elif st.st_size == 0:
        info.status, info.reason = "corrupt", integrity.EMPTY
    return info


def step_from_content(path: Path) -> int | None:
    """The step a checkpoint says it was saved at (global_step, step, iter_num ...), read statically."""
    values = peek_checkpoint(path, STEP_KEYS)
    for key in STEP_KEYS:
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class FileStat(NamedTuple):
    """What a listing needs of one checkpoint file: stat only, no record object."""

    name: str
    size: int
    mtime: float
    temp: bool


def scan_files(folder: str | Path) -> list[FileStat]:
    """The checkpoint-like files directly in `folder` (one scandir, one stat a file)."""
    found = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not is_checkpoint_name(entry.name):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                found.append(FileStat(entry.name, st.st_size, st.st_mtime, is_temp(entry.name)))
    except OSError:
        return []
    return found


def fill_from_stats(summary: RunSummary, files: list[FileStat], extra_files: Iterable[Path | str] = (),
                    finished: bool = False, count: int | None = None) -> None:
    """Counts, bytes, empty files, step (when none is known yet), updated_at and state of a listing
    from stat alone; `count` overrides the number of checkpoints (a folder of files is one)."""
    kept = [f for f in files if not f.temp]
    summary.checkpoints = len(kept) if count is None else count
    summary.checkpoint_bytes = sum(f.size for f in kept)
    empty = [f.name for f in kept if f.size == 0]
    if empty:
        summary.problems.append(f"{len(empty)} corrupt checkpoint(s): "
                                + ", ".join(f"{name} ({integrity.EMPTY})" for name in empty[:3]))
    if summary.step is None:
        steps = [s for f in kept if (s := step_from_name(f.name)) is not None]
        summary.step = max(steps) if steps else None
    mtimes = [f.mtime for f in files]
    extra = newest_mtime(extra_files)
    if extra is not None:
        mtimes.append(extra)
    summary.updated_at = max(mtimes) if mtimes else None
    finished = finished or any(role_from_name(f.name) == "final" for f in kept)
    summary.state = activity_state(finished, any(f.temp for f in files), summary.updated_at)


def folder_records(folder: Path, level: str | None, prefix: str = "") -> list[CheckpointInfo]:
    """Every checkpoint-like file directly in `folder`, step and role from its name."""
    infos = []
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if is_checkpoint_name(e.name) and _is_file(e)]
    except OSError:
        return []
    manifest = read_manifest(folder).files if level is not None else {}
    for entry in entries:
        st = _stat(entry)
        infos.append(checkpoint_record(Path(entry.path), prefix + entry.name, step_from_name(entry.name),
                                       role_from_name(entry.name), level, st, manifest.get(entry.name)))
    return infos


def mark_copies(infos: list[CheckpointInfo], level: str | None) -> None:
    """A `last`/`latest` file that is the same bytes as another checkpoint says so (`copy_of`):
    a symlink to it always, a byte copy when the sizes are equal and (levels above None) the
    sha256 is too."""
    for info in infos:
        if info.kind != "last" or info.status in ("missing", "partial"):
            continue
        others = [o for o in infos if o is not info and o.kind != "last" and o.status not in ("missing", "partial")]
        twin = None
        if os.path.islink(info.path):
            real = os.path.realpath(info.path)
            twin = next((o for o in others if os.path.realpath(o.path) == real), None)
        if twin is None and level is not None:
            same_size = [o for o in others if o.bytes == info.bytes and info.bytes > 0]
            if same_size:
                digest = info.sha256 or _sha256(info.path)
                twin = next((o for o in same_size if digest and (o.sha256 or _sha256(o.path)) == digest), None)
        if twin is not None:
            info.copy_of = twin.name


def order(infos: Iterable[CheckpointInfo]) -> list[CheckpointInfo]:
    return sorted(infos, key=lambda i: (i.step is None, i.step or 0, i.mtime, i.name))


def activity_state(finished: bool, temp_present: bool, newest_mtime: float | None,
                   now: float | None = None) -> str:
    """What a foreign run's files let one know: finished when its records say the last step was
    reached, running when a temporary file sits beside the checkpoints or a file changed in the
    last minute, else unknown."""
    if finished:
        return "finished"
    now = time.time() if now is None else now
    if temp_present or (newest_mtime is not None and now - newest_mtime < ACTIVE_SECONDS):
        return "running"
    return "unknown"


def newest_mtime(paths: Iterable[Path | str]) -> float | None:
    newest = None
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        newest = mtime if newest is None else max(newest, mtime)
    return newest


def _sha256(path: Path) -> str | None:
    try:
        return safe_files.sha256_of(path)
    except OSError:
        return None


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _stat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat()
    except OSError:
        return None


def base_summary(run_dir: Path, layout: str) -> RunSummary:
    return RunSummary(path=run_dir, run_id=run_dir.name, name=run_dir.name, layout=layout, state="unknown")
