"""What a listing needs from metrics.jsonl, read cheaply: the last train loss from the file's end,
and (for `runctl summary`) the best value of one metric. The incremental, plot-ready reader is
runs.metrics."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.jsonl_tail import history_note, long_line_note
from runctl.runs.safe_files import MAX_HISTORY_BYTES, MAX_LINE_BYTES

# How much of metrics.jsonl's end to read for the last train loss, first and at most.
_TAIL_FIRST_BYTES = 16 << 10
_TAIL_MAX_BYTES = 1 << 20


def last_train_loss(path: Path) -> tuple[float | None, str | None]:
    """The newest "train/loss" in metrics.jsonl and a problem line; reads only the file's tail.

    Lines newer than that loss are all parsed, and malformed ones (not JSON, not an object, a
    loss that is not a number) are counted into the problem line. Garbage further back is the
    metrics reader's business: a listing does not read the whole file. Never raises.
    """
    malformed = 0
    try:
        with safe_files.open_regular(path) as file:
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
    except OSError as exc:
        return None, f"{path}: unreadable ({exc.strerror or exc.__class__.__name__})"
    return None, _malformed_problem(path, malformed)


def _malformed_problem(path: Path, count: int) -> str | None:
    return f"{path}: {count} malformed line(s) at its end" if count else None


def best_from_metrics(path: Path, metric: str, mode: str = "min") -> tuple[dict[str, Any] | None, str | None]:
    """({"metric", "value", "step"} of the best `metric` in metrics.jsonl, or None; what was left
    out, or None). It reads the whole file, or its last MAX_HISTORY_BYTES; lines longer than
    MAX_LINE_BYTES are skipped; the note says so (runs.jsonl_tail's wording)."""
    best: dict[str, Any] | None = None
    key = metric.encode()
    skipped: list[int] = []
    note = None
    try:
        with safe_files.open_regular(path) as file:
            size = os.fstat(file.fileno()).st_size
            note = history_note(path, size)
            if size > MAX_HISTORY_BYTES:
                file.seek(size - MAX_HISTORY_BYTES)
                file.readline(MAX_LINE_BYTES)  # the line cut by the seek
            for line in _bounded_lines(file, skipped):
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
        return None, note
    return best, note or (long_line_note(path) if skipped else None)


def _bounded_lines(file: Any, skipped: list[int]) -> Iterator[bytes]:
    """The file's lines from where it stands; a line longer than MAX_LINE_BYTES is skipped (and
    its offset added to `skipped`)."""
    while True:
        line = file.readline(MAX_LINE_BYTES)
        if not line:
            return
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
            skipped.append(file.tell())
            while (rest := file.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            continue
        yield line


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
