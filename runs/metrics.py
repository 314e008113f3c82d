"""Incremental reader of a run's metrics.jsonl into a column store of plot-ready numpy arrays.

Each metric name holds three parallel arrays in file order: steps (int64), values (float64) and
the wall time of the line that logged it (float64, NaN when the line had none). Within a series
steps are strictly increasing, so a curve is one line without duplicate steps:

- A killed attempt's points past the checkpoint it was resumed from are dropped. A `resumed`
  event in events.jsonl (step k, time T) marks every point with step > k logged before T as
  dead, whichever file the reader happens to see first. An event without a time falls back to
  reading order: it drops what was read before it was seen.
- Independently, a step that goes backwards within a series (the resumed attempt logging a step
  the dead one already logged) truncates the series before it. This keeps curves clean even
  when events.jsonl is missing, and makes the clock of another host matter less.

NaN and Infinity values (written with allow_nan) are kept as floats; plotting code must cope
(runs.downsample ignores non-finite values).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
from runctl.runs.downsample import downsample_minmax, ema_smooth
from runctl.runs.events import EventsReader, ResumePoint, resume_point, resume_points
from runctl.runs.jsonl_tail import JsonlTail, parse_json_line
from runctl.runs.layout import EVENTS_JSONL, METRICS_JSONL

__all__ = ["MetricsReader", "downsample_minmax", "ema_smooth", "STEP_KEY", "TIME_KEY"]

STEP_KEY = "step"
TIME_KEY = "time"
_INITIAL_CAPACITY = 1024
# Steps must convert to int64 exactly; NaN and inf fail the comparison too.
_MAX_STEP = float(2**53)


class _Column:
    """Growable parallel arrays for one metric; amortised O(1) appends."""

    __slots__ = ("steps", "values", "times", "n")

    def __init__(self) -> None:
        self.steps = np.empty(0, dtype=np.int64)
        self.values = np.empty(0, dtype=np.float64)
        self.times = np.empty(0, dtype=np.float64)
        self.n = 0

    def last_step(self) -> int | None:
        return int(self.steps[self.n - 1]) if self.n else None

    def extend(self, steps: np.ndarray, values: np.ndarray, times: np.ndarray) -> int:
        """Append points in file order; returns how many stored points were dropped."""
        count = len(steps)
        if count == 0:
            return 0
        dropped = 0
        increasing = count == 1 or bool((steps[1:] > steps[:-1]).all())
        if not increasing or (self.n and steps[0] <= self.steps[self.n - 1]):
            # A step at or below an earlier one: a later attempt re-logs it, so everything logged
            # before at that step or above it belongs to an abandoned attempt.
            cut = int(np.searchsorted(self.steps[: self.n], steps.min(), side="left"))
            dropped += self.n - cut
            self.n = cut
            later_min = np.minimum.accumulate(steps[::-1])[::-1]
            keep = np.ones(count, dtype=bool)
            keep[:-1] = steps[:-1] < later_min[1:]
            if not keep.all():
                dropped += int(count - keep.sum())
                steps, values, times = steps[keep], values[keep], times[keep]
                count = len(steps)
        self._reserve(self.n + count)
        end = self.n + count
        self.steps[self.n : end] = steps
        self.values[self.n : end] = values
        self.times[self.n : end] = times
        self.n = end
        return dropped

    def drop_dead(self, point: ResumePoint) -> int:
        """Remove points past `point.step` logged before `point.time` (all of them if NaN)."""
        start = int(np.searchsorted(self.steps[: self.n], point.step, side="right"))
        if start >= self.n:
            return 0
        # NaN compares False: a point without a time, or an event without one, counts as dead.
        keep = self.times[start : self.n] >= point.time
        kept = int(keep.sum())
        if kept == self.n - start:
            return 0
        for array in (self.steps, self.values, self.times):
            array[start : start + kept] = array[start : self.n][keep]
        dropped = self.n - start - kept
        self.n = start + kept
        return dropped

    def _reserve(self, needed: int) -> None:
        capacity = len(self.steps)
        if needed <= capacity:
            return
        capacity = max(_INITIAL_CAPACITY, capacity * 2, needed)
        for name in ("steps", "values", "times"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class MetricsReader:
    """Column store fed incrementally from metrics.jsonl; call `poll()` to take in new lines.

    `path` is a run directory or a metrics.jsonl file; `events_path` defaults to the
    events.jsonl beside it. Arrays returned by `series()` are read-only views that stay valid
    until the next `poll()`. Not thread-safe: poll and read from one thread.
    """

    def __init__(self, path: Path, events_path: Path | None = None) -> None:
        path = Path(path)
        if path.is_dir() or path.suffix != ".jsonl":
            path = path / METRICS_JSONL
        self.path = path
        self.events_path = Path(events_path) if events_path is not None else path.parent / EVENTS_JSONL
        self.lines = 0  # well-formed lines taken in (current contents of the file)
        self.malformed = 0  # lines skipped: not JSON, not an object, or without an integer step
        self.dropped = 0  # points (one metric at one step) discarded as a killed attempt's future
        self.version = 0  # bumped on every change of the store; cheap "redraw?" check
        self._columns: dict[str, _Column] = {}
        self._resumes: list[ResumePoint] = []
        self._tail = JsonlTail(self.path)
        self._events = EventsReader(self.events_path)

    @property
    def error(self) -> str | None:
        """Why the file could not be read at the last poll (e.g. permission denied), else None."""
        return self._tail.error or self._events.error

    @property
    def note(self) -> str | None:
        """What reading left out of metrics.jsonl or events.jsonl (too large to read whole, a
        line too long), else None."""
        return self._tail.note or self._events.note

    @property
    def resumes(self) -> list[ResumePoint]:
        return list(self._resumes)

    def poll(self) -> bool:
        """Read what was appended since the last poll; True if any series changed."""
        version = self.version
        generation = self._events.generation
        new_events = self._events.poll()
        if self._events.generation != generation:
            # events.jsonl was replaced: resume points may have vanished, so rebuild from scratch.
            self._resumes = resume_points(self._events.events)
            self._reset_store()
            self._tail = JsonlTail(self.path)
        else:
            for event in new_events:
                point = resume_point(event)
                if point is not None:
                    self._resumes.append(point)
                    self._drop_dead(point)
        self._tail.poll(self._reset_store, self._ingest)
        return self.version != version

    def names(self) -> list[str]:
        """Metric names with at least one point, in the order they first appeared."""
        return [name for name, column in self._columns.items() if column.n]

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one metric; empty arrays for an unknown name."""
        column = self._columns.get(name)
        if column is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return _readonly(column.steps[: column.n]), _readonly(column.values[: column.n])

    def times(self, name: str) -> np.ndarray:
        """Wall time (unix seconds) of each point of `name`, parallel to `series(name)`."""
        column = self._columns.get(name)
        if column is None:
            return np.empty(0, dtype=np.float64)
        return _readonly(column.times[: column.n])

    def last(self, name: str) -> tuple[int, float] | None:
        """(step, value) of the newest point of `name`, or None."""
        column = self._columns.get(name)
        if column is None or not column.n:
            return None
        return int(column.steps[column.n - 1]), float(column.values[column.n - 1])

    def _reset_store(self) -> None:
        self._columns = {}
        self.lines = 0
        self.malformed = 0
        self.dropped = 0
        self.version += 1

    def _drop_dead(self, point: ResumePoint) -> None:
        dropped = sum(column.drop_dead(point) for column in self._columns.values())
        if dropped:
            self.dropped += dropped
            self.version += 1

    def _ingest(self, lines: list[bytes]) -> None:
        # Rows are grouped by their key tuple: lines from one writer share keys in one order, so a
        # group converts to a 2-D float array in one numpy call instead of one call per value.
        groups: dict[tuple[str, ...], tuple[list[object], list[int]]] = {}
        loads = orjson.loads
        for ordinal, line in enumerate(lines):
            try:
                record = loads(line)
            except orjson.JSONDecodeError:
                record = self._parse_slow(line)
                if record is None:
                    continue
            if type(record) is not dict:
                self.malformed += 1
                continue
            keys = tuple(record)
            group = groups.get(keys)
            if group is None:
                group = groups[keys] = ([], [])
            group[0].extend(record.values())
            group[1].append(ordinal)

        pieces: dict[str, list[tuple[np.ndarray, ...]]] = {}
        for keys, (flat, ordinals) in groups.items():
            self._columnize(keys, flat, ordinals, pieces)

        changed = False
        for name, parts in pieces.items():
            if len(parts) == 1:
                ordinals, steps, values, times = parts[0]
            else:
                # One metric logged by lines of different shapes: restore file order.
                ordinals, steps, values, times = (
                    np.concatenate(arrays) for arrays in zip(*parts, strict=True)
                )
                order = np.argsort(ordinals, kind="stable")
                steps, values, times = steps[order], values[order], times[order]
            for point in self._resumes:
                dead = (times < point.time) & (steps > point.step)
                if dead.any():
                    alive = ~dead
                    self.dropped += int(dead.sum())
                    steps, values, times = steps[alive], values[alive], times[alive]
            if not len(steps):
                continue
            column = self._columns.get(name)
            if column is None:
                column = self._columns[name] = _Column()
            self.dropped += column.extend(steps, values, times)
            changed = True
        if changed:
            self.version += 1

    def _parse_slow(self, line: bytes) -> object | None:
        if not line.strip():
            return None
        try:
            return parse_json_line(line)
        except ValueError:
            self.malformed += 1
            return None

    def _columnize(
        self,
        keys: tuple[str, ...],
        flat: list[object],
        ordinals: list[int],
        pieces: dict[str, list[tuple[np.ndarray, ...]]],
    ) -> None:
        rows = len(ordinals)
        if STEP_KEY not in keys:
            self.malformed += rows
            return
        width = len(keys)
        try:
            table = np.array(flat, dtype=np.float64).reshape(rows, width)
            present = None
        except (TypeError, ValueError, OverflowError):
            # Some value is not a number (null, a string, a list): convert one by one.
            table, present = _table_with_gaps(flat, rows, width)
        step_index = keys.index(STEP_KEY)
        step_column = table[:, step_index]
        good = (np.abs(step_column) < _MAX_STEP) & (step_column == np.floor(step_column))
        if present is not None:
            good &= present[:, step_index]
        if not good.all():
            self.malformed += int(rows - good.sum())
            table = table[good]
            if present is not None:
                present = present[good]
        self.lines += len(table)
        if not len(table):
            return
        order = np.asarray(ordinals, dtype=np.int64)[good]
        steps = table[:, step_index].astype(np.int64)
        if TIME_KEY in keys and present is None:
            times = table[:, keys.index(TIME_KEY)]
        elif TIME_KEY in keys:
            times = np.where(present[:, keys.index(TIME_KEY)], table[:, keys.index(TIME_KEY)], math.nan)
        else:
            times = np.full(len(table), math.nan)
        for index, name in enumerate(keys):
            if name == STEP_KEY or name == TIME_KEY:
                # Time is kept per point (`times()`); as a series of its own it would repeat
                # steps, since train and eval lines of one step share it.
                continue
            values = table[:, index]
            if present is None:
                part = (order, steps, values, times)
            else:
                mask = present[:, index]
                if not mask.any():
                    continue
                part = (order[mask], steps[mask], values[mask], times[mask])
            pieces.setdefault(name, []).append(part)


def _table_with_gaps(flat: list[object], rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A float table plus a mask of the cells that held a number (bools count as 0/1)."""
    table = np.full(rows * width, math.nan)
    present = np.zeros(rows * width, dtype=bool)
    for index, value in enumerate(flat):
        if isinstance(value, int | float):
            try:
                table[index] = value
            except OverflowError:
                continue
            present[index] = True
    return table.reshape(rows, width), present.reshape(rows, width)
