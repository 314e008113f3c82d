"""One manager owns a run's checkpoints: save (async), load (verified), retention, manifest.

A checkpoint is written by a writer that knows its form: `TorchSaveWriter` (one `step_N.pt` file,
torch.save) or engine.sharded's `StepFolderWriter` (a `step_N/` folder every rank writes through
torch.distributed.checkpoint). The manager owns everything else, whichever the form: when a save
may start, the background thread, errors, events, retention and temp cleanup. Modelled on
torchtitan's components/checkpoint.py (one manager for plain and DCP saves; wait for the previous
async save before staging the next; retention off the training path, where a failed delete does
not stop anything; close() on the success and the error path alike).

Save: a writer's `begin` runs on the training thread. TorchSaveWriter snapshots the state to CPU
memory (engine.snapshot), except for the tensors the caller lets it defer (weights, optimizer
moments): the background thread copies those first ("staging"), while training runs the next
forward/backward, and the caller waits for that copy (wait_for_staging) before it changes them;
StepFolderWriter starts DCP's save, which has staged the state when it returns. The background
thread then runs the writer's `commit`, which writes through the run's store (runs.store.RunStore:
commit_checkpoint for a file, commit_step_folder for a folder), reports a `checkpoint` event and
applies retention (this module decides which checkpoints go; the store forgets and deletes them).
At most one write is in flight: a save waits for the previous one. A failed background write is
reported through on_event at once and raised by the next save() or wait().

Load: the file is verified (CRC of every zip record, sha256 against the manifest) before a single
byte is unpickled, and then only with torch.load(weights_only=True).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from runctl.engine.compat import strip_compile_prefix
from runctl.engine.snapshot import HostBuffers, PendingCopies, capture_rng, restore_rng, stage_to_cpu
from runctl.runs.disk_full import disk_full_message, is_disk_full
from runctl.runs.errors import RunctlError
from runctl.runs.integrity import CHECKPOINT_FORMAT, RESUME_KEYS, verify_file
from runctl.runs.layout import (
    CHECKPOINT_KINDS,
    checkpoint_dir,
    checkpoint_name,
    is_step_folder_name,
    step_from_name,
)
from runctl.runs.manifest import read_manifest
from runctl.runs.store import SLOW_WRITE_ENV, CommittedCheckpoint, RunStore

__all__ = ["CHECKPOINT_FORMAT", "RESUME_KEYS", "SLOW_WRITE_ENV", "CheckpointError", "CheckpointManager",
           "CheckpointWriter", "TorchSaveWriter", "capture_rng", "restore_rng"]

# RESUME_KEYS (from runs.integrity, shared with the deep verify): what load() requires by default;
# a weights-only branch passes require=("model",).

EventSink = Callable[[dict[str, Any]], None]


class CheckpointError(RunctlError):
    """A checkpoint could not be written: the work failed (exit 1), the message names the file."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


class CheckpointWriter(Protocol):
    """How one checkpoint reaches the run folder; CheckpointManager decides when and on which thread."""

    def name(self, step: int) -> str:
        """The checkpoint's name in checkpoints/ (a file or a step folder)."""

    def begin(self, store: RunStore, state: dict[str, Any], step: int, inline: bool,
              defer: Collection[int]) -> tuple[Any, PendingCopies | None]:
        """On the training thread: take what the write needs from `state` (a payload for commit)
        and the copies still to make before the caller may change deferred tensors."""

    def commit(self, store: RunStore, payload: Any, step: int, kind: str, best: dict[str, Any] | None,
               on_renamed: Callable[[], None]) -> CommittedCheckpoint | None:
        """On the writer thread: finish the write through `store`; None where this process only
        contributes its part (a rank other than 0 of a sharded save)."""


class TorchSaveWriter:
    """One `step_N.pt` file per checkpoint: a CPU snapshot of the state, torch.save'd by the store."""

    def __init__(self) -> None:
        self._host_buffers = HostBuffers(pin_memory=True)  # reused by every async snapshot

    def name(self, step: int) -> str:
        return checkpoint_name(step)

    def begin(self, store: RunStore, state: dict[str, Any], step: int, inline: bool,
              defer: Collection[int]) -> tuple[Any, PendingCopies | None]:
        snapshot, pending = stage_to_cpu(_with_clean_model_keys(state), self._host_buffers,
                                         clone_cpu=not inline, defer=() if inline else defer)
        return snapshot, (pending if pending else None)

    def commit(self, store: RunStore, payload: Any, step: int, kind: str, best: dict[str, Any] | None,
               on_renamed: Callable[[], None]) -> CommittedCheckpoint | None:
        return store.commit_checkpoint(step, kind, lambda file: torch.save(payload, file), best=best,
                                       on_renamed=on_renamed)


@dataclass
class _WriteJob:
    payload: Any
    step: int
    kind: str
    best: dict[str, Any] | None
    pending: PendingCopies | None = None  # the snapshot's copies still to make (staging)
    stage: str = "checkpoint not saved"  # what a failure means, for the error message


