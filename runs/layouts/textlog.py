"""Training logs as plain text beside the checkpoints (`*.log`, `*.txt`, `*.out`): the line shapes
scripts print, read into series.

- nanoGPT's `iter 100: loss 2.3456, time 12.34ms, mfu 1.23%` (train/loss) and
  `step 250: train loss 1.90, val loss 2.01` (eval/train_loss and val/loss);
- `step N ... loss X` in any wording (`Step 500/1000 | train loss 0.12 | val_loss 0.2 | lr 3e-4`);
- the dicts the Hugging Face Trainer prints (`{'loss': 0.69, 'grad_norm': 1.2, 'learning_rate':
  5e-05, 'epoch': 0.5}`, numbers or numeric strings), read with ast.literal_eval (never eval).
  The Trainer prints the dict it logs without its step (Trainer.log keeps `{**logs, "step":
  global_step}` for trainer_state.json's log_history and hands callbacks `logs` alone), so such a
  dict's points have no step: the reader leaves them out rather than place them by print order
  (a dict every logging_steps, an eval dict every eval_steps: counting them gives wrong steps).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from runctl.runs import safe_files

LOG_SUFFIXES = (".log", ".txt", ".out")
# A text file bigger than this is not a training log worth reading whole for a plot.
MAX_LOG_BYTES = 256 << 20
_TAIL_BYTES = 16 << 10

_NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf))"
_NANOGPT_ITER = re.compile(r"^iter (\d+): loss " + _NUM)
_NANOGPT_EVAL = re.compile(r"^step (\d+): train loss " + _NUM + r", val loss " + _NUM)
_STEP = re.compile(r"\b(?:global[_ ])?step\b\s*[:=#]?\s*(\d+)", re.IGNORECASE)
_LOSS = re.compile(r"\b(?:(train|training|val|valid|validation|eval|test)[\s_/-]?)?loss\b\s*[:=]?\s*" + _NUM,
                   re.IGNORECASE)
_LR = re.compile(r"\b(?:lr|learning[_ ]rate)\b\s*[:=]?\s*" + _NUM, re.IGNORECASE)
_VAL_WORDS = frozenset({"val", "valid", "validation", "eval", "test"})

# (name, step or None for a Trainer dict without one, value)
Point = tuple[str, int | None, float]


def parse_line(line: str) -> list[Point]:
    """The metric points one log line holds ([] for any other line)."""
    line = line.strip()
    if not line:
        return []
    match = _NANOGPT_ITER.match(line)
    if match:
        return [("train/loss", int(match.group(1)), float(match.group(2)))]
    match = _NANOGPT_EVAL.match(line)
    if match:
        step = int(match.group(1))
        return [("eval/train_loss", step, float(match.group(2))), ("val/loss", step, float(match.group(3)))]
    if line.startswith("{") and line.endswith("}") and "loss" in line:
        return _trainer_dict(line)
    match = _STEP.search(line)
    if match is None:
        return []
    step = int(match.group(1))
    points: list[Point] = []
    for loss in _LOSS.finditer(line, match.end()):
        prefix = (loss.group(1) or "").lower()
        points.append(("val/loss" if prefix in _VAL_WORDS else "train/loss", step, float(loss.group(2))))
    if points:
        lr = _LR.search(line, match.end())
        if lr:
            points.append(("lr", step, float(lr.group(1))))
    return _first_of_each(points)


def _trainer_dict(line: str) -> list[Point]:
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    if not isinstance(record, dict) or "train_runtime" in record:
        return []  # the end-of-training summary repeats an average, not a point
    step = record.get("step", record.get("global_step"))
    step = step if isinstance(step, int) and not isinstance(step, bool) else None
    points = []
    for key, value in record.items():
        if key in ("step", "global_step", "epoch") or isinstance(value, bool):
            continue
        if isinstance(value, str):  # recent Trainers print the numbers rounded, as strings
            try:
                value = float(value)
            except ValueError:
                continue
        if isinstance(value, int | float):
            points.append((str(key), step, float(value)))
    return points


def _first_of_each(points: list[Point]) -> list[Point]:
    seen: set[str] = set()
    kept = []
    for point in points:
        if point[0] not in seen:
            seen.add(point[0])
            kept.append(point)
    return kept


def log_files(folder: Path) -> list[Path]:
    """The text logs directly in `folder`, oldest first."""
    found = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.lower().endswith(LOG_SUFFIXES) and not entry.name.startswith("."):
                    try:
                        if entry.is_file():
                            found.append((entry.stat().st_mtime, Path(entry.path)))
                    except OSError:
                        continue
    except OSError:
        return []
    return [path for _, path in sorted(found)]


def last_train_loss(folder: Path) -> float | None:
    """The newest train loss in the logs' ends (the newest log first); reads 16 KiB a file."""
    return tail_progress(folder)[1]


def tail_progress(folder: Path) -> tuple[int | None, float | None]:
    """(the highest step, the newest train loss) in the end of the newest log that has a train
    loss there (16 KiB read a file, newest first): how far a run that logs as it goes has got."""
    for path in reversed(log_files(folder)):
        try:
            with safe_files.open_regular(path) as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - _TAIL_BYTES))
                tail = file.read().decode("utf-8", "replace")
        except OSError:
            continue
        step: int | None = None
        loss: float | None = None
        for line in reversed(tail.splitlines()):
            for name, at, value in parse_line(line):
                if at is not None and (step is None or at > step):
                    step = at
                if loss is None and name in ("train/loss", "loss"):
                    loss = value
        if loss is not None:
            return step, loss
    return None, None


def metrics(folder: Path) -> object:
    """The incremental reader of the folder's logs (imported here: it needs numpy, a listing does not)."""
    from runctl.runs.layouts.readers import TextLogMetrics

    return TextLogMetrics(folder)
