"""Plot-ready curves and the deltas that carry them from a reading thread to the plot.

A reader thread holds the full series of a run's metrics; the plot, on the UI thread, holds its
own copy. Between the two only what changed travels: a `SeriesDelta` says "keep your first `keep`
points, then append these". Appended lines are a delta with `keep` equal to the points the plot
already has; a resumed attempt that re-logs steps, or a file truncated or replaced, is a delta with
a smaller `keep`. `SeriesSender` turns successive full series into deltas, `PlotSeries` applies
them; both keep the same arrays, so the plot ends with exactly what the reader has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

_INITIAL_CAPACITY = 256

# The series of one run the plot draws, and of each overlay run its train and val loss.
RUN_SERIES = ("train/loss", "val/loss", "lr")
OVERLAY_SERIES = ("train/loss", "val/loss")


@dataclass(frozen=True)
class Curve:
    """One metric of one run, as plot-ready arrays (steps ascending)."""

    steps: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.steps.shape[0])


@dataclass(frozen=True)
class Overlay:
    """Another run drawn for comparison: its train loss and, if any, its val loss."""

    label: str
    train: Curve | None
    val: Curve | None = None


@dataclass(frozen=True)
class PlotData:
    """Everything the plot shows; a new one whenever new points arrive."""

    train: Curve | None = None
    val: Curve | None = None
    lr: Curve | None = None
    overlays: tuple[Overlay, ...] = field(default=())

    @property
    def last_step(self) -> int | None:
        ends = [int(c.steps[-1]) for c in (self.train, self.val, self.lr) if c is not None and len(c)]
        return max(ends) if ends else None


@dataclass(frozen=True)
class SeriesDelta:
    """Keep the first `keep` points of the series, then append `steps`/`values` (owned copies)."""

    keep: int
    steps: np.ndarray
    values: np.ndarray


# A series is named by the run it belongs to ("" for the followed run itself, else the overlay
# run's folder) and the metric.
SeriesKey = tuple[str, str]


@dataclass(frozen=True)
class PlotDelta:
    """What changed in the plotted series since the last delta.

    `overlays`, when not None, is the new list of overlay runs (key, label) in drawing order; the
    series of runs no longer listed are dropped.
    """

    series: dict[SeriesKey, SeriesDelta]
    overlays: tuple[tuple[str, str], ...] | None = None


class _Buffer:
    """Growable parallel step/value arrays; amortised O(1) appends.

    Points once handed out in a Curve are never written again: appends go past them, and a delta
    that replaces some (keep < n) copies the kept ones into new arrays. So a Curve is a view that
    stays valid, and building one costs nothing.
    """

    __slots__ = ("steps", "values", "n", "_curve")

    def __init__(self) -> None:
        self.steps = np.empty(0, dtype=np.int64)
        self.values = np.empty(0, dtype=np.float64)
        self.n = 0
        self._curve: Curve | None = None

    def apply(self, delta: SeriesDelta) -> None:
        end = delta.keep + len(delta.steps)
        if end > len(self.steps) or delta.keep < self.n:
            capacity = max(_INITIAL_CAPACITY, 2 * len(self.steps), end)
            steps = np.empty(capacity, dtype=np.int64)
            values = np.empty(capacity, dtype=np.float64)
            steps[: delta.keep] = self.steps[: delta.keep]
            values[: delta.keep] = self.values[: delta.keep]
            self.steps, self.values = steps, values
        self.steps[delta.keep : end] = delta.steps
        self.values[delta.keep : end] = delta.values
        self.n = end
        self._curve = None

    def curve(self) -> Curve | None:
        """The points as a Curve of read-only views; the same object until the next delta."""
        if self._curve is None and self.n:
            self._curve = Curve(_readonly(self.steps[: self.n]), _readonly(self.values[: self.n]))
        return self._curve


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _first_difference(held: _Buffer, steps: np.ndarray, values: np.ndarray) -> int:
    """How many leading points `held` shares with (steps, values); NaN equals NaN."""
    common = min(held.n, len(steps))
    if not common:
        return 0
    a_values, b_values = held.values[:common], values[:common]
    differ = (held.steps[:common] != steps[:common]) | (
        (a_values != b_values) & ~(np.isnan(a_values) & np.isnan(b_values)))
    return int(np.argmax(differ)) if differ.any() else common


class SeriesSender:
    """The reading side: remembers what it sent and turns a series' current arrays into a delta."""

    def __init__(self) -> None:
        self._sent: dict[SeriesKey, _Buffer] = {}

    def delta(self, key: SeriesKey, steps: np.ndarray, values: np.ndarray) -> SeriesDelta | None:
        """The delta from what was sent for `key` to (steps, values), or None if they are equal."""
        held = self._sent.setdefault(key, _Buffer())
        keep = _first_difference(held, steps, values)
        if keep == held.n == len(steps):
            return None
        delta = SeriesDelta(keep, np.array(steps[keep:], dtype=np.int64), np.array(values[keep:], dtype=np.float64))
        held.apply(delta)
        return delta

    def forget(self, keys: Iterable[SeriesKey]) -> None:
        for key in keys:
            self._sent.pop(key, None)


class PlotSeries:
    """The receiving side (the plot): applies deltas and builds the PlotData to draw."""

    def __init__(self) -> None:
        self._series: dict[SeriesKey, _Buffer] = {}
        self._overlays: tuple[tuple[str, str], ...] = ()

    def apply(self, delta: PlotDelta) -> PlotData:
        if delta.overlays is not None:
            self._overlays = delta.overlays
            kept = {""} | {run for run, _ in delta.overlays}
            for key in [k for k in self._series if k[0] not in kept]:
                del self._series[key]
        for key, change in delta.series.items():
            self._series.setdefault(key, _Buffer()).apply(change)
        return self.data()

    def _curve(self, run: str, metric: str) -> Curve | None:
        buffer = self._series.get((run, metric))
        return buffer.curve() if buffer is not None else None

    def data(self) -> PlotData:
        overlays = tuple(Overlay(label, self._curve(run, "train/loss"), self._curve(run, "val/loss"))
                         for run, label in self._overlays)
        return PlotData(train=self._curve("", "train/loss"), val=self._curve("", "val/loss"),
                        lr=self._curve("", "lr"), overlays=overlays)
