"""Finding runs under a root and summarizing each one, whoever wrote it.

Each layout of run folder has one small detector: `detect(path)` says whether a folder is a run
of that layout, `summarize(path)` reads it into a RunSummary. Only runctl's own layout exists
today; nanoGPT's out/ckpt.pt, Hugging Face's checkpoint-N/, Lightning's *.ckpt and plain folders
of .pt files are each one more `Detector` registered with `register_detector`.

Nothing here hashes a checkpoint: a listing reads small files (run.yaml, status.json,
manifest.json, the tail of metrics.jsonl) and stats the checkpoints, so `runctl ls` stays fast.
A broken run becomes a summary carrying the problem; it never stops the listing of the others.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from runctl.runs.checkpoints import (
    expected_checkpoints,
    list_checkpoints,
    missing_checkpoints,
    quarantined_checkpoints,
    tally_checkpoints,
)
from runctl.runs.errors import RunctlError
from runctl.runs.layout import (
    CHECKPOINT_DIR,
    DEFAULT_DEPTH,
    LIVE_STATES,
    METRICS_JSONL,
    RUN_YAML,
    STATUS_JSON,
    is_run_dir,
)
from runctl.runs.manifest import read_manifest
from runctl.runs.metrics_tail import best_from_metrics, last_train_loss
from runctl.runs.model import CheckpointInfo, RunSummary
from runctl.runs.ranks import silent_ranks
from runctl.runs.run_yaml import read_run_yaml, run_yaml_for_listing
from runctl.runs.status import effective_state, error_line, read_status

# Re-exported: readers of a run find them here with the rest.
__all__ = ["DEFAULT_DEPTH", "Detector", "Folder", "best_from_metrics", "detect", "detectors", "find_run_folders",
           "find_runs", "is_foreign", "last_train_loss", "metrics_reader", "read_run_yaml", "recognise_folder",
           "register_detector", "resolve_run", "run_checkpoints", "run_folders", "run_on_path", "summarize"]


@dataclass(frozen=True)
class Folder:
    """One folder as a detector sees it: its entries from a single scandir (no file is opened)."""

    path: Path
    files: dict[str, os.DirEntry[str]]   # regular files (symlinks followed)
    dirs: dict[str, os.DirEntry[str]]    # folders (symlinks followed)
    broken: dict[str, str]               # symlinks that lead nowhere: name -> why

    @classmethod
    def read(cls, path: Path) -> Folder:
        """Raises OSError when the folder cannot be listed."""
        files: dict[str, os.DirEntry[str]] = {}
        dirs: dict[str, os.DirEntry[str]] = {}
        broken: dict[str, str] = {}
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_dir():
                        dirs[entry.name] = entry
                    elif entry.is_file():
                        files[entry.name] = entry
                    elif entry.is_symlink():
                        broken[entry.name] = "broken symlink"
                except OSError as exc:
                    broken[entry.name] = _os_problem(exc)
        return cls(Path(path), files, dirs, broken)


@dataclass(frozen=True)
class Detector:
    name: str
    detect: Callable[[Path], bool]
    summarize: Callable[[Path], RunSummary]
    # (run_dir, level) -> every checkpoint record of the run, oldest first, including `missing`
    # records for what should exist; level None reads no checkpoint bytes.
    checkpoints: Callable[[Path, str | None], list[CheckpointInfo]]
    # The same answer as `detect` from a folder already listed: what the tree walk calls, so a
    # folder costs one scandir whatever the number of layouts.
    recognise: Callable[[Folder], bool] | None = None
    # run_dir -> an incremental metrics reader with MetricsReader's poll()/names()/series() surface.
    metrics: Callable[[Path], Any] | None = None
    # Whether runctl owns the folder (and may write into it: resume, extend, delete).
    writable: bool = False
    # run_dir -> the folders its files are in, the run folder first (what a watcher watches);
    # None: the run folder alone.
    folders: Callable[[Path], list[Path]] | None = None


_DETECTORS: list[Detector] = []

# Folders that hold no runs of anyone's: tools' and package managers' trees.
SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages",
                             "venv", "env", "wandb", "mlruns", "egg-info"})
# A folder holding one of these is a virtualenv or a conda environment.
ENVIRONMENT_MARKERS = ("pyvenv.cfg", "conda-meta")


def register_detector(detector: Detector) -> None:
    """Add a layout; detectors are tried in registration order, the first match wins."""
    _DETECTORS.append(detector)


def detectors() -> tuple[Detector, ...]:
    return tuple(_DETECTORS)


def detect(path: Path) -> Detector | None:
    for detector in _DETECTORS:
        try:
            if detector.detect(path):
                return detector
        except OSError:
            continue
    return None


def _recognise(folder: Folder) -> Detector | None:
    for detector in _DETECTORS:
        try:
            if detector.recognise(folder) if detector.recognise is not None else detector.detect(folder.path):
                return detector
        except OSError:
            continue
    return None


def recognise_folder(path: Path) -> Detector | None:
    """The detector of a folder from one listing of it; None when it is no run (or unreadable)."""
    try:
        return _recognise(Folder.read(Path(path)))
    except OSError:
        return None


def run_folders(run_dir: Path, detector: Detector) -> list[Path]:
    """The folders a run's files are in, the run folder first."""
    return detector.folders(Path(run_dir)) if detector.folders is not None else [Path(run_dir)]


