"""downsample_minmax against a point-by-point reference, on the inputs its fast path must hand over."""

from __future__ import annotations

import numpy as np
import pytest
from runctl.runs.downsample import downsample_minmax


def reference_minmax(steps: np.ndarray, values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one point at a time: drop non-finite values, give each point its column,
    keep each column's min and max in the order they occur."""
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(values) <= 2 * width:
        return steps, values
    first, span = float(steps[0]), float(steps[-1]) - float(steps[0])
    scale = width / span if span > 0 else 0.0
    columns = np.array([min(int((step - first) * scale), width - 1) for step in steps])
    picked: list[int] = []
    for column in np.unique(columns):
        at = np.flatnonzero(columns == column)
        picked.extend(sorted({int(at[values[at].argmin()]), int(at[values[at].argmax()])}))
    return steps[picked], values[picked]


def _steps(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "sparse":
        return np.sort(rng.integers(0, 10**6, count))
    if kind == "repeated":  # resumed runs log some steps twice: runs of equal steps straddle column edges
        return np.sort(rng.integers(0, 40, count))
    if kind == "float":
        return np.sort(rng.random(count) * 1e3)
    if kind == "single":
        return np.full(count, 5, dtype=np.int64)
    return np.arange(count, dtype=np.int64) * 7 + 3


@pytest.mark.parametrize("kind", ["sparse", "repeated", "float", "single", "even"])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_downsample_equals_the_point_by_point_definition(kind: str, bad: float | None) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        count = int(rng.integers(1, 1500))
        steps = _steps(kind, count, rng)
        values = rng.normal(size=count)
        if bad is not None:
            values[rng.integers(0, count, int(rng.integers(1, 30)))] = bad
        width = int(rng.integers(1, 150))
        xs, ys = downsample_minmax(steps, values, width)
        want_xs, want_ys = reference_minmax(steps, values, width)
        assert xs.tolist() == want_xs.tolist()
        assert ys.tolist() == want_ys.tolist()


def test_downsample_with_a_non_finite_first_value_buckets_the_finite_range() -> None:
    steps = np.arange(10_000)
    values = np.sin(steps / 100.0)
    values[:10] = np.nan  # the buckets start at the first finite step, not at step 0
    xs, ys = downsample_minmax(steps, values, 50)
    want_xs, want_ys = reference_minmax(steps, values, 50)
    assert xs.tolist() == want_xs.tolist() and ys.tolist() == want_ys.tolist()
