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

import json
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from runs.checkpoints import expected_checkpoints, list_checkpoints, missing_checkpoints, tally_checkpoints
from runs.errors import RunctlError
from runs.layout import CHECKPOINT_DIR, METRICS_JSONL, RUN_YAML, STATUS_JSON, is_run_dir
from runs.manifest import read_manifest
from runs.model import CheckpointInfo, RunSummary
from runs.status import effective_state, error_line, read_status

# How much of metrics.jsonl's end to read for the last train loss, first and at most.
_TAIL_FIRST_BYTES = 16 << 10
_TAIL_MAX_BYTES = 1 << 20


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

def find_runs(root: Path) -> list[RunSummary]:
    """A summary of every run directly under `root` (or of `root` itself if it is a run).

    Raises RunctlError only when `root` itself is unusable; each broken entry becomes a summary
    whose `error` says what is wrong.
    """
    root = Path(root)
    _check_root(root)
    if detect(root) is not None:
        return [summarize(root)]
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise RunctlError(f"{root}: cannot list ({exc.strerror or exc.__class__.__name__})") from None
    summaries = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        summary = _summarize_entry(Path(entry.path), entry)
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


def read_run_yaml(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """run.yaml as a dict and a problem line if it is missing or garbage; never raises."""
    path = Path(run_dir) / RUN_YAML
    text, problem = _read_text(path)
    if text is None:
        return {}, problem
    return _parse_yaml(text, path)


def _read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc.__class__.__name__})"


def _parse_yaml(text: str, path: Path) -> tuple[dict[str, Any], str | None]:
    import yaml  # only when a run.yaml is read: keeps `import runs` light

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return {}, f"{path}: not valid YAML{where}"
    if data is None:
        return {}, f"{path}: empty"
    if not isinstance(data, dict):
        return {}, f"{path}: not a mapping"
    return data, None


# ------------------------------------------------------------------------------- runctl's layout

# The run.yaml keys a listing shows; parsing only these is most of what keeps `runctl ls` fast.
_LISTING_KEYS = frozenset({"run_id", "name", "created_at", "parent", "max_steps", "checkpoint", "extensions"})
_run_yaml_cache: dict[str, tuple[tuple[int, int, int], dict[str, Any], str | None]] = {}


def _run_yaml_for_listing(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The listing's keys of run.yaml, cached per process by file identity (the UI re-lists often).

    Only the top-level entries named in _LISTING_KEYS are parsed (a block mapping's top-level keys
    start at column 0; each entry runs to the next such line). Anything unusual (anchors, tags,
    documents markers, a non-mapping, a parse error) falls back to parsing the whole file, so
    the answer is always what read_run_yaml gives for those keys. The result is shared: read only.
    """
    path = Path(run_dir) / RUN_YAML
    try:
        st = os.stat(path)
    except OSError:
        return read_run_yaml(run_dir)
    key = (st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _run_yaml_cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    text, problem = _read_text(path)
    if text is None:
        return {}, problem
    snippet = _top_level_entries(text, _LISTING_KEYS)
    cfg, problem = _parse_yaml(snippet, path) if snippet else ({}, "no listing keys")
    if problem is not None:
        cfg, problem = _parse_yaml(text, path)
        cfg = {k: v for k, v in cfg.items() if k in _LISTING_KEYS}
    _run_yaml_cache[str(path)] = (key, cfg, problem)
    return cfg, problem


def _top_level_entries(text: str, keys: frozenset[str]) -> str | None:
    """The lines of the top-level entries named `keys`, or None when the text is not a plain block
    mapping this simple cut can handle (the caller then parses everything)."""
    if "&" in text or "!" in text or "\t" in text:
        return None
    kept: list[str] = []
    keep = False
    for line in text.splitlines():
        if not line or line[0] in " #":
            if keep:
                kept.append(line)
            continue
        name, colon, _ = line.partition(":")
        if not colon or line.startswith(("-", "?", "---", "...", "%", "[", "{", "\"", "'")):
            return None
        keep = name in keys
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else None


def _summarize_runctl(run_dir: Path) -> RunSummary:
    cfg, cfg_problem = _run_yaml_for_listing(run_dir)
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

def last_train_loss(path: Path) -> tuple[float | None, str | None]:
    """The newest "train/loss" in metrics.jsonl and a problem line; reads only the file's tail.

    Lines newer than that loss are all parsed, and malformed ones (not JSON, not an object, a
    loss that is not a number) are counted into the problem line. Garbage further back is the
    metrics reader's business: a listing does not read the whole file. Never raises.
    """
    malformed = 0
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            window = _TAIL_FIRST_BYTES
            while True:
                start = max(0, size - window)
                file.seek(start)
                lines = file.read(size - start).split(b"\n")
                lines.pop()  # after the last newline: empty, or a line still being written
                if start > 0:
                    lines = lines[1:]  # cut by the window
                malformed = 0
                for line in reversed(lines):
                    value, ok = _loss_of(line)
                    malformed += not ok
                    if value is not None:
                        return value, _malformed_problem(path, malformed)
                if start == 0 or window >= _TAIL_MAX_BYTES:
                    break
                window *= 8
    except FileNotFoundError:
        return None, None
    except IsADirectoryError:
        return None, f"{path}: is a directory"
    except OSError as exc:
        return None, f"{path}: unreadable ({exc.strerror or exc.__class__.__name__})"
    return None, _malformed_problem(path, malformed)


def _malformed_problem(path: Path, count: int) -> str | None:
    return f"{path}: {count} malformed line(s) at its end" if count else None


def best_from_metrics(path: Path, metric: str, mode: str = "min") -> dict[str, Any] | None:
    """{"metric", "value", "step"} of the best `metric` in metrics.jsonl (reads the whole file)."""
    best: dict[str, Any] | None = None
    key = metric.encode()
    try:
        with open(path, "rb") as file:
            for line in file:
                if key not in line:
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    continue
                value = record.get(metric) if isinstance(record, dict) else None
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                    continue
                if best is None or (value < best["value"] if mode == "min" else value > best["value"]):
                    best = {"metric": metric, "value": float(value), "step": record.get("step")}
    except OSError:
        return None
    return best


def _loss_of(line: bytes) -> tuple[float | None, bool]:
    """(the train loss on this line or None, whether the line is a well-formed record)."""
    line = line.strip()
    if not line:
        return None, True
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None, False
    if not isinstance(record, dict):
        return None, False
    if "train/loss" not in record:
        return None, True
    value = record["train/loss"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), True
    return None, False


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
    import errno

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
