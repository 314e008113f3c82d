"""SIGTERM, SIGINT and SIGHUP (an SSH drop): finish the step, checkpoint, exit `interrupted`.

The first signal only asks the loop to stop (Control.request_interrupt); the loop finishes the
current step, writes an `interrupt` checkpoint and sets the state. A second signal means "now":
the process leaves at once with os._exit. That is safe because every file the engine writes is
written atomically (temp name + rename), so an exit mid-write leaves only a temp file, which the
next save removes; the stale heartbeat and the free lock then show the run as interrupted.

Python only lets the main thread install handlers; a training thread started by the UI gets no
handlers (the UI owns the process's signals and calls the Control object instead).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from runctl.engine.control import Control

from runctl.console import tell

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals(control: Control, quiet: bool = False) -> Iterator[bool]:
    """Route the handled signals to `control` while the block runs; yields whether it could.

    `quiet`: say nothing on stderr (ranks other than 0: one line per signal is enough)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            tell(f"runctl: second signal ({name}): exiting now without a checkpoint\n")
            os._exit(128 + signum)
        received.append(signum)
        control.request_interrupt(name)
        if not quiet:
            tell(f"runctl: {name}: finishing this step, then writing a checkpoint "
                 "(send it again to exit at once)\n")

    # `nohup runctl ...` ignores hang-ups on purpose: the run outlives its terminal.
    handled = [sig for sig in HANDLED_SIGNALS if not (sig == signal.SIGHUP and hangups_ignored())]
    previous = {sig: signal.signal(sig, handle) for sig in handled}
    try:
        yield True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)



def hangups_ignored() -> bool:
    """SIGHUP was set to be ignored before runctl started (nohup)."""
    return signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
