"""The screens paint through tui.frame_timer.FrameTimer: the frame after a slow one is not held
back a further interval, and two frames never start closer than the interval."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

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


@contextlib.asynccontextmanager
async def _running_timer(timer_class: type[Timer], interval: float,
                         slow_first: bool = False) -> AsyncIterator[tuple[Timer, list[float]]]:
    """(timer, frame start times): a timer on a running app whose callback records each frame's
    start and pauses the timer, as Screen._on_timer_update does; with `slow_first`, the first
    frame takes longer than the interval (a screen painting while the plot redraws)."""
    starts: list[float] = []
    app = ProbeApp()
    async with app.run_test() as pilot:
        await pilot.pause()

        def frame() -> None:
            starts.append(time.monotonic())
            timer.pause()
            if slow_first and len(starts) == 1:
                time.sleep(interval * 1.2)

        timer = timer_class(app, interval, name="probe-frames", callback=frame, pause=True)
        timer._start()  # noqa: SLF001
        try:
            yield timer, starts
        finally:
            timer.stop()


async def _frame_after_a_slow_frame(timer_class: type[Timer]) -> tuple[float, list[float]]:
    """The wait from asking for a second frame, as soon as a slow first one ended, to its start;
    and both frames' start times."""
    async with _running_timer(timer_class, INTERVAL, slow_first=True) as (timer, starts):
        timer.resume()
        await _wait_for(lambda: len(starts) == 1)
        await asyncio.sleep(0)
        asked = time.monotonic()
        timer.resume()
        await _wait_for(lambda: len(starts) == 2)
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
    async with _running_timer(FrameTimer, INTERVAL / 5) as (timer, starts):
        for count in range(1, 6):
            timer.resume()
            await _wait_for(lambda count=count: len(starts) == count)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= INTERVAL / 5 - 0.01


async def test_a_frame_that_answers_input_is_not_held_for_the_interval() -> None:
    async with _running_timer(FrameTimer, INTERVAL) as (timer, starts):
        timer.resume()
        await _wait_for(lambda: len(starts) == 1)
        timer.answer_input()
        asked = time.monotonic()
        timer.resume()
        await _wait_for(lambda: len(starts) == 2)
        assert starts[1] - asked < INTERVAL / 2
        # Only that frame: the next one keeps the interval again.
        timer.resume()
        await _wait_for(lambda: len(starts) == 3)
        assert starts[2] - starts[1] >= INTERVAL - 0.01


async def test_keys_and_clicks_reach_the_screens_frame_timer_but_mouse_moves_do_not(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app tells the current screen's FrameTimer of a key or a click as it arrives (tui.app
    on_event); a mouse move, which comes in floods, keeps the frame rate."""
    from runctl.tui.app import make_app
    from textual import events

    answered: list[Timer] = []
    monkeypatch.setattr(FrameTimer, "answer_input", lambda self: answered.append(self))
    app = make_app(tmp_path, watch=False, keymap_path=tmp_path / "no-keys.yaml")
    async with app.run_test() as pilot:
        await pilot.pause()
        timer = app.screen._update_timer  # noqa: SLF001
        assert isinstance(timer, FrameTimer)
        app.post_message(events.MouseMove(None, 3, 3, 0, 0, 0, False, False, False))
        await pilot.pause()
        assert answered == []
        app.post_message(events.Key("z", "z"))
        await pilot.pause()
        assert answered and set(answered) == {timer}
        answered.clear()
        app.post_message(events.MouseDown(None, 3, 3, 0, 0, 1, False, False, False))
        await pilot.pause()
        assert answered == [timer]
