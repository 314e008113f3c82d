"""A column store for the metrics other tools write, with runs.metrics.MetricsReader's surface.

Each foreign reader (trainer_state.json, metrics.csv, TensorBoard events, text logs) feeds points
into a `SeriesStore` from its `poll()`; the run view plots it like runctl's own metrics. The raw
names stay as the tool wrote them; `series("train/loss")`, `series("val/loss")` and
`series("lr")` (what the plot asks for) resolve to the tool's own name for the same thing.
Within a series steps are strictly increasing: a step at or below an earlier one (a resumed run
logging again) cuts the series there, as in runctl's reader.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from runctl.runs.layouts.aliases import ALIASES
from runctl.runs.metrics import _Column


class SeriesStore:
    """Named (steps, values) series filled by a subclass's `poll()`."""

    def __init__(self) -> None:
        self.version = 0
        self.error: str | None = None     # why the files could not be read at the last poll
        self.note: str | None = None      # what is missing to read them (e.g. a package to install)
        self.malformed = 0
        self.dropped = 0
        self._columns: dict[str, _Column] = {}

    @property
    def resumes(self) -> list[object]:
        return []

    def poll(self) -> bool:
        raise NotImplementedError

    def names(self) -> list[str]:
        return [name for name, column in self._columns.items() if column.n]

    def resolve(self, name: str) -> str | None:
        """The stored name `name` stands for: itself, else the first alias with points."""
        column = self._columns.get(name)
        if column is not None and column.n:
            return name
        for alias in ALIASES.get(name, ()):
            column = self._columns.get(alias)
            if column is not None and column.n:
                return alias
        if name == "lr":
            return next((n for n in self.names() if n.startswith(("lr-", "lr/", "lr_"))), None)
        return None

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        stored = self.resolve(name)
        if stored is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        column = self._columns[stored]
        return _readonly(column.steps[: column.n]), _readonly(column.values[: column.n])

    def times(self, name: str) -> np.ndarray:
        stored = self.resolve(name)
        if stored is None:
            return np.empty(0, dtype=np.float64)
        column = self._columns[stored]
        return _readonly(column.times[: column.n])

    def last(self, name: str) -> tuple[int, float] | None:
        steps, values = self.series(name)
        return (int(steps[-1]), float(values[-1])) if len(steps) else None

    # ---- for the readers
    def reset(self) -> None:
        self._columns = {}
        self.malformed = 0
        self.dropped = 0
        self.version += 1

    def add(self, points: Iterable[tuple[str, int, float]]) -> None:
        """Append (name, step, value) points in the order they were logged."""
        grouped: dict[str, tuple[list[int], list[float]]] = {}
        for name, step, value in points:
            steps, values = grouped.setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
        for name, (steps, values) in grouped.items():
            column = self._columns.get(name)
            if column is None:
                column = self._columns[name] = _Column()
            step_array = np.asarray(steps, dtype=np.int64)
            self.dropped += column.extend(step_array, np.asarray(values, dtype=np.float64),
                                          np.full(len(steps), np.nan))
        if grouped:
            self.version += 1


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
