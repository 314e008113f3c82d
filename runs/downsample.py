"""Reduce a metric series to what a plot `width` columns wide can show, and smooth it.

Min/max per column rather than every k-th point: a loss spike lasting one step still reaches
the screen. Both functions are vectorised numpy, O(n) over the input, and ignore NaN/Infinity
(nothing can be drawn for them; the caller reports them separately if it wants to).
"""

from __future__ import annotations

import math

import numpy as np


def downsample_minmax(steps: np.ndarray, values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """At most 2 * width points: each x-bucket's min and max, in the order they occur.

    `steps` must be sorted ascending (as runs.metrics stores them). Buckets split the step
    range evenly, like the columns of a plot. Non-finite values are left out; a bucket with
    none finite yields no point.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length ({len(steps)} != {len(values)})")
    width = max(1, int(width))
    if len(values) > 2 * width:
        # Most series are all finite: try without the mask, whose isfinite pass over 1M points
        # costs as much as the argmin pass itself. A column's argmin/argmax lands on any NaN or
        # infinity it holds, so a non-finite pick is how a non-finite value shows up.
        picked = _column_extremes(steps, values, width)
        if picked is not None:
            return steps[picked], values[picked]
    finite = np.isfinite(values)
    if not finite.all():
        steps, values = steps[finite], values[finite]
    if len(values) <= 2 * width:
        return steps.copy(), values.copy()
    picked = _column_extremes(steps, values, width)
    assert picked is not None  # every value is finite here
    return steps[picked], values[picked]


def _column_extremes(steps: np.ndarray, values: np.ndarray, width: int) -> np.ndarray | None:
    """Indices of each column's min and max (in order), or None if a column holds NaN/infinity."""
    bounds = _column_bounds(steps, width)
    picked: list[int] = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if lo == hi:
            continue
        segment = values[lo:hi]
        low_at, high_at = lo + int(segment.argmin()), lo + int(segment.argmax())
        picked.append(min(low_at, high_at))
        if high_at != low_at:
            picked.append(max(low_at, high_at))
    index = np.asarray(picked, dtype=np.int64)
    if not np.isfinite(values[index]).all():
        return None
    return index


def _column_bounds(steps: np.ndarray, width: int) -> list[int]:
    """Where each of `width` columns starts in `steps`, plus the end: the column of a point is
    min(int((step - first) * width / span), width - 1), as a plot maps x to its columns."""
    count = len(steps)
    first, span = float(steps[0]), float(steps[-1]) - float(steps[0])
    if span <= 0:
        return [0] + [count] * width
    scale = width / span
    columns = np.arange(1, width)
    # Steps are sorted, so each column is one slice: binary-search its edges (O(width log n))
    # instead of computing the column of each of the n points (~10 passes over 1M points).
    thresholds = first + columns / scale
    if np.issubdtype(steps.dtype, np.integer):
        thresholds = np.ceil(thresholds).astype(steps.dtype)  # no float copy of `steps`
    edges = np.searchsorted(steps, thresholds, side="left")

    def column_of(at: np.ndarray) -> np.ndarray:
        return np.minimum(((steps[at] - first) * scale).astype(np.int64), width - 1)

    # Float rounding may put a threshold a point off the column formula; the formula decides.
    # Each pass moves an edge past a whole run of equal steps; one or two passes in practice.
    while True:
        ahead = edges < count
        ahead[ahead] = column_of(edges[ahead]) < columns[ahead]
        back = edges > 0
        back[back] = column_of(edges[back] - 1) >= columns[back]
        if not (ahead.any() or back.any()):
            break
        edges[ahead] = np.searchsorted(steps, steps[edges[ahead]], side="right")
        edges[back] = np.searchsorted(steps, steps[edges[back] - 1], side="left")
    return [0, *edges.tolist(), count]


# Keep each block's growth factor (1 - alpha) ** -length far from float64 overflow.
_MAX_GROWTH_LOG = 100 * math.log(10)
_MAX_BLOCK = 4096


def ema_smooth(values: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average: s[t] = alpha * x[t] + (1 - alpha) * s[t-1], s[0] = x[0].

    `alpha` in (0, 1] is the weight of the newest value (1 = no smoothing; TensorBoard's
    "smoothing" is 1 - alpha). Non-finite values are skipped: their positions keep the input
    value and the average carries over them. Vectorised in blocks, so 1M points take ms.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    values = np.asarray(values, dtype=np.float64)
    out = values.copy()
    finite = np.isfinite(values)
    x = values[finite]
    if alpha == 1 or len(x) < 2:
        return out
    decay = 1.0 - alpha
    smoothed = np.empty_like(x)
    if decay == 0:
        smoothed[:] = x
    else:
        # Inside a block: s[t] = d^t * (s[-1] + sum_{j<=t} alpha * x[j] * d^-j), with t from 1.
        block = int(min(_MAX_BLOCK, max(1, _MAX_GROWTH_LOG / -math.log(decay))))
        exponents = np.arange(1, block + 1, dtype=np.float64)
        grow = decay**-exponents
        shrink = decay**exponents
        previous = x[0]
        smoothed[0] = previous
        start = 1
        while start < len(x):
            stop = min(start + block, len(x))
            size = stop - start
            partial = np.cumsum(alpha * x[start:stop] * grow[:size])
            chunk = shrink[:size] * (previous + partial)
            smoothed[start:stop] = chunk
            previous = chunk[-1]
            start = stop
    out[finite] = smoothed
    return out