def metrics_reader(run_dir: Path) -> Any:
    """The incremental metrics reader for a run of any layout (runctl's MetricsReader by default)."""
    detector = detect(Path(run_dir))
    if detector is not None and detector.metrics is not None:
        return detector.metrics(Path(run_dir))
    from runctl.runs.metrics import MetricsReader

    return MetricsReader(Path(run_dir))


def is_foreign(run_dir: Path) -> bool:
    """A run some other tool wrote: runctl reads it and never writes into its folder."""
    detector = detect(Path(run_dir))
    return detector is not None and not detector.writable


# ------------------------------------------------------------------------------------ entry points

def find_runs(root: Path, *, newest: int = 0,
              on_newest: Callable[[list[RunSummary]], None] | None = None,
              depth: int = DEFAULT_DEPTH) -> list[RunSummary]:
    """A summary of every run under `root` (or of `root` itself if it is a run), by path.

    Runs are looked for down to `depth` folders below `root`; a folder recognised as a run is
    not searched further, and tool trees (hidden folders, virtualenvs, __pycache__,
    node_modules, site-packages) are skipped. A foreign run is named by its path relative to
    `root`. Raises RunctlError only when `root` itself is unusable; a symlink loop, an
    unreadable folder or a broken run becomes a summary whose `error` says what is wrong.
    With `on_newest`, the `newest` most recently written runs are summarized first and handed
    to it, newest first, before the others are read: a UI paints a screenful of a big root
    while the rest is read. Those summaries are part of the result, not read a second time.
    """
    root = Path(root)
    _check_root(root)
    found, notes = _walk(root, depth)
    early: dict[Path, RunSummary] = {}
    if on_newest is not None and newest > 0:
        for path, detector in _newest_first(found)[:newest]:
            early[path] = _summarize_found(root, path, detector)
        on_newest(list(early.values()))
    summaries = [early[path] if path in early else _summarize_found(root, path, detector)
                 for path, detector in found]
    for note in notes:
        note.name = _relative(root, note.path)
    summaries += notes
    summaries.sort(key=lambda summary: _relative(root, summary.path))
    return summaries


def find_run_folders(root: Path, depth: int = DEFAULT_DEPTH) -> list[tuple[Path, Detector]]:
    """(folder, detector) of every run `find_runs` lists, found the same way, none of them read."""
    root = Path(root)
    _check_root(root)
    return _walk(root, depth)[0]


