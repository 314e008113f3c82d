"""`runctl ls`, `runctl verify` and `runctl summary`: read-only views of runs on disk.

No torch and no textual here: `runctl ls` must open fast, even on a machine without torch
(`verify --deep` imports torch lazily inside runs.integrity).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runctl.runs.checkpoints import list_checkpoints, trusted_identity
from runctl.runs.discovery import best_from_metrics, detect, find_runs, read_run_yaml, run_checkpoints
from runctl.runs.errors import RunctlError
from runctl.runs.humanize import human_age, human_bytes
from runctl.runs.integrity import verify_file
from runctl.runs.jsonl_tail import history_note
from runctl.runs.layout import CHECKPOINT_DIR, EVENTS_JSONL, MANIFEST_JSON, METRICS_JSONL, RUN_YAML
from runctl.runs.manifest import read_manifest
from runctl.runs.model import CheckpointInfo, RunSummary


def ls(args: argparse.Namespace) -> int:
    root = Path(args.root)
    runs = find_runs(root, depth=args.depth)
    if args.json:
        _print_json({"root": str(root), "runs": [run.to_json() for run in runs]})
        return 0
    if not runs:
        print(f"no runs under {root}")
        return 0
    now = time.time()
    rows = [[run.name, run.layout, run.state, _steps(run), _number(run.last_loss), _checkpoint_count(run),
             human_bytes(run.checkpoint_bytes) if run.checkpoints else "-",
             human_age(now - run.updated_at) if run.updated_at else "-", _note(run)] for run in runs]
    _print_table(["NAME", "LAYOUT", "STATE", "STEP", "LOSS", "CKPTS", "SIZE", "AGE", "NOTE"], rows)
    return 0


def verify(args: argparse.Namespace) -> int:
    path = Path(args.path)
    level = args.level
    groups, skipped = _verify_target(path, level, args.depth)
    if args.json:
        checkpoints = [dict(info.to_json(), run=run) for run, infos in groups for info in infos]
        counts = Counter(item["status"] for item in checkpoints)
        _print_json({"path": str(path), "level": level, "checkpoints": checkpoints,
                     "counts": dict(counts), "corrupt": counts.get("corrupt", 0),
                     "skipped": [{"path": str(s.path), "error": s.error} for s in skipped]})
    else:
        rows = [[run or "-", info.name, _text(info.step), _kind(info), info.status,
                 "; ".join(text for text in (info.reason, info.holds) if text),
                 _text(info.bytes) if info.status != "missing" else "-",
                 (info.sha256 or "")[:16]] for run, infos in groups for info in infos]
        if rows:
            _print_table(["RUN", "FILE", "STEP", "KIND", "STATUS", "REASON", "BYTES", "SHA256"], rows)
        for entry in skipped:
            sys.stderr.write(f"runctl: skipped {entry.path}: {entry.error}\n")
        counts = Counter(info.status for _, infos in groups for info in infos)
        total = sum(counts.values())
        print(f"{total} checkpoint(s) at level {level}: "
              + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none found"))
    corrupt = sum(1 for _, infos in groups for info in infos if info.status == "corrupt")
    return 1 if corrupt else 0


def summary(args: argparse.Namespace) -> int:
    root = Path(args.root)
    expect = _expected_steps(args.expect) if args.expect is not None else None
    runs = find_runs(root, depth=args.depth)
    records = [_summary_record(run) for run in runs]
    if expect is not None:
        for run, record in zip(runs, records, strict=True):
            _apply_expectation(run, record, expect)
    if args.json:
        _print_json({"root": str(root), "runs": records})
        return 0
    if not records:
        print(f"no runs under {root}")
        return 0
    rows = []
    for rec in records:
        best = rec["best"]
        best_text = (f"{best['metric']}={_number(best['value'])}"
                     + (f" @{best['step']}" if best.get("step") is not None else "")
                     if best and best.get("value") is not None else "-")
        expected = rec["checkpoints_expected"]
        ckpts = f"{rec['checkpoints_present']}/{expected if expected is not None else '?'}"
        missing = ",".join(map(str, rec["missing_steps"])) or "-"
        rows.append([rec["name"], rec["state"], _text(rec["step"]) + "/" + _text(rec["max_steps"]),
                     best_text, _number(rec["final_loss"]), ckpts, missing])
    _print_table(["NAME", "STATE", "STEPS", "BEST", "FINAL LOSS", "CKPTS", "MISSING"], rows)
    for rec in records:
        for note in rec["notes"]:
            print(f"{rec['name']}: {note.replace(rec['path'] + os.sep, '')}")
    present = sum(rec["checkpoints_present"] for rec in records)
    expected_total = sum(rec["checkpoints_expected"] or 0 for rec in records)
    print(f"Total checkpoints: {present} (expected: {expected_total})")
    return 0


def _expected_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise RunctlError(f"--expect {text!r}: give comma-separated step numbers, e.g. 100,1000,2000") from None
    if not steps or steps[0] < 0:
        raise RunctlError(f"--expect {text!r}: give comma-separated step numbers, e.g. 100,1000,2000")
    return steps


def _apply_expectation(run: RunSummary, record: dict[str, Any], expect: list[int]) -> None:
    """The user's expected steps replace what the files implied: present = those of them on disk."""
    steps = {info.step for info in run_checkpoints(run.path, None)
             if info.step is not None and info.status not in ("missing", "partial")}
    record["checkpoints_expected"] = len(expect)
    record["checkpoints_present"] = sum(1 for step in expect if step in steps)
    record["missing_steps"] = [step for step in expect if step not in steps]


