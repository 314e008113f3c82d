"""Numpy versions of the two plotext steps that cost most of a loss-plot frame, same output.

plotext draws a line plot by joining consecutive points with dots (`get_lines`, a Python loop per
segment) and then groups the dots into braille characters (`hd_group`, a Python loop per dot):
together about 8 of the 12 ms of a 120x40 frame (bench/bench_ui.py bench_plot). These functions
compute the same lists with numpy, and hand anything they were not written for (non-integer
coordinates, markers other than braille, no extra lists) back to plotext's own code.
`faster_plotext()` swaps them in for the duration of one build, on the thread that builds
(through tui.widgets.plotext_adapter, the one module that touches plotext's private names).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from runctl.tui.widgets import plotext_adapter

_original_get_lines = plotext_adapter.plotext_get_lines
_original_hd_group = plotext_adapter.plotext_hd_group
# A braille cell: 2 dots wide, 4 high; plotext's pattern tuple lists the rows top down.
_BRAILLE_WIDTH, _BRAILLE_HEIGHT = 2, 4
_PATTERNS = [tuple((code >> bit) & 1 for bit in range(8)) for code in range(256)]


def _all_int(values: list[Any]) -> bool:
    return all(type(value) is int for value in values)


def get_lines(x: list[Any], y: list[Any], *other: list[Any]) -> list[list[Any]]:
    """plotext's get_lines: the dots from each point to the next, the last point, and
    `other` (markers, colours, styles) repeated along each segment."""
    count = len(x)
    if count < 2 or len(y) != count or not other or any(len(o) != count for o in other) \
            or not (_all_int(x) and _all_int(y)):
        return _original_get_lines(x, y, *other)
    xs, ys = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    dx, dy = np.diff(xs), np.diff(ys)
    steps = np.maximum(np.abs(dx), np.abs(dy))  # plotext's linspace length is steps + 1
    # Each segment gives its dots but its end (the next segment starts there).
    segment = np.repeat(np.arange(count - 1), steps)
    starts = np.cumsum(steps) - steps
    k = np.arange(int(steps.sum())) - np.repeat(starts, steps)
    divisor = np.where(steps > 0, steps, 1)
    # As plotext's linspace: lower + k * ((upper - lower) / (length - 1)), then int().
    slope_x, slope_y = dx / divisor, dy / divisor
    line_x = np.trunc(xs[segment] + k * slope_x[segment]).astype(np.int64).tolist()
    line_y = np.trunc(ys[segment] + k * slope_y[segment]).astype(np.int64).tolist()
    line_x.append(x[-1])
    line_y.append(y[-1])
    indices = [*segment.tolist(), count - 1]
    return [line_x, line_y, *[[values[i] for i in indices] for values in other]]


def hd_group(x: list[Any], y: list[Any], xf: list[int], yf: list[int]) -> tuple[list[int], list[int], list[tuple]]:
    """plotext's hd_group for braille dots: the character cells (in order of first dot)
    and each cell's dot pattern."""
    if not x or len(y) != len(x) or set(xf) != {_BRAILLE_WIDTH} or set(yf) != {_BRAILLE_HEIGHT} \
            or not (_all_int(x) and _all_int(y)):
        return _original_hd_group(x, y, xf, yf)
    xs, ys = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
    cells = np.stack([xs // _BRAILLE_WIDTH, ys // _BRAILLE_HEIGHT], axis=1)
    unique, first, inverse = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    bits = (_BRAILLE_HEIGHT - 1 - ys % _BRAILLE_HEIGHT) * _BRAILLE_WIDTH + xs % _BRAILLE_WIDTH
    codes = np.zeros(len(unique), dtype=np.int64)
    np.bitwise_or.at(codes, inverse.reshape(-1), np.left_shift(1, bits))
    order = np.argsort(first, kind="stable")
    return (unique[order, 0].tolist(), unique[order, 1].tolist(),
            [_PATTERNS[code] for code in codes[order].tolist()])


@contextlib.contextmanager
def faster_plotext() -> Iterator[None]:
    """Use these versions for one figure build."""
    with plotext_adapter.line_functions(get_lines, hd_group):
        yield