def run_on_path(root: Path, folder: Path, depth: int = DEFAULT_DEPTH) -> tuple[Path, Detector] | None:
    """The run `find_runs` would find at `folder` or at one of its folders on the way from `root`
    (each read once, top down, with the walk's rules: hidden and tool folders end the way);
    None when there is none. Cheaper than a walk when one folder of a big root changed."""
    root, folder = Path(root), Path(folder)
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        return None
    detector = recognise_folder(root)
    if detector is not None:
        return root, detector
    current = root
    for part in parts[:depth]:
        if part.startswith(".") or part in SKIPPED_FOLDERS or part.endswith(".egg-info"):
            return None
        current = current / part
        try:
            listed = Folder.read(current)
        except OSError:
            return None
        if any(marker in listed.files or marker in listed.dirs for marker in ENVIRONMENT_MARKERS):
            return None
        detector = _recognise(listed)
        if detector is not None:
            return current, detector
    return None


def summarize(run_dir: Path, root: Path | None = None) -> RunSummary:
    """One run's summary; never raises (an unreadable run is a summary with `error` set).

    With `root`, a foreign run is named by its path relative to it, as `find_runs` names it.
    """
    run_dir = Path(run_dir)
    detector = detect(run_dir)
    if detector is None:
        return _broken(run_dir, "not a run directory (no run.yaml or status.json)")
    return _summarize_found(Path(root) if root is not None else run_dir.parent, run_dir, detector)


def run_checkpoints(run_dir: Path, level: str | None = "quick") -> list[CheckpointInfo]:
    """Every checkpoint of a run of any known layout, with `missing` records for the expected
    ones that are absent; [] for a folder no detector recognises."""
    detector = detect(Path(run_dir))
    return detector.checkpoints(Path(run_dir), level) if detector is not None else []


def resolve_run(ref: str | Path, root: str | Path) -> Path:
    """A run directory from a path or a run id / name under `root`; RunctlError if there is none."""
    text = str(ref)
    candidates = [Path(text)]
    if not Path(text).is_absolute():
        candidates.append(Path(root) / text)
    for candidate in candidates:
        if candidate.is_dir() and detect(candidate) is not None:
            return candidate
    for candidate in candidates:
        if candidate.is_file():
            raise RunctlError(f"{candidate}: is a file, not a run directory")
    by_name = _find_by_name(text, Path(root))
    if by_name is not None:
        return by_name
    for candidate in candidates:
        if candidate.is_dir():
            raise RunctlError(f"{candidate}: not a run directory (no {RUN_YAML} or {STATUS_JSON})")
    raise RunctlError(f"unknown run '{text}' under {root}")


# ------------------------------------------------------------------------------- runctl's layout

def _summarize_runctl(run_dir: Path) -> RunSummary:
    cfg, cfg_problem = run_yaml_for_listing(run_dir)
    status = read_status(run_dir)
    state = effective_state(status, run_dir)
    summary = RunSummary(path=run_dir, run_id=_text(cfg.get("run_id")) or run_dir.name,
                         name=_text(cfg.get("name")) or _text(cfg.get("run_id")) or run_dir.name,
                         layout="runctl", state=state)
    problems = summary.problems
    if cfg_problem:
        problems.append(cfg_problem)
    if status.get("problem"):
        problems.append(status["problem"])
    elif not status:
        problems.append(f"{run_dir / STATUS_JSON}: missing (never started?)")
    summary.step = _int(status.get("step"))
    summary.max_steps = _int(status.get("max_steps")) or _int(cfg.get("max_steps"))
    summary.world_size = _int(status.get("world_size")) or 1
    summary.nodes = _int(status.get("nodes")) or 1
    if state == "running" and summary.world_size > 1:
        summary.silent_ranks = [rank.describe() for rank in silent_ranks(run_dir, status)]
    summary.created_at = _timestamp(cfg.get("created_at")) or _timestamp(status.get("started_at"))
    summary.updated_at = (_timestamp(status.get("updated_at")) or _timestamp(status.get("heartbeat_at"))
                          or _mtime(run_dir / STATUS_JSON))
    summary.parent = cfg.get("parent") if isinstance(cfg.get("parent"), dict) else None
    if state == "stalled" and isinstance(status.get("stalled"), dict):
        summary.stalled = status["stalled"]
    if state == "crashed":
        summary.error = error_line(status)
    elif state == "interrupted" and status.get("state") in LIVE_STATES:
        summary.error = "engine gone (lock free or heartbeat stale)"

    ckpt_dir = run_dir / CHECKPOINT_DIR
    ckpt_problem = _folder_problem(ckpt_dir)
    if ckpt_problem:
        problems.append(f"{ckpt_dir}: {ckpt_problem}")
    manifest = read_manifest(ckpt_dir)
    if manifest.error:
        problems.append(manifest.error)
    tally = tally_checkpoints(run_dir, manifest)
    summary.checkpoints = tally.count
    summary.checkpoint_bytes = tally.bytes
    if tally.corrupt:
        problems.append(f"{len(tally.corrupt)} corrupt checkpoint(s): "
                        + ", ".join(f"{name} ({reason})" for name, reason in tally.corrupt[:3]))
    if manifest.best:
        summary.best = {k: manifest.best.get(k) for k in ("metric", "value", "step")}
    if cfg and not cfg_problem:
        expected = expected_checkpoints(cfg, state, summary.step, present=tally.steps)
        summary.checkpoints_expected = len(expected)
        summary.missing_steps = sorted({s for s in expected if s not in tally.steps} | set(tally.gone))
        if summary.missing_steps:
            problems.append("missing checkpoint(s) at step " + ", ".join(map(str, summary.missing_steps)))

    quarantined = quarantined_checkpoints(run_dir)
    if quarantined:
        problems.append(f"{len(quarantined)} quarantined checkpoint(s): "
                        + ", ".join(f"{info.name} ({info.reason})" for info in quarantined[:3]))

    summary.last_loss, metrics_problem = last_train_loss(run_dir / METRICS_JSONL)
    if metrics_problem:
        problems.append(metrics_problem)
    return summary


