"""The run view's live loss plot: train/val loss, optional LR panel, overlays of other runs.

Plot options (smoothing, log-y, window, LR panel) are reactives that the run view's keys flip.
textual-plotext rebuilds the whole figure on every render, so each curve is smoothed once per data
change (cached), cut to the window, then downsampled min/max per column to the widget's width,
and redraws are throttled to a few per second. The charts turn plotext's character matrix into
their lines directly (`figure_rows`, `figure_strips`), not through an ANSI string and Textual's
text rendering, and keep them until the next redraw. Log-y is drawn as log10 of the values with
decade tick labels, because plotext's own log scale breaks on rebuild in textual-plotext 1.0.1.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from itertools import groupby
from typing import Self

import numpy as np
from rich.ansi import AnsiDecoder
from rich.segment import Segment
from rich.style import Style
from runctl.runs.metrics import downsample_minmax, ema_smooth
from runctl.runs.plot_series import Curve, PlotData, PlotDelta, PlotSeries
from runctl.tui.widgets.plotext_adapter import build_matrix, colors_to_ansi, set_size
from runctl.tui.widgets.plotext_fast import faster_plotext
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Region
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.timer import Timer
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

PLOT_MARKER = "braille"
SMOOTHING_STEPS: tuple[float, ...] = (0.0, 0.6, 0.9, 0.97)
DEFAULT_WINDOW_STEPS = 1000
# At most this many redraws a second: plotext rebuilds the figure from scratch each time.
MAX_REDRAWS_PER_SECOND = 5.0
# Columns plotext spends on the y tick labels and frame; the data area is the rest.
_AXIS_COLUMNS = 10
_OVERLAY_COLORS = ("magenta", "yellow", "green", "red", "blue", "white")


class _SmoothingCache:
    """EMA results keyed by curve and factor, so redraws do not recompute them. An entry holds
    the values array it was computed from: compared by identity, it cannot be mistaken for a new
    array at the same address."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[np.ndarray, float, np.ndarray]] = {}

    def smoothed(self, key: str, curve: Curve, factor: float) -> np.ndarray:
        if factor <= 0.0:
            return curve.values
        entry = self._entries.get(key)
        if entry is not None and entry[0] is curve.values and entry[1] == factor:
            return entry[2]
        # ema_smooth takes the weight of the newest value; the factor here is TensorBoard-style smoothing.
        values = np.asarray(ema_smooth(curve.values, 1.0 - factor), dtype=float)
        self._entries[key] = (curve.values, factor, values)
        return values


def window_mask(steps: np.ndarray, last_step: int | None, window_steps: int | None) -> np.ndarray | None:
    """Boolean mask of the points inside the last `window_steps` steps, or None for all points."""
    if window_steps is None or last_step is None:
        return None
    return steps > last_step - window_steps


def log10_positive(values: np.ndarray) -> np.ndarray:
    """log10 of the values; zero and negative values (no logarithm) become NaN and are not drawn."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values.astype(float, copy=False))
    out[~np.isfinite(out)] = np.nan
    return out


def decade_ticks(low: float, high: float, max_ticks: int = 6) -> tuple[list[float], list[str]]:
    """Tick positions (in log10 units) and labels (the real values) for a log10 axis on [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [], []
    if high - low < 1e-12:
        return [low], [_format_value(10**low)]
    first, last = math.floor(low), math.ceil(high)
    for multipliers in ((1.0, 2.0, 5.0), (1.0,)):
        positions = [math.log10(m) + k for k in range(first, last + 1) for m in multipliers]
        inside = [p for p in positions if low - 1e-9 <= p <= high + 1e-9]
        if 2 <= len(inside) <= max_ticks:
            return inside, [_format_value(10**p) for p in inside]
    decades = [float(k) for k in range(math.ceil(low), math.floor(high) + 1)]
    stride = max(1, math.ceil(len(decades) / max_ticks))
    decades = decades[::stride]
    if len(decades) < 2:
        # The range falls between two ticks: label its ends instead.
        decades = [low, high]
    return decades, [_format_value(10**p) for p in decades]


def _format_value(value: float) -> str:
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.0e}"


def _finite_points(steps: np.ndarray, values: np.ndarray) -> tuple[list[float], list[float]]:
    keep = np.isfinite(values)
    return steps[keep].astype(float).tolist(), values[keep].astype(float).tolist()


Run = tuple[str, Style | None]


