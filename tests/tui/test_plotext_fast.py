"""The numpy versions of plotext's get_lines and hd_group give plotext's own output, and the
adapter that swaps them in is the one place that touches plotext's private names."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from runctl.tui.widgets import plotext_adapter, plotext_fast


def _points(rng: random.Random, count: int, span: int) -> tuple[list[int], list[int]]:
    xs = sorted(rng.randrange(-5, span) for _ in range(count))
    ys = [rng.randrange(-5, span // 2) for _ in range(count)]
    if count > 3:  # repeated points and a vertical run, as min/max downsampling gives
        xs[1], ys[1] = xs[0], ys[0]
        xs[3] = xs[2]
    return xs, ys


@pytest.mark.parametrize("seed", range(40))
def test_get_lines_matches_plotext(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.choice([2, 3, 5, 50, 230])
    xs, ys = _points(rng, count, rng.choice([10, 240, 2000]))
    markers = [rng.choice(["braille", "hd"]) for _ in xs]
    colors = [rng.choice(["cyan", "orange", (1, 2, 3)]) for _ in xs]
    styles = ["default"] * count
    expected = plotext_fast._original_get_lines(xs, ys, markers, colors, styles)
    assert plotext_fast.get_lines(xs, ys, markers, colors, styles) == expected


@pytest.mark.parametrize("seed", range(40))
def test_hd_group_matches_plotext(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.choice([1, 2, 7, 300, 1400])
    xs = [rng.randrange(-3, 240) for _ in range(count)]
    ys = [rng.randrange(-3, 160) for _ in range(count)]
    expected = plotext_fast._original_hd_group(xs, ys, [2] * count, [4] * count)
    assert plotext_fast.hd_group(xs, ys, [2] * count, [4] * count) == expected


def test_what_it_was_not_written_for_goes_to_plotext() -> None:
    # Floats (no integer coordinates), NaN, other markers, one point: plotext's own code answers.
    for args in (([0.5, 3.0], [1.0, 2.0], ["braille"] * 2), ([0, float("nan")], [1, 2], ["braille"] * 2),
                 ([4], [2], ["braille"])):
        assert plotext_fast.get_lines(*args) == plotext_fast._original_get_lines(*args)
    assert plotext_fast.hd_group([1, 2], [3, 4], [2, 2], [3, 3]) == \
        plotext_fast._original_hd_group([1, 2], [3, 4], [2, 2], [3, 3])


def test_faster_plotext_restores_plotext() -> None:
    originals = plotext_adapter.line_functions_in_use()
    assert originals == (plotext_fast._original_get_lines, plotext_fast._original_hd_group)
    with plotext_fast.faster_plotext():
        assert plotext_adapter.line_functions_in_use() == (plotext_fast.get_lines, plotext_fast.hd_group)
    assert plotext_adapter.line_functions_in_use() == originals


def test_the_adapter_holds_plotexts_own_functions() -> None:
    import plotext._utility as plotext_utility  # noqa: PLC0415 - the names the adapter stands for

    assert plotext_adapter.plotext_get_lines is plotext_utility.get_lines
    assert plotext_adapter.plotext_hd_group is plotext_utility.hd_group
    assert plotext_adapter.colors_to_ansi is plotext_utility.colors_to_ansi


PRIVATE_PLOTEXT = re.compile(r"plotext\._|_utility\b|\._build_matrix|\._set_sizes?\b")


def test_only_the_adapter_touches_plotexts_private_names() -> None:
    package = Path(plotext_adapter.__file__).resolve().parents[2]  # the repository's tui/ engine/ runs/
    offenders = [str(path.relative_to(package)) for folder in ("tui", "engine", "runs", "runctl")
                 for path in sorted((package / folder).rglob("*.py"))
                 if path.name != "plotext_adapter.py" and PRIVATE_PLOTEXT.search(path.read_text())]
    assert offenders == []