# ------------------------------------------------------------------------------------------ verify

def _verify_target(path: Path, level: str, depth: int) -> tuple[list[tuple[str | None, list[CheckpointInfo]]],
                                                   list[RunSummary]]:
    """(run folder name or None, checkpoint records) groups for a file, a run, or a root of runs,
    and the root's entries that are not readable runs (symlink loops, stray files ...)."""
    if not path.exists():
        if path.is_symlink():
            raise RunctlError(f"{path}: broken symlink")
        raise RunctlError(f"{path}: no such file or directory")
    if path.is_file():
        entry = read_manifest(path.parent).files.get(path.name)
        run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else None
        reference = None
        if level == "deep" and run_dir is not None and detect(run_dir) is not None:
            reference = trusted_identity(run_dir, exclude=path.name)  # one file of a run: same run?
        return [(None, [verify_file(path, level, entry, reference=reference)])], []
    if path.name == CHECKPOINT_DIR and detect(path.parent) is not None:
        path = path.parent
    if (path / MANIFEST_JSON).is_file() and not (path / RUN_YAML).exists():
        # A runctl checkpoint folder set aside (superseded/, quarantine/): its own manifest vouches
        # for its files, so they are checked against it rather than as a foreign plain folder.
        return [(None, list_checkpoints(path, level=level, folder=path))], []
    if detect(path) is not None:
        return [(path.name, run_checkpoints(path, level))], []
    listed = find_runs(path, depth=depth)
    runs = [run for run in listed if run.layout != "unknown"]
    if not runs:
        loose = list_checkpoints(path, level=level, folder=path)  # a plain folder of checkpoint files
        if loose:
            return [(None, loose)], []
        raise RunctlError(f"{path}: no runs or checkpoints found")
    skipped = [run for run in listed if run.layout == "unknown"]
    return [(run.name, run_checkpoints(run.path, level)) for run in runs], skipped


# ----------------------------------------------------------------------------------------- summary

def _summary_record(run: RunSummary) -> dict[str, Any]:
    best = run.best
    notes = _log_notes(run)
    if best is None and run.layout == "runctl":
        cfg, _ = read_run_yaml(run.path)
        eval_cfg = cfg.get("eval") if isinstance(cfg.get("eval"), dict) else {}
        metric = eval_cfg.get("metric") if isinstance(eval_cfg.get("metric"), str) else "val/loss"
        mode = eval_cfg.get("mode") if eval_cfg.get("mode") in ("min", "max") else "min"
        best, note = best_from_metrics(run.path / METRICS_JSONL, metric, mode)
        if note is not None and note not in notes:
            notes.append(note)
    return {"run_id": run.run_id, "name": run.name, "path": str(run.path), "state": run.state,
            "step": run.step, "max_steps": run.max_steps, "best": best, "final_loss": run.last_loss,
            "checkpoints_present": run.checkpoints, "checkpoints_expected": run.checkpoints_expected,
            "missing_steps": run.missing_steps, "error": run.error, "problems": run.problems, "notes": notes}


def _log_notes(run: RunSummary) -> list[str]:
    """A runctl run's logs too large to read whole: what the plot, the events and `best` leave out."""
    if run.layout != "runctl":
        return []
    notes = []
    for name in (METRICS_JSONL, EVENTS_JSONL):
        try:
            note = history_note(run.path / name, os.stat(run.path / name).st_size)
        except OSError:
            continue
        if note is not None:
            notes.append(note)
    return notes


# -------------------------------------------------------------------------------------- formatting

def _steps(run: RunSummary) -> str:
    if run.step is None and run.max_steps is None:
        return "-"
    return f"{_text(run.step)}/{_text(run.max_steps)}"


def _kind(info: CheckpointInfo) -> str:
    kind = info.kind or "-"
    return f"{kind} (copy of {info.copy_of})" if info.copy_of else kind


def _checkpoint_count(run: RunSummary) -> str:
    if run.checkpoints_expected is None or not run.missing_steps:
        return str(run.checkpoints)
    return f"{run.checkpoints} ({len(run.missing_steps)} missing)"


def _note(run: RunSummary) -> str:
    """The error and problems, with the run's own folder left out of file names (the row names it)."""
    prefix = f"{run.path}{os.sep}"
    notes = [note.replace(prefix, "") for note in ([run.error] if run.error else []) + run.problems]
    if run.stalled:
        notes.insert(0, stalled_note(run.stalled, time.time()))
    text = "; ".join(notes)
    return text if len(text) <= 120 else text[:117] + "..."


def stalled_note(stalled: dict[str, Any], now: float) -> str:
    """"no step for 6m in wait_for_release (task.py:30)" from a RunSummary's `stalled`."""
    since = stalled.get("since")
    age = human_age(now - since) if isinstance(since, (int, float)) else "?"
    where = stalled.get("where")
    return f"no step for {age}" + (f" in {where}" if where else "")


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    # One write for the whole table: to a pipe or a terminal each write is queued for the console's
    # writer thread, and a line per write would hand it thousands of wake-ups for a big root.
    sys.stdout.write("".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
                             .rstrip() + "\n" for row in [headers, *rows]))


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_strict_json(document), indent=2, allow_nan=False, default=str) + "\n")


def _strict_json(value: Any) -> Any:
    """NaN and infinities (a diverged loss) become null: the output stays standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value
