"""The loss plot's chart renders plotext's figure exactly as textual-plotext's own ANSI path does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
from rich.text import Text
from runctl.runs.plot_series import Curve, Overlay, PlotData
from runctl.tui.widgets.loss_plot import LossPlot, PlotextChart
from textual.app import App, ComposeResult
from textual_plotext import PlotextPlot


def _data() -> PlotData:
    rng = np.random.default_rng(3)
    steps = np.arange(1, 20_001, dtype=np.int64)
    train = 2.0 * np.exp(-steps / 4000) + 0.05 * rng.random(len(steps))
    train[[100, 5000]] = [np.nan, np.inf]  # not drawable: skipped
    val_steps = steps[::250]
    other = Curve(steps[:9000], train[:9000] * 1.2)
    return PlotData(train=Curve(steps, train), val=Curve(val_steps, train[val_steps - 1] + 0.1),
                    lr=Curve(steps, 1e-3 * np.minimum(1.0, steps / 2000)),
                    overlays=(Overlay("parent", other, Curve(val_steps[:30], train[val_steps[:30] - 1])),))


class PlotApp(App[None]):
    def compose(self) -> ComposeResult:
        yield LossPlot(id="plot")


PLOT_OPTIONS = [
    {},
    {"log_y": True},
    {"smoothing": 0.9, "window_steps": 1000},
    {"show_lr": True},
    {"data": PlotData()},  # "no metrics yet"
]


@contextlib.asynccontextmanager
async def _shown_charts(options: dict) -> AsyncIterator[tuple[LossPlot, list[PlotextChart]]]:
    """A 100x36 app's LossPlot with `options` set (and `_data()` unless they hold "data"), and its
    displayed charts."""
    options = dict(options)
    app = PlotApp()
    async with app.run_test(size=(100, 36)) as pilot:
        plot = app.query_one(LossPlot)
        plot.data = options.pop("data", _data())
        for name, value in options.items():
            setattr(plot, name, value)
        await pilot.pause()
        charts = [chart for chart in plot.query(PlotextChart) if chart.display]
        assert charts and all(chart.size.width > 20 for chart in charts)
        yield plot, charts


def _cells(strips) -> list[list[tuple[str, object]]]:
    """Each line's cells as (character, style without Textual's mouse-offset metadata)."""
    return [[(char, segment.style.clear_meta_and_links() if segment.style else None)
             for segment in strip for char in segment.text] for strip in strips]


@pytest.mark.parametrize("options", PLOT_OPTIONS)
async def test_chart_lines_equal_textuals_lines_of_plotexts_ansi_output(options: dict) -> None:
    """The chart's own lines (PlotextChart.render_line) are the ones Textual makes from
    textual-plotext's own render (plotext's ANSI string, parsed back), cell for cell, in the
    widget's own colours."""
    from textual.visual import Visual, visualize

    async with _shown_charts(options) as (plot, charts):
        for chart in charts:
            width, height = chart.size
            plot._draw()  # noqa: SLF001 - a fresh figure for each path
            lines = [chart.render_line(y) for y in range(height)]
            plot._draw()  # noqa: SLF001
            reference = PlotextPlot.render(chart)  # textual-plotext's path: build() + Text.from_ansi
            assert isinstance(reference, Text) and reference.plain.strip()
            textual_lines = Visual.to_strips(chart, visualize(chart, reference), width, height, chart.visual_style)
            assert len(lines) == height
            assert all(line.cell_length == width for line in lines)
            assert _cells(lines) == _cells(textual_lines)


async def test_chart_lines_are_built_again_after_a_redraw_only() -> None:
    app = PlotApp()
    async with app.run_test(size=(100, 36)) as pilot:
        plot = app.query_one(LossPlot)
        plot.data = _data()
        await pilot.pause()
        chart = plot.query_one("#loss-chart", PlotextChart)
        before = [chart.render_line(y) for y in range(chart.size.height)]
        assert chart.render_line(0) is before[0]  # kept between frames
        plot.log_y = True  # redraws at once
        after = [chart.render_line(y) for y in range(chart.size.height)]
        assert _cells(after) != _cells(before)
        assert "log-y" in "".join(segment.text for segment in after[0])
