"""The engines in child processes (`runctl --engine process`): each run the UI trains is a
`python -m runctl resume RUN` of its own, commanded like any run trained elsewhere.

The UI's process then holds no training thread: the engine's Python, however much of it a task
runs per step, shares no GIL with the UI (bench/bench_ui.py prints key -> screen with either host
against the idle figure). `ProcessEngineHost` is an EngineHost (creating, extending and branching
runs, the one-line errors and `shown_state` are the same code); what differs is where a run trains
and how it is reached:

- a run starts as `python -m runctl resume RUN [--from CKPT]` (the run is created or extended
  here first, as with the thread host), in a process group of its own within the UI's session,
  at the engine's niceness: with autogroup scheduling that ranks it below the UI alone, as the
  thread host's niceness does. Its stdout and stderr are appended to RUN/train.log: the terminal
  belongs to Textual.
- stop, checkpoint now and a live extend go through the run's control folder
  (engine.control.write_command), which the child polls at every step boundary, as for
  `runctl stop`.
- a thread of the host waits on each child and follows the run's events.jsonl: it posts
  EngineEvent messages, the "resuming from X; skipped Y (reason)" notification, and at the end
  EngineFinished with the child's one-line error: "crashed at step N: ..." from the run's files,
  or the `runctl: ...` line the child wrote last (a refusal, exit 2).
- signals: outside the terminal's foreground process group, the child never gets the terminal's
  SIGHUP itself (a second signal would make it exit without a checkpoint); `interrupt_all` relays the UI's signal once,
  so the run checkpoints and ends `interrupted`. If the UI dies without relaying one (kill -9),
  the child sees it is no longer the UI's child and sends itself SIGTERM, with the same end
  (engine.lifeline.stop_when_parent_exits, armed through RUNCTL_UI_PID).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.engine.lifeline import UI_PID_ENV
from runctl.runs import safe_files
from runctl.runs.errors import RunctlError
from runctl.runs.jsonl_tail import JsonlTail, parse_json_line
from runctl.runs.layout import EVENTS_JSONL
from runctl.runs.lock import is_locked
from runctl.runs.status import read_status
from runctl.tui.engine_host import AUTO, EngineHost, resume_message
from runctl.tui.messages import EngineEvent, EngineFinished

# Where a child's output goes: the file `runctl train --detach` writes too.
CHILD_LOG = "train.log"
# How often the waiting thread reads the run's new events and looks for the child's end (a command
# to relay wakes it at once).
POLL_SECONDS = 0.25
# The most of a child's output read back for its last `runctl:` line.
LOG_TAIL_BYTES = 64 * 1024


@dataclass
class ChildTraining:
    """One run trained by a child process: the process once started, the signal to relay to it,
    and a flag set when the waiting thread ends."""

    run_dir: Path
    process: subprocess.Popen[bytes] | None = None
    interrupt: str | None = None  # the signal's name asked for by interrupt_all, relayed once
    done: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.monotonic)


class ProcessEngineHost(EngineHost):
    """EngineHost whose runs train in child processes (see the module's docstring)."""

    # ------------------------------------------------------------ commands
    def stop_all(self) -> None:
        for training in self._children():
            self._write_or_interrupt(training, "stop")

    def interrupt_all(self, signal_name: str) -> None:
        """Ask every child to checkpoint and end `interrupted`: its waiting thread relays the signal."""
        for training in self._children():
            if training.interrupt is None:
                training.interrupt = signal_name
            training.wake.set()

    def _command(self, run_dir: Path, command: str) -> str | None:
        with self._lock:
            training = self._trainings.get(run_dir)
        if not isinstance(training, ChildTraining):
            return super()._command(run_dir, command)
        from runctl.engine.control import write_command

        try:
            write_command(run_dir, command)
        except OSError as err:
            self._notify_error(f"{run_dir}: cannot write control file ({err.strerror})")
            return None
        if command == "stop":
            return f"{run_dir.name}: stopping after a checkpoint"
        return f"{run_dir.name}: checkpoint requested"

    # ------------------------------------------------------------ internals
    def _children(self) -> list[ChildTraining]:
        with self._lock:
            return [t for t in self._trainings.values() if isinstance(t, ChildTraining)]

    def _write_or_interrupt(self, training: ChildTraining, command: str) -> None:
        """A command through the control folder; a folder that cannot be written gets the child a
        signal instead (a checkpoint and `interrupted` rather than `stopped`, but never a run left
        training)."""
        from runctl.engine.control import write_command

        try:
            write_command(training.run_dir, command)
        except OSError:
            training.interrupt = training.interrupt or "SIGTERM"
            training.wake.set()

    def _launch(self, run_dir: Path, resume_from: Path | str | None,
                prepare: Callable[[], None] | None = None) -> None:
        """Train run_dir in a child process; a thread of this host waits on it. `prepare` runs
        first on that thread (blocking file work: an extension of run.yaml)."""
        training = ChildTraining(Path(run_dir))
        with self._lock:
            self._trainings[training.run_dir] = training  # type: ignore[assignment]  # same queries, other record
        # A thread of its own, not a Textual thread worker: those share one small executor with the
        # UI's file readers, and this thread waits as long as the run trains. A daemon: should the
        # UI end without waiting for it, the child stops itself (engine.lifeline).
        threading.Thread(target=self._host, args=(training, resume_from, prepare), daemon=True,
                         name=f"runctl-engine-process:{training.run_dir.name}").start()

    def _host(self, training: ChildTraining, resume_from: Path | str | None,
              prepare: Callable[[], None] | None) -> None:
        run_dir = training.run_dir
        error: str | None = None
        try:
            if prepare is not None:
                prepare()
            error = self._train_in_child(training, resume_from)
        except RunctlError as err:  # bad input found before the child started (nothing changed)
            error = str(err)
        except BaseException as exc:  # a bug, or the child could not be started; keep the UI up
            error = f"{exc.__class__.__name__}: {exc}"
        finally:
            with self._lock:
                self._trainings.pop(run_dir, None)
            training.done.set()
            self.app.post_message(EngineFinished(run_dir, error))

    def _train_in_child(self, training: ChildTraining, resume_from: Path | str | None) -> str | None:
        """Start the child, relay its events and the signal asked for, wait for its end; the error
        line to show (None: it finished, stopped or was interrupted)."""
        run_dir = training.run_dir
        if training.interrupt is not None:
            return None  # asked to end before it started: nothing was trained, nothing is lost
        events = JsonlTail(run_dir / EVENTS_JSONL)
        events.poll(_ignore, _ignore)  # what the file holds already is earlier attempts' history: not parsed
        log_path = run_dir / CHILD_LOG
        log_start = _size(log_path)
        command = [sys.executable, "-m", "runctl", "resume", str(run_dir)]
        if resume_from is not None and resume_from != AUTO:
            command += ["--from", str(resume_from)]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, process_group=0,
                close_fds=True, env={**os.environ, UI_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"})
        training.process = process
        # Before the child has started a thread: the threads it starts (torch's, the checkpoint
        # writer) inherit the niceness of its main thread.
        lower_process_priority(process.pid, self.engine_niceness)
        skipped: list[str] = []
        seen: set[str] = set()
        relayed: int | None = None
        while True:
            code = process.poll()
            for event in _new_events(events):
                self._relay(run_dir, event, skipped, seen)
            if code is not None:
                break
            if training.interrupt is not None and relayed is None and self._may_signal(run_dir, seen):
                relayed = _signal_number(training.interrupt)
                try:
                    process.send_signal(relayed)
                except ProcessLookupError:
                    pass
            training.wake.wait(POLL_SECONDS)
            training.wake.clear()
        return self._error_line(run_dir, code, relayed, seen, log_path, log_start)

    @staticmethod
    def _may_signal(run_dir: Path, seen: set[str]) -> bool:
        """The child answers a signal with a checkpoint once it trains (its handlers are in place
        from its `started`/`resumed` event on); before it holds the run's lock it has written
        nothing, and ending it there loses nothing. In between (a moment) the signal waits."""
        return bool(seen & {"started", "resumed"}) or not is_locked(run_dir)

    def _relay(self, run_dir: Path, event: dict[str, Any], skipped: list[str], seen: set[str]) -> None:
        name = event.get("event")
        seen.add(str(name))
        if name == "skipped_checkpoint":
            skipped.append(f"{event.get('file')} ({event.get('reason')})")
        elif name in ("resumed", "started") and (event.get("from") or skipped):
            self.app.notify(resume_message(run_dir, event.get("from"), skipped), markup=False, timeout=8)
        self.app.post_message(EngineEvent(run_dir, event))

    @staticmethod
    def _error_line(run_dir: Path, code: int, relayed: int | None, seen: set[str], log_path: Path,
                    log_start: int) -> str | None:
        if code == 0 or "interrupted" in seen or relayed is not None and code in (-relayed, 128 + relayed):
            return None
        if "crashed" in seen:
            status = read_status(run_dir)
            return f"crashed at step {status.get('step')}: {status.get('error')}"
        last = _last_runctl_line(log_path, log_start)
        if last:
            return last
        if code < 0:
            return f"engine process ended by {signal.Signals(-code).name} (output in {log_path})"
        return f"engine process exited with code {code} (output in {log_path})"


def lower_process_priority(pid: int, increment: int) -> bool:
    """Add `increment` to the niceness of process `pid`'s main thread (Linux: the threads it
    starts afterwards inherit it); True if it changed. Elsewhere, or where refused, nothing changes."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + increment)
    except OSError:
        return False
    return True


def _ignore(*_: object) -> None:
    pass


def _new_events(tail: JsonlTail) -> list[dict[str, Any]]:
    """The events appended since the last poll (a damaged line is left out, as the run view does)."""
    lines: list[bytes] = []
    tail.poll(_ignore, lines.extend)
    events = []
    for line in lines:
        try:
            event = parse_json_line(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _signal_number(name: str) -> int:
    """The signal the UI got ("SIGHUP", "SIGTERM"); SIGTERM for another reason ("UI exit")."""
    try:
        return int(signal.Signals[name])
    except KeyError:
        return int(signal.SIGTERM)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_runctl_line(log_path: Path, start: int) -> str | None:
    """The last `runctl: ...` line the child wrote (its error, without the prefix)."""
    try:
        data = safe_files.read_tail(log_path, LOG_TAIL_BYTES)
        size = _size(log_path)
    except OSError:
        return None
    data = data[max(0, len(data) - (size - start)):] if size >= start else data
    for line in reversed(data.decode(errors="replace").splitlines()):
        if line.startswith("runctl: ") and line.strip() != "runctl:":
            return line.removeprefix("runctl: ").strip()
    return None
