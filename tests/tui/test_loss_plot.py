"""The loss plot's chart renders plotext's figure exactly as textual-plotext's own ANSI path does."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console
from rich.text import Text
from runctl.runs.plot_series import Curve, Overlay, PlotData
from runctl.tui.widgets.loss_plot import LossPlot, PlotextChart
from textual.app import App, ComposeResult
from textual_plotext import PlotextPlot


def _styled_cells(text: Text) -> list[tuple[str, object]]:
    console = Console(width=400, color_system="truecolor", force_terminal=True, legacy_windows=False)
    return [(char, segment.style) for segment in text.render(console) for char in segment.text]


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


@pytest.mark.parametrize("options", [
    {},
    {"log_y": True},
    {"smoothing": 0.9, "window_steps": 1000},
    {"show_lr": True},
    {"data": PlotData()},  # "no metrics yet"
])
async def test_chart_text_equals_plotexts_ansi_output(options: dict) -> None:
    app = PlotApp()
    async with app.run_test(size=(100, 36)) as pilot:
        plot = app.query_one(LossPlot)
        plot.data = options.pop("data", _data())
        for name, value in options.items():
            setattr(plot, name, value)
        await pilot.pause()
        charts = [chart for chart in plot.query(PlotextChart) if chart.display]
        assert charts and all(chart.size.width > 20 for chart in charts)
        for chart in charts:
            plot._draw()  # noqa: SLF001 - a fresh figure for each path: a build changes plotext's state
            fast = chart.render()
            plot._draw()  # noqa: SLF001
            reference = PlotextPlot.render(chart)  # textual-plotext's path: build() + Text.from_ansi
            assert isinstance(fast, Text) and isinstance(reference, Text)
            assert fast.plain == reference.plain
            assert _styled_cells(fast) == _styled_cells(reference)
