"""What runs.watch keeps of the runs other tools wrote, found by runs.discovery at any depth.

Such a run is watched through the folders its layout keeps files in (runs.discovery.run_folders:
a Lightning version_N/ and its checkpoints/, a Hugging Face output_dir and each checkpoint-N/,
else the run folder alone), never deeper, so its snapshot is one scandir of each and a stat a
file. A change is typed by the file's name: a checkpoint-like file (runs.layouts.common) is a
checkpoint, in a temporary name or folder a partial one; any other file is one of the records
the tool appends to or rewrites (metrics.csv, trainer_state.json, a text log, TensorBoard
events), reported as metrics appended.

Plain data and functions: runs.watch turns the (kind, path) pairs into its typed changes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runctl.runs.discovery import Detector, recognise_folder, run_folders
from runctl.runs.layout import RUN_YAML, STATUS_JSON
from runctl.runs.layouts import common, hf_trainer, lightning, tensorboard

# (inode, size, mtime_ns), as runs.watch compares runctl's own files.
Signature = tuple[int, int, int]

# Names whose appearance can make their folder a run (of any layout), so a file written where no
# known run is gets its folder looked at; any other file there (a dataset, code) costs nothing.
_MARKER_NAMES = frozenset({hf_trainer.STATE, lightning.HPARAMS, lightning.METRICS_CSV, RUN_YAML, STATUS_JSON})


@dataclass(frozen=True)
class ForeignSnapshot:
    """One run of another tool as the watcher last saw it."""

    folders: tuple[Path, ...]          # the run folder first, then its layout's subfolders
    files: dict[str, Signature]        # path relative to the run folder -> signature


def snapshot_foreign(run_dir: Path, detector: Detector | None = None) -> ForeignSnapshot | None:
    """Stat the files of another tool's run; None when `run_dir` is not (or no longer) one. With
    `detector` (a walk just recognised the folder), the folder is not recognised again."""
    run_dir = Path(run_dir)
    detector = detector or recognise_folder(run_dir)
    if detector is None or detector.writable:
        return None
    folders = tuple(run_folders(run_dir, detector))
    files: dict[str, Signature] = {}
    for folder in folders:
        prefix = "" if folder == run_dir else f"{folder.relative_to(run_dir).as_posix()}/"
        try:
            with os.scandir(folder) as it:
                entries = [entry for entry in it if not entry.name.startswith(".")]
        except OSError:
            continue
        for entry in entries:
            signature = file_signature(entry)
            if signature is not None:
                files[prefix + entry.name] = signature
    return ForeignSnapshot(folders, files)


def diff_foreign(run_dir: Path, old: ForeignSnapshot | None, new: ForeignSnapshot | None) -> list[tuple[str, Path]]:
    """(runs.watch.ChangeKind value, path) pairs that take a foreign run from `old` to `new`."""
    if old is None and new is None:
        return []
    if old is None:
        return [("run_added", run_dir)]
    if new is None:
        return [("run_removed", run_dir)]
    changes: list[tuple[str, Path]] = []
    for name in sorted(old.files.keys() | new.files.keys()):
        before, after = old.files.get(name), new.files.get(name)
        if before == after:
            continue
        folder, _, base = name.rpartition("/")
        if not common.is_checkpoint_name(base):
            kind = "metrics_appended"
        elif common.is_temp(base) or common.is_temp(folder):
            kind = "checkpoint_changed"  # a save in progress (HF's tmp-checkpoint-N/ too)
        elif before is None:
            kind = "checkpoint_added"
        elif after is None:
            kind = "checkpoint_removed"
        else:
            kind = "checkpoint_changed"
        changes.append((kind, run_dir / name))
    return changes


def may_mark_a_run(name: str) -> bool:
    """Whether a file called `name` can make the folder it is in a run of some layout."""
    return (name in _MARKER_NAMES or name.startswith(tensorboard.EVENTS_PREFIX)
            or common.is_checkpoint_name(name))


def file_signature(entry: os.DirEntry[str]) -> Signature | None:
    """(inode, size, mtime) of a regular file, following links; None for anything else."""
    try:
        st = entry.stat(follow_symlinks=True)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