def figure_rows(plot: Plot) -> list[list[Run]] | None:
    """Build the figure as rows of (characters, Rich style) runs, top row first: plotext's matrix
    of characters and colours, each row's cells of equal colours joined. None when the installed
    plotext does not build that way (tui.widgets.plotext_adapter) or draws in its fast mode."""
    try:
        if plot.monitor.fast_plot:
            return None
        with faster_plotext():
            markers, foregrounds, styles, backgrounds = build_matrix(plot)
    except AttributeError:
        return None
    rows: list[list[Run]] = []
    for row in reversed(range(len(markers))):  # plotext's row 0 is the bottom line
        characters = markers[row]
        runs: list[Run] = []
        column = 0
        for colors, run in groupby(zip(foregrounds[row], styles[row], backgrounds[row], strict=True)):
            length = len(list(run))
            try:
                style = _cell_style(*colors)
            except TypeError:  # a colour given as a list: not hashable, so not cached
                style = _cell_style.__wrapped__(*colors)
            runs.append(("".join(characters[column:column + length]), style))
            column += length
        rows.append(runs)
    return rows


def figure_strips(rows: list[list[Run]], base: Style, width: int) -> list[Strip]:
    """The rows as the widget's lines: each run in the widget's style with its colours on top,
    each line cut or padded to `width` cells."""
    strips = []
    for runs in rows:
        segments = [Segment(characters, base + style if style is not None else base) for characters, style in runs]
        strips.append(Strip(segments).adjust_cell_length(width, base))
    return strips


@lru_cache(maxsize=512)
def _cell_style(foreground: object, style: object, background: object) -> Style | None:
    """The Rich style of one plotext colour triple: plotext's own ANSI code, parsed by Rich."""
    decoded = AnsiDecoder().decode_line(colors_to_ansi(foreground, style, background) + "x")
    if not decoded.spans:
        return None
    parsed = decoded.spans[0].style
    return parsed if isinstance(parsed, Style) else Style.parse(parsed)


class PlotextChart(PlotextPlot):
    """A PlotextPlot drawn as lines (Textual's line API) built from plotext's matrix.

    Textual turns a widget's Rich text into its lines through its own Content on every frame: for
    this chart that took as long as plotext's build (bench/key_timeline.py). Here the lines are
    made from the matrix directly and kept until the widget is refreshed, resized or restyled.
    Where plotext's matrix is not reachable, Textual draws textual-plotext's own `render` (the
    figure as an ANSI string, parsed back).
    """

    # A picture in braille dots, not text to copy; its lines carry no offsets for a selection.
    ALLOW_SELECT = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._version = 0  # refreshes so far: new lines are built after each
        self._lines_key: tuple | None = None
        self._lines: list[Strip] | None = None
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def refresh(self, *regions: Region, repaint: bool = True, layout: bool = False,
                recompose: bool = False) -> Self:
        self._version += 1
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def build_lines(self) -> list[Strip] | None:
        """The figure as the widget's lines, or None where plotext's matrix is not reachable."""
        plot = self.plt
        width, height = self.size.width, self.size.height
        # As PlotextPlot.render, up to its build.
        plot.plotsize(width, height)
        set_size(plot, width, height)
        plot.theme(self._get_plotext_theme_name(self.app.theme))
        rows = figure_rows(plot)
        return None if rows is None else figure_strips(rows, self.visual_style.rich_style, width)

    def render_line(self, y: int) -> Strip:
        key = (self._version, self.size, self.app.theme, self.visual_style.rich_style)
        if key != self._lines_key:
            self._lines = self.build_lines()
            self._lines_key = key
        if self._lines is None:
            return super().render_line(y)
        if y < len(self._lines):
            return self._lines[y]
        return Strip.blank(self.size.width, self.visual_style.rich_style)


