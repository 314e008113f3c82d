"""Processes that stop when the process that started them dies: torchrun's agent and its ranks.

`runctl train --nproc N` is one launcher (the command the user typed) over torchrun's agent over
N ranks, each in a session of its own. A hang-up or Ctrl-C reaches the launcher, which relays it
down. A `kill -9` of the launcher (or of the agent) relays nothing: without this, the ranks would
train on, holding the GPUs, with no command left in any terminal to stop them. So each process
asks Linux for SIGTERM when its parent exits (prctl PR_SET_PDEATHSIG); SIGTERM is the signal the
engine answers with an interrupt checkpoint, so the run ends `interrupted` and `runctl resume`
continues it, exactly as after a hang-up. Elsewhere than Linux this does nothing.

No torch here: the agent calls it before it imports torch.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
# The launcher's pid, for torchrun's agent; the agent's, for each rank (torchrun passes it on).
LAUNCHER_PID_ENV = "RUNCTL_LAUNCHER_PID"
AGENT_PID_ENV = "RUNCTL_AGENT_PID"
# The UI's pid, for an engine process it starts (`runctl --engine process`): the run stops with a
# checkpoint if the UI dies without relaying a signal (kill -9, a crash).
UI_PID_ENV = "RUNCTL_UI_PID"
# How often an engine process started by the UI checks that the UI is still its parent.
PARENT_CHECK_SECONDS = 0.5


def stop_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> bool:
    """Have `signum` sent to this process when `parent_pid`, its parent, exits; True if armed.

    The kernel sends it when the parent *thread* that forked this process ends: the launcher and
    torchrun's agent both start their children from their main thread, which lives until they exit.
    A parent that is already gone (it died before this ran) gets the signal sent right away."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
    return True


def stop_with_env_parent(variable: str) -> bool:
    """`stop_with_parent` for the pid in environment variable `variable`, if it names our parent."""
    value = os.environ.get(variable, "")
    return stop_with_parent(int(value)) if value.isdigit() else False


def stop_when_parent_exits(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Send `signum` to this process once `parent_pid` is no longer its parent (it exited and this
    process was re-parented); at once if that is so already. A background thread checks every
    PARENT_CHECK_SECONDS.

    For a parent with many threads (the UI), where `stop_with_parent` would not do: the kernel
    sends the parent-death signal each time the child passes to another thread of the dying
    process, and a second signal tells the engine to exit without its checkpoint."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="runctl-lifeline", daemon=True).start()
