"""The in-process engines: one thread per training run (a Textual thread worker waits on it), one Control per run.

The engine never touches widgets: its on_event callback posts EngineEvent messages (the runs list
reloads the run's row), and the end of a worker posts EngineFinished. What a run view shows comes
from the run's files, which the file watcher sees this engine write like any other. A run trained by ANOTHER process (its lock is held, not by us)
is commanded through its control folder instead (engine.control.write_command).

Errors the user can fix (runs.errors.RunctlError) become one-line error notifications; the
methods then return None. `start_new` and `branch` can raise instead (`raise_errors=True`) so a
dialog can show the line next to the field that caused it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runctl.runs.errors import RunctlError
from runctl.runs.layout import LIVE_STATES
from runctl.runs.lock import is_locked
from runctl.tui.gc_policy import freeze_engine_imports
from runctl.tui.messages import EngineEvent, EngineFinished

if TYPE_CHECKING:
    from runctl.engine.control import Control
    from textual.app import App

T = TypeVar("T")

# engine.api.train: resume from the newest valid checkpoint (or the branch point).
AUTO = "auto"
# The niceness an in-process engine's thread adds to its own (Linux; the threads it starts, torch's
# intra-op workers and the checkpoint writer, inherit it). The UI thread wakes for a key and needs a
# core at once; at equal priority the engine and its torch threads, busy on every core, make it wait
# its turn (bench/bench_ui.py: key -> screen p95 several times the idle figure). With Linux's
# autogroup scheduling the niceness only ranks threads of this terminal session against each other.
ENGINE_NICENESS = 10


@dataclass
class Training:
    """One in-process engine: its run, its control object, and a flag set when its thread ends."""

    run_dir: Path
    control: Control
    done: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.monotonic)


class EngineHost:
    def __init__(self, app: App, root: Path) -> None:
        self.app = app
        self.root = root
        self._trainings: dict[Path, Training] = {}
        self._lock = threading.Lock()
        self.engine_niceness = ENGINE_NICENESS

    # ------------------------------------------------------------ queries
    def is_training(self, run_dir: Path) -> bool:
        """True while THIS process trains run_dir."""
        with self._lock:
            return Path(run_dir) in self._trainings

    def shown_state(self, run_dir: Path, state: str | None) -> str:
        """The state a run shows: "running" while THIS process trains it, whatever its files say
        (they lag behind the engine's start and end), else the state its files give."""
        state = state or "unknown"
        if self.is_training(run_dir) and state not in LIVE_STATES:
            return "running"
        return state

    def training_runs(self) -> list[Path]:
        with self._lock:
            return list(self._trainings)

    def is_training_elsewhere(self, run_dir: Path) -> bool:
        """Another process (CLI, torchrun, another UI) holds the run's lock."""
        return not self.is_training(run_dir) and is_locked(Path(run_dir))

    # ------------------------------------------------------------ commands
    def start_new(
        self, config_source: str, name: str | None, overrides: list[str], *, raise_errors: bool = False
    ) -> Path | None:
        """Create a run from a built-in config name or YAML path and train it here."""
        def create() -> Path:
            from runctl.engine import api

            return Path(api.new_run(config_source, root=self.root, name=name or None, overrides=list(overrides)))

        run_dir = self._call(create, raise_errors=raise_errors)
        if run_dir is not None:
            self._launch(run_dir, resume_from=None)
        return run_dir

    def start(self, run_dir: Path) -> str | None:
        """Train a run that was created but never trained (a branch made with --no-start)."""
        return self.resume(run_dir)

    def resume(self, run_dir: Path, from_ckpt: Path | None = None) -> str | None:
        """Continue from the newest valid checkpoint (or from_ckpt), in a worker.

        Finding the checkpoint verifies files (seconds for big ones), so it happens on the worker
        thread; "resuming from step_X.pt; skipped step_Y.pt (crc mismatch)" arrives as a
        notification once the engine has chosen. Returns the immediate acknowledgement.
        """
        run_dir = Path(run_dir)
        if not self._check_free(run_dir):
            return None
        self._launch(run_dir, resume_from=from_ckpt if from_ckpt is not None else AUTO)
        return f"{run_dir.name}: resuming" + (f" from {Path(from_ckpt).name}" if from_ckpt else "") + "…"

    def extend(self, run_dir: Path, max_steps: int) -> str | None:
        """Raise max_steps: a training run (here or elsewhere) takes it at its next step; a stopped
        one is extended (run.yaml: the LR schedule decays to the new end) and resumed here.

        Extending a stopped run first finds the step resume will start from, which verifies
        checkpoints (seconds for big ones), so that part runs on the engine's worker thread.
        """
        from runctl.engine import api

        run_dir = Path(run_dir)
        if self.is_training(run_dir) or is_locked(run_dir):
            result = self._call(lambda: api.extend_run(run_dir, to=int(max_steps)), raise_errors=False)
            if result is None:
                return None
            return f"{run_dir.name}: extending {result.from_max} -> {result.to_max} steps while it trains"

        def prepare() -> None:
            result = api.extend_run(run_dir, to=int(max_steps))
            self.app.notify(f"{run_dir.name}: extended {result.from_max} -> {result.to_max} steps, resuming",
                            markup=False)

        self._launch(run_dir, resume_from=AUTO, prepare=prepare)
        return f"{run_dir.name}: extending to {max_steps} steps…"

    def branch(
        self,
        run_dir: Path,
        ckpt: Path,
        name: str,
        overrides: list[str] | None = None,
        config_yaml: str | None = None,
        weights_only: bool = False,
        *,
        start: bool = True,
        raise_errors: bool = False,
    ) -> Path | None:
        """A new run from `ckpt` of `run_dir` with changed settings; trained here unless start=False."""
        def create() -> Path:
            from runctl.engine import api

            settings = list(overrides or [])
            if config_yaml is not None:
                settings = overrides_from_yaml(config_yaml, api.read_run_config(Path(run_dir))) + settings
            result = api.branch_run(Path(run_dir), Path(ckpt), name, overrides=settings,
                                    weights_only=weights_only, root=self.root)
            if result.changes:
                self.app.notify(f"{name}: " + "; ".join(result.changes), severity="warning", markup=False)
            return Path(result.run_dir)

        new_dir = self._call(create, raise_errors=raise_errors)
        if new_dir is not None and start:
            self._launch(new_dir, resume_from=AUTO)
        return new_dir

    def branch_foreign(self, ckpt: Path, name: str, config_yaml: str, overrides: list[str] | None = None,
                       weights_only: bool = False, *, raise_errors: bool = False) -> Path | None:
        """A new run under the root from another tool's checkpoint (file or checkpoint-N folder) with
        the config the user wrote; not trained here (the caller starts it). Notes go to a toast."""
        def create() -> Path:
            import yaml
            from runctl.engine import api
            from runctl.runs.safe_yaml import load_yaml

            try:
                config = load_yaml(config_yaml)
            except yaml.YAMLError as err:
                raise RunctlError(f"branch config: not valid YAML ({err.__class__.__name__})") from None
            if not isinstance(config, dict):
                raise RunctlError("branch config: expected a mapping of config keys")
            result = api.branch_foreign(Path(ckpt), config, name, list(overrides or []),
                                        weights_only=weights_only, root=self.root)
            if result.note:
                self.app.notify(f"{name}: {result.note}", severity="warning", markup=False)
            return Path(result.run_dir)

        return self._call(create, raise_errors=raise_errors)

    def stop(self, run_dir: Path) -> str | None:
        """Graceful stop: the engine finishes its step, writes a checkpoint, ends `stopped`."""
        return self._command(Path(run_dir), "stop")

    def checkpoint_now(self, run_dir: Path) -> str | None:
        return self._command(Path(run_dir), "checkpoint")

    # ------------------------------------------------------------ whole-process lifecycle
    def interrupt_all(self, signal_name: str) -> None:
        """Ask every in-process engine to checkpoint and end `interrupted` (SIGHUP, SIGTERM)."""
        with self._lock:
            trainings = list(self._trainings.values())
        for training in trainings:
            training.control.request_interrupt(signal_name)

    def stop_all(self) -> None:
        with self._lock:
            trainings = list(self._trainings.values())
        for training in trainings:
            training.control.request_stop()

    def wait_all(self, timeout: float) -> bool:
        """Block until every in-process engine's thread ended; False if some still run at timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            trainings = list(self._trainings.values())
        for training in trainings:
            if not training.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def detach_all(self, timeout: float = 120.0) -> list[Path]:
        """Hand every in-process run to a headless `runctl resume` process (blocking: use a worker).

        A thread cannot leave its process, so each engine stops with a checkpoint and a new
        session-leader process resumes it from that checkpoint (exact resume: nothing is lost).
        The new process is in its own session, so the terminal's SIGHUP never reaches it.
        """
        runs = self.training_runs()
        self.stop_all()
        self.wait_all(timeout)
        for run_dir in runs:
            spawn_headless_resume(run_dir)
        return runs

    # ------------------------------------------------------------ internals
    def _check_free(self, run_dir: Path) -> bool:
        if self.is_training(run_dir):
            self._notify_error(f"{run_dir}: already training in this window")
            return False
        if is_locked(run_dir):
            self._notify_error(f"{run_dir}: run is being trained by another process; stop it first")
            return False
        return True

    def _command(self, run_dir: Path, command: str) -> str | None:
        with self._lock:
            training = self._trainings.get(run_dir)
        if training is not None:
            if command == "stop":
                training.control.request_stop()
                return f"{run_dir.name}: stopping after a checkpoint"
            training.control.request_checkpoint()
            return f"{run_dir.name}: checkpoint requested"
        if not is_locked(run_dir):
            self._notify_error(f"{run_dir}: not training (nothing to {command})")
            return None
        from runctl.engine.control import write_command

        try:
            write_command(run_dir, command)
        except OSError as err:
            self._notify_error(f"{run_dir}: cannot write control file ({err.strerror})")
            return None
        return f"{run_dir.name}: asked its engine to {command}"

    def _call(self, fn: Callable[[], T], *, raise_errors: bool) -> T | None:
        try:
            return fn()
        except RunctlError as err:
            if raise_errors:
                raise
            self._notify_error(str(err))
            return None

    def _notify_error(self, message: str) -> None:
        self.app.notify(message, severity="error", markup=False, timeout=8)

    def _launch(self, run_dir: Path, resume_from: Path | str | None,
                prepare: Callable[[], None] | None = None) -> None:
        """Train run_dir on a worker thread; `prepare` runs first on that thread (blocking file work)."""
        from runctl.engine.control import Control

        training = Training(Path(run_dir), Control())
        with self._lock:
            self._trainings[training.run_dir] = training
        self.app.run_worker(
            lambda: self._train_on_own_thread(training, resume_from, prepare),
            name=f"engine:{training.run_dir.name}",
            group="engine",
            thread=True,
            exit_on_error=False,
        )

    def _train_on_own_thread(self, training: Training, resume_from: Path | str | None,
                             prepare: Callable[[], None] | None) -> None:
        """The Textual worker waits on a thread of the engine's own: a thread's niceness cannot be
        lowered back, and the worker's thread is the executor's, pooled for later workers."""
        thread = threading.Thread(target=self._train, args=(training, resume_from, prepare),
                                  name=f"runctl-engine:{training.run_dir.name}")
        thread.start()
        thread.join()

    def _train(self, training: Training, resume_from: Path | str | None,
               prepare: Callable[[], None] | None = None) -> None:
        """The engine's thread: the whole training loop. Posts messages only, never touches widgets."""
        lower_thread_priority(self.engine_niceness)
        run_dir = training.run_dir
        app = self.app
        skipped: list[str] = []

        def on_event(event: dict[str, Any]) -> None:
            name = event.get("event")
            if name == "skipped_checkpoint":
                skipped.append(f"{event.get('file')} ({event.get('reason')})")
            if name in ("resumed", "started"):
                freeze_engine_imports()
                if event.get("from") or skipped:
                    app.notify(resume_message(run_dir, event.get("from"), skipped), markup=False, timeout=8)
            app.post_message(EngineEvent(run_dir, event))

        error: str | None = None
        try:
            from runctl.engine import api

            if prepare is not None:
                prepare()
            result = api.train(run_dir, training.control, resume_from=resume_from,
                               on_event=on_event)
            if result.state == "crashed":
                error = f"crashed at step {result.step}: {result.error}"
        except RunctlError as err:  # bad input found before training began (nothing changed)
            error = str(err)
        except BaseException as exc:  # a bug outside the loop; keep the UI up and say so
            error = f"{exc.__class__.__name__}: {exc}"
        finally:
            with self._lock:
                self._trainings.pop(run_dir, None)
            training.done.set()
            app.post_message(EngineFinished(run_dir, error))


def lower_thread_priority(increment: int) -> bool:
    """Add `increment` to the calling thread's niceness (Linux: per thread); True if it changed.

    Threads started by this one afterwards inherit the new value. Elsewhere, or where the system
    refuses, nothing changes: the engine trains at the process's priority."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        thread_id = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread_id, os.getpriority(os.PRIO_PROCESS, thread_id) + increment)
    except (OSError, AttributeError):
        return False
    return True


def resume_message(run_dir: Path, origin: str | None, skipped: list[str]) -> str:
    """"run: resuming from step_X.pt; skipped step_Y.pt (crc mismatch)"."""
    text = f"{run_dir.name}: resuming from {origin}" if origin else f"{run_dir.name}: starting from step 0"
    if skipped:
        text += "; skipped " + ", ".join(skipped)
    return text


def overrides_from_yaml(config_yaml: str, parent_cfg: dict[str, Any]) -> list[str]:
    """A config edited as YAML -> the `--set key=value` overrides that turn parent_cfg into it.

    Values are written as JSON, which YAML reads back as the same value. Run metadata (run_id,
    parent, extensions ...) is the engine's to set and is ignored. RunctlError for unusable YAML.
    """
    import json

    import yaml
    from runctl.engine.config import RUN_META_KEYS
    from runctl.runs.safe_yaml import load_yaml

    try:
        edited = load_yaml(config_yaml)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RunctlError(f"branch config:{where} invalid YAML") from None
    if not isinstance(edited, dict):
        raise RunctlError("branch config: must be a YAML mapping (the run's config)")
    overrides: list[str] = []

    def walk(new: dict[str, Any], old: dict[str, Any], prefix: str) -> None:
        for key, value in new.items():
            if not prefix and key in RUN_META_KEYS:
                continue
            dotted = f"{prefix}{key}"
            before = old.get(key) if isinstance(old, dict) else None
            if isinstance(value, dict) and isinstance(before, dict):
                walk(value, before, dotted + ".")
            elif value != before:
                overrides.append(f"{dotted}={json.dumps(value)}")

    walk(edited, parent_cfg, "")
    return overrides


def spawn_headless_resume(run_dir: Path) -> subprocess.Popen[bytes]:
    """`runctl resume RUN` in its own session, output to a log file in the temp folder."""
    log_path = Path(tempfile.gettempdir()) / f"runctl-detached-{run_dir.name}.log"
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "runctl", "resume", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