class LossPlot(Vertical):
    """Train/val loss (and overlays) on top; the LR schedule as it ran below when `show_lr` is on."""

    DEFAULT_CSS = """
    LossPlot { height: 1fr; }
    LossPlot > #loss-chart { height: 1fr; }
    LossPlot > #lr-chart { height: 40%; display: none; }
    LossPlot.-show-lr > #lr-chart { display: block; }
    """

    class Points(Message):
        """New points of the plotted series, read by a follower thread (runs.run_follower)."""

        def __init__(self, delta: PlotDelta) -> None:
            super().__init__()
            self.delta = delta

    smoothing: reactive[float] = reactive(0.0)
    log_y: reactive[bool] = reactive(False)
    window_steps: reactive[int | None] = reactive(None)
    show_lr: reactive[bool] = reactive(False)

    def __init__(self, *, window_size: int = DEFAULT_WINDOW_STEPS, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.window_size = window_size
        self.data = PlotData()
        self._series = PlotSeries()
        self.draw_count = 0
        self._cache = _SmoothingCache()
        self._last_draw = 0.0
        self._pending: Timer | None = None

    def compose(self) -> ComposeResult:
        yield PlotextChart(id="loss-chart")
        yield PlotextChart(id="lr-chart")

    def on_mount(self) -> None:
        self._draw()

    def on_resize(self) -> None:
        # The downsampling width depends on the size; redraw at the new width.
        self.request_redraw()

    # --- options flipped by the run view's keys -------------------------------------------
    def cycle_smoothing(self) -> float:
        index = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[(index + 1) % len(SMOOTHING_STEPS)]
        return self.smoothing

    def toggle_window(self) -> int | None:
        self.window_steps = None if self.window_steps is not None else self.window_size
        return self.window_steps

    def watch_smoothing(self) -> None:
        self.redraw_now()

    def watch_log_y(self) -> None:
        self.redraw_now()

    def watch_window_steps(self) -> None:
        self.redraw_now()

    def watch_show_lr(self, show: bool) -> None:
        self.set_class(show, "-show-lr")
        self.redraw_now()

    # --- data ------------------------------------------------------------------------------
    def set_data(self, data: PlotData) -> None:
        self.data = data
        self.request_redraw()

    def on_loss_plot_points(self, message: LossPlot.Points) -> None:
        self.set_data(self._series.apply(message.delta))

    def request_redraw(self) -> None:
        """Redraw now if the last frame is old enough, else once when the throttle interval ends."""
        if not self.is_mounted:
            return
        wait = self._last_draw + 1.0 / MAX_REDRAWS_PER_SECOND - time.monotonic()
        if wait <= 0:
            self._draw()
        elif self._pending is None:
            self._pending = self.set_timer(wait, self._draw_pending)

    def redraw_now(self) -> None:
        """Draw at once, throttle or not: a key press must not wait for the next slot (up to
        1 / MAX_REDRAWS_PER_SECOND while metrics stream in); the throttle is for data floods."""
        if not self.is_mounted:
            return
        if self._pending is not None:
            self._pending.stop()
            self._pending = None
        self._draw()

    def _draw_pending(self) -> None:
        self._pending = None
        self._draw()

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self.draw_count += 1
        loss_chart = self.query_one("#loss-chart", PlotextPlot)
        self._draw_loss(loss_chart)
        loss_chart.refresh()
        if self.show_lr:
            lr_chart = self.query_one("#lr-chart", PlotextPlot)
            self._draw_lr(lr_chart)
            lr_chart.refresh()

    def _columns(self, chart: PlotextPlot) -> int:
        return max(8, chart.size.width - _AXIS_COLUMNS)

    def _prepare(self, key: str, curve: Curve, width: int, smooth: bool, log: bool) -> tuple[list[float], list[float]]:
        values = self._cache.smoothed(key, curve, self.smoothing) if smooth else curve.values
        steps = curve.steps
        mask = window_mask(steps, self.data.last_step, self.window_steps)
        if mask is not None:
            steps, values = steps[mask], values[mask]
        if len(steps) == 0:
            return [], []
        steps, values = downsample_minmax(steps, values, width)
        values = np.asarray(values, dtype=float)
        if log:
            values = log10_positive(values)
        return _finite_points(np.asarray(steps), values)

    def _draw_loss(self, chart: PlotextPlot) -> None:
        plt = chart.plt
        # A fresh figure each frame: custom log ticks must not outlive a switch back to linear.
        plt.clear_figure()
        width = self._columns(chart)
        drawn: list[float] = []
        series: list[tuple[str, Curve | None, str, bool]] = [("train", self.data.train, "cyan", True)]
        for index, overlay in enumerate(self.data.overlays):
            color = _OVERLAY_COLORS[index % len(_OVERLAY_COLORS)]
            series.append((f"{overlay.label} train", overlay.train, color, True))
            series.append((f"{overlay.label} val", overlay.val, color, False))
        series.append(("val", self.data.val, "orange", False))
        for label, curve, color, smooth in series:
            if curve is None or not len(curve):
                continue
            xs, ys = self._prepare(label, curve, width, smooth, self.log_y)
            if not xs:
                continue
            plt.plot(xs, ys, label=label, color=color, marker=PLOT_MARKER)
            drawn.extend(ys)
        plt.title(self._title())
        plt.xlabel("step")
        if self.log_y and drawn:
            positions, labels = decade_ticks(min(drawn), max(drawn))
            plt.yticks(positions, labels)
            plt.ylabel("loss (log)")
        else:
            plt.ylabel("loss")
        if not drawn:
            plt.title(f"{self._title()}: no metrics yet")

    def _draw_lr(self, chart: PlotextPlot) -> None:
        plt = chart.plt
        plt.clear_figure()
        plt.title("learning rate")
        curve = self.data.lr
        if curve is None or not len(curve):
            return
        xs, ys = self._prepare("lr", curve, self._columns(chart), smooth=False, log=False)
        if xs:
            plt.plot(xs, ys, label="lr", color="green", marker=PLOT_MARKER)

    def _title(self) -> str:
        parts = [f"loss · ema {self.smoothing:g}" if self.smoothing else "loss · raw"]
        parts.append("log-y" if self.log_y else "linear")
        parts.append(f"last {self.window_steps} steps" if self.window_steps is not None else "all steps")
        return "  ·  ".join(parts)