class CheckpointManager:
    """Saves, loads and prunes the checkpoints of one run (run_dir/checkpoints/).

    `settings` is cfg["checkpoint"]: every, keep_last, keep_best, async. `writer` gives the form of
    a checkpoint (default TorchSaveWriter; a sharded run passes engine.sharded.StepFolderWriter, and
    then every rank has a manager and calls save() at the same step). `on_event` receives dicts such
    as {"event": "checkpoint", "step", "file", "kind", "bytes"}; it may be called from the writer
    thread, so it must be thread-safe.
    """

    def __init__(self, run_dir: Path, run_id: str, settings: Mapping[str, Any],
                 on_event: EventSink | None = None, writer: CheckpointWriter | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.directory = checkpoint_dir(self.run_dir)
        self.store = RunStore(self.run_dir)
        self.writer: CheckpointWriter = writer if writer is not None else TorchSaveWriter()
        self.keep_last: int | None = settings.get("keep_last", 3)
        self.keep_best = bool(settings.get("keep_best", True))
        self.use_async = bool(settings.get("async", True))
        self._on_event = on_event
        self._protected: set[str] = set()
        self._jobs: queue.Queue[_WriteJob | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._staged = threading.Event()  # the in-flight snapshot no longer reads live tensors
        self._staged.set()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---------------------------------------------------------------- save

    def save(self, state: dict[str, Any], step: int, kind: str, best: dict[str, Any] | None = None,
             sync: bool = False, defer: Collection[int] = ()) -> None:
        """Checkpoint `state` as step `step`. `best` ({metric, value, step}) marks it as the new best.

        Returns once the state is snapshotted (async) or written (sync, or async disabled). Raises
        CheckpointError for this write (sync) or for a previous background write that failed.
        `defer`: storages (data_ptr) of CPU tensors the writer thread may copy after save() returns;
        the caller must call wait_for_staging() before it changes any of them.
        """
        if kind not in CHECKPOINT_KINDS:
            raise ValueError(f"checkpoint kind {kind!r} is not one of {', '.join(CHECKPOINT_KINDS)}")
        if self._closed:
            raise RuntimeError("CheckpointManager.save() after close()")
        self.wait()
        inline = sync or not self.use_async
        try:
            payload, pending = self.writer.begin(self.store, state, int(step), inline, defer)
        except Exception as exc:
            raise _as_checkpoint_error(exc, self.directory / self.writer.name(int(step)),
                                       "checkpoint not saved") from exc
        job = _WriteJob(payload=payload, step=int(step), kind=kind, best=dict(best) if best else None,
                        pending=pending)
        if inline:
            self._run_job(job)
            self.wait()
            return
        self._ensure_writer()
        self._idle.clear()
        if job.pending is not None:
            self._staged.clear()
        self._jobs.put(job)

    def wait_for_staging(self) -> None:
        """Block until the in-flight snapshot has copied the tensors save() was told to defer."""
        self._staged.wait()

    def wait(self) -> None:
        """Block until no write is in flight; raise the error of a failed one (once)."""
        self._idle.wait()
        with self._error_lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Wait for the last write and stop the writer thread. Idempotent; raises a pending error."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None

    def protect(self, path: Path | str) -> None:
        """Never delete this checkpoint (the one a resume started from)."""
        self._protected.add(Path(path).name)

    def _ensure_writer(self) -> None:
        if self._thread is None:
            # Daemon: a process that dies without close() must not hang on the writer; an
            # unfinished write leaves only a temp file or folder, never a torn checkpoint.
            self._thread = threading.Thread(target=self._writer_loop, name="runctl-checkpoint-writer",
                                            daemon=True)
            self._thread.start()

    def _writer_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run_job(job)

    def _run_job(self, job: _WriteJob) -> None:
        self._idle.clear()
        try:
            if job.pending is not None:
                try:
                    job.pending.run()
                finally:
                    self._staged.set()
            self._write(job)
        except BaseException as exc:  # noqa: BLE001 - reported to the training thread, not lost
            error = _as_checkpoint_error(exc, self.directory / self.writer.name(job.step), job.stage)
            with self._error_lock:
                self._error = error
            self._emit({"event": "checkpoint_failed", "step": job.step, "error": str(error)})
        finally:
            job.payload = None
            self._staged.set()
            self._idle.set()

    def _write(self, job: _WriteJob) -> None:
        def renamed() -> None:
            job.stage = "checkpoint saved, but manifest.json not updated"

        committed = self.writer.commit(self.store, job.payload, job.step, job.kind, job.best, renamed)
        if committed is None:
            return
        if committed.manifest_problem:
            self._emit({"event": "warning", "step": job.step,
                        "message": f"{committed.manifest_problem}; rewriting it with the checkpoints saved from now on"})
        self._emit({"event": "checkpoint", "step": job.step, "file": committed.name, "kind": job.kind,
                    "bytes": committed.bytes})

        # The checkpoint is safe now: cleaning up after it can only warn, never fail the save.
        try:
            self._apply_retention(just_written=committed.name)
            self.store.clean_temps(checkpoints_only=True)
            self.store.clean_temp_step_folders()
        except OSError as exc:
            self._emit({"event": "warning", "step": job.step,
                        "message": f"{self.directory}: old checkpoints not cleaned up ({exc.strerror or exc})"})

    # ---------------------------------------------------------------- retention

    def _apply_retention(self, just_written: str) -> None:
        manifest = read_manifest(self.directory)
        # Every checkpoint counts, whichever its form: a file, or a step folder of a sharded save.
        on_disk = {entry.name: step for entry in os.scandir(self.directory)
                   if (step := step_from_name(entry.name)) is not None
                   and (entry.is_file() or (is_step_folder_name(entry.name) and entry.is_dir()))}
        doomed = select_for_deletion(
            on_disk, kinds={name: e.kind for name, e in manifest.files.items()},
            keep_last=self.keep_last,
            best_file=(manifest.best or {}).get("file") if self.keep_best else None,
            protected=self._protected | {just_written},
        )
        for name, exc in self.store.forget_checkpoints(doomed):
            self._emit({"event": "warning",
                        "message": f"{self.directory / name}: could not delete old checkpoint ({exc.strerror or exc})"})

    # ---------------------------------------------------------------- load

    def load(self, path: Path | str, require: Iterable[str] = RESUME_KEYS) -> dict[str, Any]:
        """Verify, then torch.load(weights_only=True) onto the CPU; RunctlError names file and reason."""
        return load_checkpoint(path, require=require)

    def _emit(self, event: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - a broken listener must not fail a checkpoint
            pass


def select_for_deletion(on_disk: Mapping[str, int], kinds: Mapping[str, str], keep_last: int | None,
                        best_file: str | None, protected: Iterable[str]) -> list[str]:
    """Checkpoint names retention removes: all but the newest `keep_last` (None: keep all), the best,
    every final, the protected ones and the newest one (by step)."""
    if keep_last is None or not on_disk:
        return []
    newest_first = sorted(on_disk, key=lambda name: on_disk[name], reverse=True)
    keep = set(newest_first[: max(keep_last, 1)]) | set(protected)
    if best_file:
        keep.add(best_file)
    keep.update(name for name in on_disk if kinds.get(name) == "final")
    return sorted((name for name in on_disk if name not in keep), key=lambda name: on_disk[name])


# -------------------------------------------------------------------- writing


def _as_checkpoint_error(exc: BaseException, path: Path, stage: str) -> BaseException:
    if isinstance(exc, RunctlError) or not isinstance(exc, Exception):
        return exc  # KeyboardInterrupt, SystemExit: keep their meaning
    if is_disk_full(exc):
        return CheckpointError(f"{path}: {stage}: {disk_full_message(path.parent)}")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        where = f" writing {exc.filename}" if exc.filename and Path(exc.filename).name != path.name else ""
        return CheckpointError(f"{path}: {stage}: {reason}{where}")
    return CheckpointError(f"{path}: {stage}: {exc.__class__.__name__}: {exc}")


def _with_clean_model_keys(state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints never carry torch.compile's `_orig_mod.` prefix (model and EMA weights)."""
    cleaned = dict(state)
    for key in ("model", "ema"):
        if isinstance(cleaned.get(key), Mapping):
            cleaned[key] = strip_compile_prefix(cleaned[key])
    return cleaned


# -------------------------------------------------------------------- loading


def load_checkpoint(path: Path | str, require: Iterable[str] = RESUME_KEYS) -> dict[str, Any]:
    """Verify `path` at the full level, then load it with weights_only=True onto the CPU.

    Refuses (RunctlError, exit 2) a file that fails verification, that a weights_only load rejects,
    that is not a runctl/1 checkpoint, or that lacks a key in `require`.
    """
    path = Path(path)
    if path.is_dir():  # a step folder (parallel.strategy: fsdp), read through DCP
        from runctl.engine.sharded import load_step_folder

        return load_step_folder(path, require=tuple(require))
    reason = verification_failure(path)
    if reason is not None:
        raise RunctlError(f"{path}: refusing to load: {reason}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises several types; all mean "refuse"
        first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise RunctlError(f"{path}: refusing to load: not loadable with weights_only=True ({first_line})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise RunctlError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format: {found!r})")
    missing = [key for key in require if key not in state or (key == "optimizer" and not state[key])]
    if "optimizer" in missing:
        raise RunctlError(f"{path}: checkpoint has no optimizer state; start from its weights with "
                          f"`runctl branch RUN --from {path.name} --name NEW --weights-only`")
    if missing:
        raise RunctlError(f"{path}: checkpoint lacks {', '.join(missing)}")
    for key in ("model", "ema"):
        if isinstance(state.get(key), Mapping):
            state[key] = strip_compile_prefix(state[key])
    return state


def verification_failure(path: Path) -> str | None:
    """Why `path` must not be loaded (full level: every zip CRC, sha256 against the manifest), or None.

    A file with no manifest entry (written before the manifest update, or by another tool) is
    "unverified": its CRCs passed, so it may be loaded.
    """
    if not path.is_file():
        return "no such file"
    entry = read_manifest(path.parent).files.get(path.name)
    info = verify_file(path, level="full", manifest_entry=entry)
    if info.status in ("ok", "unverified"):
        return None
    return info.status + (f" ({info.reason})" if info.reason else "")
