"""The screens paint through tui.frame_timer.FrameTimer: the frame after a slow one is not held
back a further interval, and two frames never start closer than the interval."""

from __future__ import annotations

import asyncio
import time

import pytest
from runctl.tui.frame_timer import SCREEN_UPDATE_TIMER, FrameTimer, SteadyFrames
from runctl.tui.screens.run_view import RunViewScreen
from runctl.tui.screens.runs_list import RunsListScreen
from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Static

INTERVAL = 0.5


class ProbeScreen(SteadyFrames, Screen):
    def compose(self) -> ComposeResult:
        yield Static("probe", id="probe")


class ProbeApp(App):
    def on_mount(self) -> None:
        self.push_screen(ProbeScreen())


async def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_the_screen_paints_through_a_frame_timer() -> None:
    """Guards the adapter: the installed Textual still makes the screen's update timer with
    set_interval under SCREEN_UPDATE_TIMER, and the screen still paints through it."""
    app = ProbeApp()
    async with app.run_test() as pilot:
        await pilot.pause()
        timer = app.screen._update_timer  # noqa: SLF001
        assert isinstance(timer, FrameTimer)
        assert timer.name == SCREEN_UPDATE_TIMER
        ticks = timer.ticks
        app.screen.query_one("#probe", Static).update("repainted")
        await _wait_for(lambda: timer.ticks > ticks)


@pytest.mark.parametrize("screen", [RunViewScreen, RunsListScreen])
def test_runctl_screens_use_steady_frames(screen: type[Screen]) -> None:
    assert issubclass(screen, SteadyFrames)


async def _frame_after_a_slow_frame(timer_class: type[Timer]) -> tuple[float, list[float]]:
    """Start times of two frames, the first one slower than the interval and the second asked for
    as soon as the first ended (a screen that repaints while a plot redraws); and the wait from
    that request to the second frame."""
    starts: list[float] = []
    app = ProbeApp()
    async with app.run_test() as pilot:
        await pilot.pause()

        def frame() -> None:
            starts.append(time.monotonic())
            timer.pause()  # as Screen._on_timer_update
            if len(starts) == 1:
                time.sleep(INTERVAL * 1.2)

        timer = timer_class(app, INTERVAL, name="probe-frames", callback=frame, pause=True)
        timer._start()  # noqa: SLF001
        try:
            timer.resume()
            await _wait_for(lambda: len(starts) == 1)
            await asyncio.sleep(0)
            asked = time.monotonic()
            timer.resume()
            await _wait_for(lambda: len(starts) == 2)
        finally:
            timer.stop()
    return starts[1] - asked, starts


async def test_the_frame_after_a_slow_one_starts_at_once() -> None:
    wait, starts = await _frame_after_a_slow_frame(FrameTimer)
    assert wait < INTERVAL / 2
    assert starts[1] - starts[0] >= INTERVAL - 0.01


async def test_textual_timer_holds_that_frame_back_an_interval() -> None:
    """Why FrameTimer exists: Textual's own timer skips to the second grid point ahead. If this
    fails, Textual no longer does, and tui.frame_timer can go."""
    wait, _ = await _frame_after_a_slow_frame(Timer)
    assert wait >= INTERVAL * 0.6


async def test_frames_asked_for_in_a_burst_are_an_interval_apart() -> None:
    starts: list[float] = []
    app = ProbeApp()
    async with app.run_test() as pilot:
        await pilot.pause()

        def frame() -> None:
            starts.append(time.monotonic())
            timer.pause()

        timer = FrameTimer(app, INTERVAL / 5, name="probe-burst", callback=frame, pause=True)
        timer._start()  # noqa: SLF001
        try:
            for count in range(1, 6):
                timer.resume()
                await _wait_for(lambda count=count: len(starts) == count)
        finally:
            timer.stop()
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= INTERVAL / 5 - 0.01