def _runctl_checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    infos = list_checkpoints(run_dir, level=level)
    cfg, problem = read_run_yaml(run_dir)
    if cfg and not problem:
        status = read_status(run_dir)
        step = status.get("step") if isinstance(status.get("step"), int) else None
        present = [i.step for i in infos if i.status != "missing" and i.step is not None]
        expected = expected_checkpoints(cfg, effective_state(status, run_dir), step, present=present)
        infos += missing_checkpoints(expected, infos, run_dir / CHECKPOINT_DIR)
    infos += quarantined_checkpoints(run_dir)
    return sorted(infos, key=lambda i: (i.step is None, i.step or 0, i.name))


register_detector(Detector(name="runctl", detect=is_run_dir, summarize=_summarize_runctl,
                           checkpoints=_runctl_checkpoints, recognise=lambda f: _runctl_recognise(f),
                           writable=True))


# ------------------------------------------------------------------------------------------ helpers

def _walk(root: Path, max_depth: int) -> tuple[list[tuple[Path, Detector]], list[RunSummary]]:
    """(run folder, its detector) for every run under root, and a summary for each symlink loop,
    unreadable folder and (directly under root) broken symlink met on the way."""
    try:
        top = Folder.read(root)
    except OSError as exc:
        raise RunctlError(f"{root}: cannot list ({exc.strerror or exc.__class__.__name__})") from None
    detector = _recognise(top)
    if detector is not None:
        return [(root, detector)], []
    found: list[tuple[Path, Detector]] = []
    notes: list[RunSummary] = []
    root_key = _folder_key(os.stat(root))
    visited = {root_key}
    # Folders reached through a symlink wait until the real tree is walked: a run that is both in
    # the tree and behind a link is listed once, under its real path.
    linked: list[tuple[os.DirEntry[str], int, frozenset[tuple[int, int]]]] = []
    stack: list[tuple[Folder, int, frozenset[tuple[int, int]]]] = [(top, 0, frozenset({root_key}))]
    while stack or linked:
        if stack:
            folder, depth, ancestors = stack.pop()
            for name, why in folder.broken.items():
                if depth == 0 or why == "symlink loop":
                    notes.append(_broken(folder.path / name, why))
            children = [(entry, depth, ancestors) for name, entry in sorted(folder.dirs.items(), reverse=True)
                        if not (name.startswith(".") or name in SKIPPED_FOLDERS or name.endswith(".egg-info"))]
            linked += [child for child in children if child[0].is_symlink()]
            children = [child for child in children if not child[0].is_symlink()]
        else:
            children = [linked.pop(0)]
        for entry, depth, ancestors in children:
            path = Path(entry.path)
            try:
                key = _folder_key(entry.stat())
            except OSError as exc:
                notes.append(_broken(path, _os_problem(exc)))
                continue
            if key in ancestors:
                notes.append(_broken(path, "symlink loop"))
                continue
            if key in visited:
                continue  # the same folder again, through a symlink
            visited.add(key)
            try:
                child = Folder.read(path)
            except OSError as exc:
                notes.append(_broken(path, _os_problem(exc)))
                continue
            if any(marker in child.files or marker in child.dirs for marker in ENVIRONMENT_MARKERS):
                continue
            detector = _recognise(child)
            if detector is not None:
                found.append((path, detector))
            elif depth + 1 < max_depth:
                stack.append((child, depth + 1, ancestors | {key}))
    return found, notes


