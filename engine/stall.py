"""Hung is not crashed: telling a run whose step stopped advancing from one that is slow, saying
where it is stuck, and ending it when the user asks.

`StallWatch` is driven by the heartbeat thread (engine.runlog): each beat it samples the step the
loop published, so the training loop pays nothing for it. A run is stalled when its step has not
advanced for `threshold` seconds: `stall.after_s` from the config, or else the larger of 5 minutes
and 20 times the median step time seen so far. Then every thread's Python stack is captured
(`sys._current_frames`) for the `stalled` event.

A stop or a signal only takes effect at a step boundary, which a hung step never reaches. While
stalled, a pending stop waits `stall.grace_s` for the step to end and then raises `StallInterrupt`
in the training thread (`PyThreadState_SetAsyncExc`): the trainer catches it and ends the run
`interrupted` with a checkpoint of the last completed step. The exception is delivered when that
thread next runs Python code, so a step blocked in Python (a queue, a lock, a file that never
comes) ends; one blocked inside a C call (a NCCL collective) ends only when that call returns,
and a second signal still exits at once.
"""

from __future__ import annotations

import ctypes
import re
import statistics
import sys
import sysconfig
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

MIN_STALL_SECONDS = 300.0
STEP_TIME_FACTOR = 20.0
# How many recent step-time samples the median is taken over.
SAMPLES = 64
# The reason an interrupted run gives when a stop (not a signal) ended its hung step.
STALLED_STOP = "stop while stalled"
_FRAME = re.compile(r'File "(.+)", line (\d+), in (.+)$')


class StallInterrupt(BaseException):
    """Raised inside the training thread of a stalled run that was asked to stop. A BaseException,
    like KeyboardInterrupt, so a task's `except Exception` cannot swallow it."""


def thread_stacks() -> list[dict[str, Any]]:
    """Every thread's Python stack, innermost call last: [{"thread", "ident", "stack"}]."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = []
    for ident, frame in sys._current_frames().items():
        stacks.append({"thread": names.get(ident, f"thread {ident}"), "ident": ident,
                       "stack": "".join(traceback.format_stack(frame))})
    return sorted(stacks, key=lambda s: (s["thread"] != "MainThread", s["thread"]))


def innermost_frame(stack: str) -> str | None:
    """"function (file:line)" of the innermost frame of a `thread_stacks` stack text that is not
    in Python's standard library (a wait in threading.py says less than the code that waits)."""
    frames = [m.groups() for m in map(_FRAME.match, (line.strip() for line in stack.splitlines())) if m]
    if not frames:
        return None
    stdlib = sysconfig.get_paths()["stdlib"]
    path, line_no, function = next((f for f in reversed(frames) if not f[0].startswith(stdlib)), frames[-1])
    return f"{function} ({path.rsplit('/', 1)[-1]}:{line_no})"


class StallWatch:
    """Sampled by the heartbeat thread; `observe()` says what changed since the last beat."""

    def __init__(self, after_s: float | None = None, grace_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after_s = after_s
        self.grace_s = grace_s
        self._clock = clock
        self._step: int | None = None
        self._changed_at = clock()
        self._step_times: deque[float] = deque(maxlen=SAMPLES)
        self.stalled = False
        self._stop_seen_at: float | None = None
        # The training thread, while it may be interrupted (Trainer.run arms and disarms it).
        self._target: int | None = None
        self._target_lock = threading.Lock()
        self.interrupted = False

    def threshold(self) -> float:
        if self.after_s is not None:
            return self.after_s
        median = statistics.median(self._step_times) if self._step_times else 0.0
        return max(MIN_STALL_SECONDS, STEP_TIME_FACTOR * median)

    def seconds_since_progress(self) -> float:
        return self._clock() - self._changed_at

    def observe(self, step: int) -> str | None:
        """Record the published step; "stalled" or "unstalled" when that changes, else None."""
        now = self._clock()
        if step != self._step:
            if self._step is not None and step > self._step:
                self._step_times.append((now - self._changed_at) / (step - self._step))
            self._step, self._changed_at = step, now
            self._stop_seen_at = None
            if self.stalled:
                self.stalled = False
                return "unstalled"
            return None
        if not self.stalled and now - self._changed_at > self.threshold():
            self.stalled = True
            return "stalled"
        return None

    # ------------------------------------------------------------ ending a hung step

    @property
    def training_thread(self) -> int | None:
        return self._target

    def arm(self) -> None:
        """The calling thread runs the training loop: a stop while stalled may interrupt it."""
        with self._target_lock:
            self._target = threading.get_ident()
            self.interrupted = False

    def disarm(self) -> None:
        """The loop is done: no interrupt may land after this (a pending one is withdrawn)."""
        with self._target_lock:
            if self._target is not None and self.interrupted:
                _set_async_exc(self._target, None)
            self._target = None

    def stop_pending(self, requested: bool) -> bool:
        """Called each beat with whether a stop is pending; True when it raised StallInterrupt."""
        if not (self.stalled and requested):
            self._stop_seen_at = None
            return False
        now = self._clock()
        if self._stop_seen_at is None:
            self._stop_seen_at = now
        if now - self._stop_seen_at < self.grace_s:
            return False
        with self._target_lock:
            if self._target is None or self.interrupted:
                return False
            self.interrupted = True
            return _set_async_exc(self._target, StallInterrupt)


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> bool:
    count = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                       ctypes.py_object(exc) if exc else None)
    return count == 1
