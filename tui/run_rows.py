"""What one row of the runs table shows, built from runs.discovery's summaries plus the metrics tail.

Pure data and file reads, no widgets: the runs list builds these in a thread worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.layout import DEFAULT_DEPTH, METRICS_JSONL
from runctl.runs.model import RunSummary

# Enough bytes for the last few metrics lines; a line is ~150-400 bytes.
_TAIL_BYTES = 8192
# Rows painted before the full listing of a big root arrives: more than a tall terminal shows.
QUICK_ROWS = 60


@dataclass(frozen=True)
class RunRow:
    path: Path
    name: str
    state: str
    step: int | None
    max_steps: int | None
    last_loss: float | None
    best_metric: str | None
    best_value: float | None
    steps_per_s: float | None
    updated_at: float | None
    error: str | None = None
    layout: str = "runctl"    # another tool's layout: runctl only reads the run

    @property
    def foreign(self) -> bool:
        return self.layout != "runctl"

    @property
    def key(self) -> str:
        return str(self.path)

    def eta_seconds(self) -> float | None:
        """Time to max_steps at the current speed; only a running run has one."""
        if self.state != "running" or not self.steps_per_s or self.max_steps is None or self.step is None:
            return None
        return max(0, self.max_steps - self.step) / self.steps_per_s


def read_speed(run_dir: Path) -> float | None:
    """Optimizer steps per second from the newest train line of metrics.jsonl (its step_time)."""
    path = run_dir / METRICS_JSONL
    try:
        tail = safe_files.read_tail(path, _TAIL_BYTES)
    except OSError:
        return None
    # The first line may be cut by the seek and the last one may still be being written: parse
    # what parses, newest first.
    for line in reversed(tail.splitlines()):
        try:
            record: Any = json.loads(line)
        except ValueError:
            continue
        step_time = record.get("step_time") if isinstance(record, dict) else None
        if isinstance(step_time, int | float) and step_time > 0:
            return 1.0 / float(step_time)
    return None


def row_from_summary(summary: RunSummary) -> RunRow:
    best = summary.best or {}
    best_value = best.get("value")
    return RunRow(
        path=summary.path,
        name=summary.name or summary.run_id,
        state=summary.state,
        step=summary.step,
        max_steps=summary.max_steps,
        last_loss=summary.last_loss,
        best_metric=best.get("metric"),
        best_value=float(best_value) if isinstance(best_value, int | float) else None,
        # Another tool's run has no metrics.jsonl: nothing to open.
        steps_per_s=read_speed(summary.path) if summary.layout == "runctl" else None,
        updated_at=summary.updated_at,
        error=summary.error,
        layout=summary.layout,
    )


def load_rows(root: Path, *, newest: int = 0,
              on_newest: Callable[[list[RunRow]], None] | None = None, depth: int = DEFAULT_DEPTH) -> list[RunRow]:
    """Every run under root as a row (blocking: call it from a thread worker).

    With `on_newest`, the `newest` most recently written runs come first, as soon as they are
    read: a screenful to paint while the rest of a big root is read (once: they are part of the
    result too).
    """
    from runctl.runs.discovery import find_runs

    rows: dict[Path, RunRow] = {}

    def row_of(summary: RunSummary) -> RunRow:
        row = rows.get(summary.path)
        if row is None:
            row = rows[summary.path] = row_from_summary(summary)
        return row

    if on_newest is None:
        return [row_of(summary) for summary in find_runs(root, depth=depth)]

    def hand_over(summaries: list[RunSummary]) -> None:
        on_newest([row_of(summary) for summary in summaries])

    return [row_of(summary) for summary in find_runs(root, newest=newest, on_newest=hand_over, depth=depth)]


def load_row(run_dir: Path, root: Path | None = None) -> RunRow | None:
    """One run's row, or None when the folder is no longer a run (blocking). With `root`, a
    foreign run is named by its path relative to it, as in the full listing."""
    from runctl.runs.discovery import detect, summarize

    if detect(run_dir) is None:
        return None
    return row_from_summary(summarize(run_dir, root))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
