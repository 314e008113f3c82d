"""Commands to a running engine: stop, checkpoint now, extend.

Two ways in, one object: the in-process UI (and the signal handlers) call `Control` from any
thread; a run started elsewhere is commanded through its control folder, `control/*.json`, which
rank 0 polls (`ControlFolder.poll`) and turns into the same `Control` calls. The training loop
takes the pending commands once per step boundary (`Control.take`), so a command never lands in
the middle of an optimizer step.

A command file is `control/<time_ns>-<uuid>.json` = {"command": "stop" | "checkpoint" | "extend",
"max_steps": N?}, written atomically; the engine deletes each after acting on it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from runctl.runs import safe_files
from runctl.runs.atomic import atomic_write_json
from runctl.runs.errors import RunctlError
from runctl.runs.layout import CONTROL_DIR, is_temp_name

COMMANDS = ("stop", "checkpoint", "extend")

# Why the loop stopped early: the state the run ends in.
STOP_BY_USER = "stopped"
STOP_BY_SIGNAL = "interrupted"


@dataclass(frozen=True)
class Commands:
    """What was asked since the last step boundary. `stop` is sticky: once asked, it stays asked."""

    stop: str | None = None          # None | "stopped" | "interrupted"
    signal: str | None = None        # the signal's name when stop == "interrupted"
    checkpoint: bool = False
    extend_to: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.stop or self.checkpoint or self.extend_to)


NO_COMMANDS = Commands()


class Control:
    """Thread-safe commands for one training run; the loop reads them with `take()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: str | None = None
        self._signal: str | None = None
        self._checkpoint = False
        self._extend_to: int | None = None
        # Set under the lock by every request, read without it by take(): the loop asks every
        # step and almost never finds anything, so that answer costs no lock. A request that
        # lands just after the read is taken at the next step boundary, as if it came then.
        self._pending = False

    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint, end in state `stopped`."""
        with self._lock:
            if self._stop is None:
                self._stop = STOP_BY_USER
            self._pending = True

    def request_interrupt(self, signal_name: str) -> None:
        """Like request_stop, but the run ends `interrupted` (a signal, an SSH drop)."""
        with self._lock:
            if self._stop is None or self._stop == STOP_BY_USER:
                self._stop = STOP_BY_SIGNAL
                self._signal = signal_name
            self._pending = True

    def request_checkpoint(self) -> None:
        """Write a checkpoint at the next step boundary and keep training."""
        with self._lock:
            self._checkpoint = True
            self._pending = True

    def request_extend(self, max_steps: int) -> None:
        """Raise max_steps to `max_steps` at the next step boundary (the schedule decays to it)."""
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise RunctlError(f"extend: max_steps must be a positive integer, got {max_steps!r}")
        with self._lock:
            self._extend_to = max(max_steps, self._extend_to or 0)
            self._pending = True

    @property
    def stop_requested(self) -> bool:
        with self._lock:
            return self._stop is not None

    def take(self) -> Commands:
        """The pending commands; clears the one-shot ones (checkpoint, extend), keeps stop.
        NO_COMMANDS when nothing was asked."""
        if not self._pending:
            return NO_COMMANDS
        with self._lock:
            commands = Commands(self._stop, self._signal, self._checkpoint, self._extend_to)
            self._checkpoint = False
            self._extend_to = None
            self._pending = self._stop is not None  # stop is sticky
        return commands


# ---------------------------------------------------------------- the control folder


def write_command(run_dir: Path, command: str, max_steps: int | None = None) -> Path:
    """Leave a command for the engine that trains `run_dir` (used by `runctl stop` and the UI)."""
    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}")
    if command == "extend" and (max_steps is None or max_steps < 1):
        raise ValueError("an extend command needs max_steps >= 1")
    folder = Path(run_dir) / CONTROL_DIR
    folder.mkdir(exist_ok=True)
    payload: dict[str, object] = {"command": command}
    if max_steps is not None:
        payload["max_steps"] = int(max_steps)
    path = folder / f"{time.time_ns()}-{uuid.uuid4().hex}.json"
    atomic_write_json(path, payload)
    return path


class ControlFolder:
    """Polls run_dir/control/ and forwards each command to a Control; rank 0 only.

    `ignore_before` (unix seconds): command files written before it were meant for an earlier
    attempt of the run (say a `stop` that raced the engine's exit) and are discarded, not obeyed.
    """

    def __init__(self, run_dir: Path, control: Control, interval: float = 0.5,
                 ignore_before: float | None = None) -> None:
        self.folder = Path(run_dir) / CONTROL_DIR
        self.control = control
        self.interval = interval
        self.ignore_before = ignore_before
        self._next_poll = 0.0

    def poll(self, force: bool = False) -> list[str]:
        """Apply new command files (at most every `interval` s); returns warnings for bad files."""
        now = time.monotonic()
        if not force and now < self._next_poll:
            return []
        self._next_poll = now + self.interval
        try:
            names = sorted(name for name in os.listdir(self.folder)
                           if name.endswith(".json") and not is_temp_name(name))
        except FileNotFoundError:
            return []
        warnings = []
        for name in names:
            path = self.folder / name
            problem = self._apply(path)
            if problem:
                warnings.append(problem)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return warnings

    def _apply(self, path: Path) -> str | None:
        written_at = _time_from_name(path.name)
        try:
            payload = safe_files.read_json(path, limit=64 * 1024)
        except (OSError, ValueError) as exc:
            return f"{path}: ignored an unreadable control file ({exc.__class__.__name__})"
        command = payload.get("command") if isinstance(payload, dict) else None
        if command not in COMMANDS:
            return f"{path}: ignored control file: command must be one of {', '.join(COMMANDS)}, got {command!r}"
        if self.ignore_before is not None and written_at is not None and written_at < self.ignore_before:
            return f"{path}: ignored a '{command}' command written before this attempt started"
        if command == "stop":
            self.control.request_stop()
        elif command == "checkpoint":
            self.control.request_checkpoint()
        else:
            max_steps = payload.get("max_steps")
            if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
                return f"{path}: ignored extend command: max_steps must be a positive integer, got {max_steps!r}"
            self.control.request_extend(max_steps)
        return None


def _time_from_name(name: str) -> float | None:
    head = name.split("-", 1)[0]
    return int(head) / 1e9 if head.isdigit() else None
