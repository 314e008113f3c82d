"""torchrun's agent for `--nproc N`: `python -m runctl.engine.torchrun_agent TORCHRUN_ARGS`.

The launcher (the `runctl` command the user typed) starts this in a session of its own and
relays its signals to it; torchrun hands them to every rank. Around torchrun it adds:
- output that survives the terminal going away (runctl.console), installed before torch is
  imported, because torch's log handlers keep the stream they find at import;
- a lifeline to the launcher (engine.lifeline): if the launcher is killed outright, this agent
  gets SIGTERM and stops the ranks the usual way (each checkpoints and ends `interrupted`); its
  own pid goes to the ranks, which hold the same lifeline to it;
- no Python traceback when a signal or a failed rank ends torchrun: each rank has already said
  what happened in one line, and the run's status.json and events record it.
"""

from __future__ import annotations

import os
import sys

from runctl.engine.lifeline import AGENT_PID_ENV, LAUNCHER_PID_ENV, stop_with_env_parent

from runctl.console import guard_console


def main(argv: list[str]) -> int:
    guard_console()
    stop_with_env_parent(LAUNCHER_PID_ENV)
    os.environ[AGENT_PID_ENV] = str(os.getpid())  # torchrun copies the environment to every rank

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
