"""Screen frames that follow a key at once, still at most one an interval (1/60 s).

Textual paints a screen from a timer (`Screen._update_timer`, every 1/60 s) that pauses after each
frame and resumes when a widget asks to be repainted. That timer keeps its ticks on the grid of
its start time, and when a tick comes late it skips to the second grid point ahead rather than the
first: the frame after a slow one waits 17-33 ms instead of 0-17 ms. A run view whose live plot
redraws five times a second often has such a frame in flight, so a key pressed there waited for
that too: key -> screen p95 of 29-32 ms against 13-15 ms idle while digits_mlp trained, 21-24 ms
with this timer (200 keys a figure, the keys of bench/bench_ui.py --only keys).

`FrameTimer` keeps only the limit: a frame starts one interval or more after the last one started,
and a repaint asked for after a quiet spell is painted on the event loop's next pass.

The frame that answers a key or a click is not held for the limit at all (`answer_input`, called
by the app as the input arrives). The live view paints small frames of its own (the header's step,
about five a second while digits_mlp trains), and a key pressed just after one waited the rest of
the interval, 15-17 ms: about half of the slowest tenth of the keys on the live view were those
(bench/key_timeline.py: every frame, chart build and key handler timed, 150 keys a run). With
it, that wait is gone from the slowest tenth and key -> screen p95 fell from 25.8-27.1 ms to
20.1-21.8 ms (idle 14-16 ms).

`SteadyFrames` gives a screen this timer. It is the one module that touches Textual's private
timer names (Textual is pinned to 8.2 in pyproject.toml); tests/tui/test_frame_timer.py checks that
the installed Textual still builds the screen's timer through `set_interval` under this name.
"""

from __future__ import annotations

import asyncio

from textual import _time
from textual.timer import EventTargetGone, Timer, TimerCallback

# The name Screen._update_timer gives the timer it creates with set_interval (Textual 8.2).
SCREEN_UPDATE_TIMER = "screen_update"


class FrameTimer(Timer):
    """A repeating timer whose ticks are at least one interval apart, and otherwise immediate."""

    ticks = 0
    _last_tick: float | None = None

    def answer_input(self) -> None:
        """The next frame starts as soon as it is asked for: it answers a key or a click."""
        self._last_tick = None

    async def _run(self) -> None:
        while True:
            await self._active.wait()
            self._reset = False
            now = _time.get_time()
            last_tick = self._last_tick
            if last_tick is not None and now < last_tick + self._interval:
                # asyncio's own sleep: it always yields, so a pause() during the wait is seen.
                await asyncio.sleep(last_tick + self._interval - now)
                continue
            self._last_tick = now
            self.ticks += 1
            try:
                await self._tick(next_timer=now, count=self.ticks)
            except EventTargetGone:
                break


def answer_input(screen: object) -> None:
    """Input arrived for `screen`: its next frame is not held for the interval (see the module)."""
    timer = getattr(screen, "_update_timer", None)
    if isinstance(timer, FrameTimer):
        timer.answer_input()


class SteadyFrames:
    """Screen mixin (before Screen in the bases): the screen paints through a `FrameTimer`."""

    def set_interval(self, interval: float, callback: TimerCallback | None = None, *, name: str | None = None,
                     repeat: int = 0, pause: bool = False) -> Timer:
        if name != SCREEN_UPDATE_TIMER or repeat:
            return super().set_interval(interval, callback, name=name, repeat=repeat, pause=pause)  # type: ignore[misc]
        timer = FrameTimer(self, interval, name=name, callback=callback, pause=pause)  # type: ignore[arg-type]
        timer._start()  # noqa: SLF001
        self._timers.add(timer)  # type: ignore[attr-defined]
        return timer
