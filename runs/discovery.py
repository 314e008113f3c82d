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
    tally_checkpoints,
)
from runctl.runs.errors import RunctlError
from runctl.runs.layout import CHECKPOINT_DIR, METRICS_JSONL, RUN_YAML, STATUS_JSON, is_run_dir
from runctl.runs.manifest import read_manifest
from runctl.runs.metrics_tail import best_from_metrics, last_train_loss
from runctl.runs.model import CheckpointInfo, RunSummary
from runctl.runs.run_yaml import read_run_yaml, run_yaml_for_listing
from runctl.runs.status import effective_state, error_line, read_status

# Re-exported: readers of a run find them here with the rest.
__all__ = ["Detector", "best_from_metrics", "detect", "detectors", "find_runs", "last_train_loss",
           "read_run_yaml", "register_detector", "resolve_run", "run_checkpoints", "summarize"]


@dataclass(frozen=True)
class Detector:
    name: str
    detect: Callable[[Path], bool]
    summarize: Callable[[Path], RunSummary]
    # (run_dir, level) -> every checkpoint record of the run, oldest first, including `missing`
    # records for what should exist; level None reads no checkpoint bytes.
    checkpoints: Callable[[Path, str | None], list[CheckpointInfo]]


_DETECTORS: list[Detector] = []


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


# ------------------------------------------------------------------------------------ entry points

def find_runs(root: Path, *, newest: int = 0,
              on_newest: Callable[[list[RunSummary]], None] | None = None) -> list[RunSummary]:
    """A summary of every run directly under `root` (or of `root` itself if it is a run), by name.

    Raises RunctlError only when `root` itself is unusable; each broken entry becomes a summary
    whose `error` says what is wrong. With `on_newest`, the `newest` most recently written runs
    (by the mtime of status.json, else run.yaml) are summarized first and handed to it, newest
    first, before the others are read: a UI paints a screenful of a big root while the rest is
    read. Those summaries are part of the result, not read a second time.
    """
    root = Path(root)
    _check_root(root)
    if detect(root) is not None:
        summaries = [summarize(root)]
        if on_newest is not None and newest > 0:
            on_newest(summaries)
        return summaries
    try:
        with os.scandir(root) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise RunctlError(f"{root}: cannot list ({exc.strerror or exc.__class__.__name__})") from None
    early: dict[str, RunSummary | None] = {}
    if on_newest is not None and newest > 0:
        for entry in _newest_first(entries)[:newest]:
            early[entry.name] = _summarize_entry(Path(entry.path), entry)
        on_newest([summary for summary in early.values() if summary is not None])
    summaries = []
    for entry in entries:
        summary = early[entry.name] if entry.name in early else _summarize_entry(Path(entry.path), entry)
        if summary is not None:
            summaries.append(summary)
    return summaries


def summarize(run_dir: Path) -> RunSummary:
    """One run's summary; never raises (an unreadable run is a summary with `error` set)."""
    run_dir = Path(run_dir)
    detector = detect(run_dir)
    if detector is None:
        return _broken(run_dir, "not a run directory (no run.yaml or status.json)")
    try:
        return detector.summarize(run_dir)
    except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop a listing
        return _broken(run_dir, f"unreadable run ({exc.__class__.__name__}: {exc})", layout=detector.name)


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
    summary.created_at = _timestamp(cfg.get("created_at")) or _timestamp(status.get("started_at"))
    summary.updated_at = (_timestamp(status.get("updated_at")) or _timestamp(status.get("heartbeat_at"))
                          or _mtime(run_dir / STATUS_JSON))
    summary.parent = cfg.get("parent") if isinstance(cfg.get("parent"), dict) else None
    if state == "crashed":
        summary.error = error_line(status)
    elif state == "interrupted" and status.get("state") == "running":
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
    return sorted(infos, key=lambda i: (i.step is None, i.step or 0, i.name))


register_detector(Detector(name="runctl", detect=is_run_dir, summarize=_summarize_runctl,
                           checkpoints=_runctl_checkpoints))


# ------------------------------------------------------------------------------------------ helpers

def _summarize_entry(path: Path, entry: os.DirEntry[str]) -> RunSummary | None:
    try:
        is_dir = entry.is_dir()
    except OSError as exc:
        return _broken(path, _os_problem(exc))
    if not is_dir:
        if entry.is_symlink() and not path.exists():
            return _broken(path, _link_problem(path))
        return _broken(path, "not a run directory: is a file")
    try:
        os.stat(path)
    except OSError as exc:
        return _broken(path, _os_problem(exc))
    if detect(path) is None:
        return None  # a folder that is no run of any known layout: not ours to report
    return summarize(path)


def _newest_first(entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    """Entries that look like runctl runs, most recently written first (one stat each, no reads)."""
    dated: list[tuple[float, os.DirEntry[str]]] = []
    for entry in entries:
        for name in (STATUS_JSON, RUN_YAML):
            try:
                dated.append((os.stat(os.path.join(entry.path, name)).st_mtime, entry))
                break
            except OSError:
                continue
    dated.sort(key=lambda item: item[0], reverse=True)
    return [entry for _, entry in dated]


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
