"""Bounded waits on a condition: a hang fails the test with what it waited for, never blocks CI."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
PILOT_TIMEOUT = 60.0


class WaitTimeout(AssertionError):
    """A bounded wait ran out: the condition never became true."""


class Watched(Protocol):
    """A process a wait gives up on once it exits (support.cli.Engine, support.terminal.Terminal)."""

    def running(self) -> bool: ...

    def stderr(self) -> str: ...


def wait_for(condition: Callable[[], T], timeout: float, what: str, *, interval: float = 0.01,
             alive: Watched | None = None) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout` s.

    With `alive`, also fail as soon as that process exits (no point waiting for it any longer).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None and not alive.running():
            value = condition()
            if value:
                return value
            raise WaitTimeout(f"the process exited before {what}; stderr: {alive.stderr()[-2000:]!r}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


async def pilot_wait_for(pilot: Any, condition: Callable[[], Any], what: str,
                         timeout: float = PILOT_TIMEOUT) -> None:
    """`wait_for` inside a Textual Pilot test: the app keeps running between the checks. A timeout
    names the screens and the notifications the app showed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = [n.message for n in getattr(pilot.app, "_notifications", [])]
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}; "
                              f"screens {pilot.app.screen_stack}, notifications {shown}")
        await pilot.pause(0.05)