def _folder_key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _summarize_found(root: Path, path: Path, detector: Detector) -> RunSummary:
    try:
        summary = detector.summarize(path)
    except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop a listing
        summary = _broken(path, f"unreadable run ({exc.__class__.__name__}: {exc})", layout=detector.name)
    if not detector.writable:
        summary.name = _relative(root, path)
    return summary


def _relative(root: Path, path: Path) -> str:
    """`path` relative to `root` ("a/b"), or its own name when it is root or outside it."""
    text, prefix = str(path), str(root).rstrip(os.sep) + os.sep
    if not text.startswith(prefix) or text == prefix:
        return path.name
    return text[len(prefix):].replace(os.sep, "/")


def _newest_first(found: list[tuple[Path, Detector]]) -> list[tuple[Path, Detector]]:
    """Runs most recently written first (one stat each, no reads): runctl's by status.json or
    run.yaml, foreign ones by their folder."""
    dated: list[tuple[float, tuple[Path, Detector]]] = []
    for item in found:
        path, detector = item
        names = (STATUS_JSON, RUN_YAML) if detector.writable else ("",)
        for name in names:
            try:
                dated.append((os.stat(os.path.join(path, name)).st_mtime, item))
                break
            except OSError:
                continue
    dated.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in dated]


def _folder_problem(path: Path) -> str | None:
    """Why an optional folder cannot be listed, or None (absent is fine)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken symlink" if os.path.islink(path) else None
    except OSError as exc:
        return _os_problem(exc)
    return None if stat.S_ISDIR(st.st_mode) else "is a file, not a folder"


def _link_problem(path: Path) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        return _os_problem(exc)
    return "broken symlink"


def _os_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "broken symlink"
    return f"unreadable ({exc.strerror or exc.__class__.__name__})"


def _broken(path: Path, why: str, layout: str = "unknown") -> RunSummary:
    return RunSummary(path=path, run_id=path.name, name=path.name, layout=layout, state="unknown", error=why)


def _runctl_recognise(folder: Folder) -> bool:
    return RUN_YAML in folder.files or STATUS_JSON in folder.files


def _check_root(root: Path) -> None:
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise RunctlError(f"{root}: no such directory") from None
    except OSError as exc:
        raise RunctlError(f"{root}: {_os_problem(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RunctlError(f"{root}: is a file, not a folder of runs")


def _find_by_name(ref: str, root: Path) -> Path | None:
    """A run under root whose run.yaml names it `ref` (run_id or name)."""
    try:
        with os.scandir(root) as it:
            candidates = [Path(e.path) for e in it if not e.name.startswith(".")]
    except OSError:
        return None
    for candidate in sorted(candidates):
        try:
            if not candidate.is_dir() or detect(candidate) is None:
                continue
        except OSError:
            continue
        cfg, _ = read_run_yaml(candidate)
        if ref in (cfg.get("run_id"), cfg.get("name")):
            return candidate
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# The foreign layouts register themselves after runctl's own (the first match wins).
from runctl.runs import layouts  # noqa: E402,F401
