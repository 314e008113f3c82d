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
    finite = np.isfinite(values)
    if not finite.all():
        steps, values = steps[finite], values[finite]
    width = max(1, int(width))
    count = len(values)
    if count <= 2 * width:
        return steps.copy(), values.copy()

    first, span = float(steps[0]), float(steps[-1]) - float(steps[0])
    if span <= 0:
        buckets = np.zeros(count, dtype=np.int64)
    else:
        buckets = ((steps - first) * (width / span)).astype(np.int64)
        np.minimum(buckets, width - 1, out=buckets)
    # Bucket ids are non-decreasing; each run of equal ids is one column.
    new_bucket = np.empty(count, dtype=bool)
    new_bucket[0] = True
    np.not_equal(buckets[1:], buckets[:-1], out=new_bucket[1:])
    starts = np.flatnonzero(new_bucket)
    column = np.cumsum(new_bucket) - 1

    lows = np.minimum.reduceat(values, starts)
    highs = np.maximum.reduceat(values, starts)
    low_at = _first_index_per_column(values == lows[column], column)
    high_at = _first_index_per_column(values == highs[column], column)

    pairs = np.empty((len(starts), 2), dtype=np.int64)
    np.minimum(low_at, high_at, out=pairs[:, 0])
    np.maximum(low_at, high_at, out=pairs[:, 1])
    picked = pairs.ravel()
    distinct = np.empty(len(picked), dtype=bool)
    distinct[0] = True
    np.not_equal(picked[1:], picked[:-1], out=distinct[1:])
    picked = picked[distinct]
    return steps[picked], values[picked]


def _first_index_per_column(hits: np.ndarray, column: np.ndarray) -> np.ndarray:
    indices = np.flatnonzero(hits)
    owners = column[indices]
    first = np.empty(len(indices), dtype=bool)
    first[0] = True
    np.not_equal(owners[1:], owners[:-1], out=first[1:])
    return indices[first]


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
