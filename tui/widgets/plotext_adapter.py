"""The one module that touches plotext's private names (pinned in pyproject.toml to a tested range).

The loss plot's speed-ups need three things plotext does not publish: the two helpers of its
`_utility` module that join points into dots and group dots into braille cells (swapped for numpy
versions during a build), its colour-to-ANSI function, and the steps of `Figure.build()` before the
ANSI string is made (the character matrix). Everything else imports them from here, so a plotext
release that moves them is one file to change, and tests/tui/test_plotext_fast.py compares the
results against plotext's own output on the installed version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import plotext._utility as _plotext_utility

LineFunction = Callable[..., Any]

# plotext's own versions, as imported (a swap in progress never changes these).
plotext_get_lines: LineFunction = _plotext_utility.get_lines
plotext_hd_group: LineFunction = _plotext_utility.hd_group
colors_to_ansi: Callable[[Any, Any, Any], str] = _plotext_utility.colors_to_ansi


def line_functions_in_use() -> tuple[LineFunction, LineFunction]:
    """The get_lines and hd_group plotext calls right now."""
    return _plotext_utility.get_lines, _plotext_utility.hd_group


@contextlib.contextmanager
def line_functions(get_lines: LineFunction, hd_group: LineFunction) -> Iterator[None]:
    """Have plotext call `get_lines` and `hd_group` (it reads them from its utility module on
    each use) until the block ends, then its own again."""
    _plotext_utility.get_lines, _plotext_utility.hd_group = get_lines, hd_group
    try:
        yield
    finally:
        _plotext_utility.get_lines, _plotext_utility.hd_group = plotext_get_lines, plotext_hd_group


def build_matrix(plot: Any) -> tuple[list[list[Any]], ...]:
    """`plot.build()` without its last step (joining the matrix into an ANSI string): the rows of
    markers, foreground colours, styles and background colours, row 0 at the bottom. Raises
    AttributeError when the installed plotext does not have these steps."""
    plot._set_sizes()  # noqa: SLF001
    plot._build_matrix()  # noqa: SLF001
    matrix = plot.monitor.matrix
    return matrix.marker, matrix.fullground, matrix.style, matrix.background


def set_size(plot: Any, width: int, height: int) -> None:
    """Resize the figure itself: plotsize alone does not always resize (textual-plotext issue 5),
    which is why PlotextPlot.render calls this too."""
    plot._set_size(width, height)  # noqa: SLF001
