"""RunStore: the one owner of every change to a run folder.

Creating a run, rewriting run.yaml and status.json, committing a checkpoint with its manifest
entry, forgetting (retention), deleting and setting checkpoints aside all happen here, so the
order of writes below is written, and tested, once. Nothing else in runctl renames, replaces or
removes a file in a run folder or writes a manifest. Not here: the append-only logs
(events.jsonl, metrics.jsonl: engine.runlog, one whole line per append, no ordering between
files) and the control folder (engine.control: one atomic file per command, deleted by the
engine that obeyed it). Every rank of a distributed run writes its own `ranks/<rank>.json` here.

Locking: every checkpoint change needs the run's lock (runs.lock) so that only one process
rewrites the manifest. The engine holds the lock for its whole attempt, so the methods it calls
(commit_checkpoint, forget_checkpoints, set_aside, clean_temps, write_status, write_config) take
no lock of their own; delete_checkpoint, called by the UI, takes it itself and refuses a busy run.

Rules: every single file is written to `<name>.tmp.<pid>`, fsynced, renamed over its name and
the folder fsynced (runs.atomic), so a reader sees the old or the new file, never half of one.
Where a change spans two writes, the order is chosen so a kill between them loses nothing:

create (a new run)
    1. mkdir RUN (refuses an existing one)  2. run.yaml  3. the first event (a branch's).
    Killed after 1: an empty folder, which is no run (no run.yaml): listings skip it and the same
    --name is refused until it is removed. Killed after 2: a run that was never started.
commit_checkpoint
    1. checkpoints/step_N.pt.tmp.<pid> written and fsynced  2. renamed to step_N.pt  3. manifest
    rewritten with its entry (size, sha256, kind, best).
    Killed in 1: a temp file, shown as `partial` and removed by the next start or save of any
    process whose pid it does not carry. Killed after 2: a complete file with no entry, shown
    `unverified`; a resume loads it only after a deep look finds it is this run's.
commit_step_folder (a sharded checkpoint, `step_N/`)
    1. checkpoints/step_N.tmp.<pid>/ created and runctl.pt written in it (begin_step_folder, rank 0's
    pid: every rank writes there)  2. each rank's shard and DCP's `.metadata` (DCP)  3. every file
    fsynced and hashed, manifest rewritten with the entry  4. the folder renamed to step_N.
    Killed before 3: a temp folder, removed by the next start or save once its pid is gone.
    Killed after 3: an entry whose folder is `missing` (a resume skips it), never a folder whose
    `.metadata` pickle nothing vouches for.
forget_checkpoints (retention) and delete_checkpoint
    1. manifest rewritten without the entries (best's file cleared)  2. the files unlinked; a
    step folder is renamed to `step_N.tmp.<pid>/` first, then removed.
    Killed after 1: old files with no entry (`unverified`); the next retention pass removes them.
    Killed while a step folder is removed: a temp folder, cleaned up like a dead writer's.
    Never the other way round: an entry whose file is gone would read as a lost checkpoint.
set_aside (`superseded/`: resume --from an older checkpoint; `quarantine/`: files a resume skipped)
    1. mkdir RUN/<kind>/<time>-from-<step>/ (a quarantine's reasons.json in it)  2. each file
    renamed into it, both folders fsynced  3. the aside folder's manifest, with the moved files'
    entries  4. the run's manifest rewritten without them.
    A set-aside folder's manifest never lists a file the folder does not hold, and no file is
    ever without the entry it had: until 4, the run's manifest keeps it.
    Killed after 1: an empty folder (or one holding only reasons.json). Killed during or after 2,
    or after 3: the moved files' entries are still in the run's manifest (and, after 3, in the
    aside manifest too). Readers: an entry whose file is gone from checkpoints/ but lies, of the
    listed size, in a set-aside folder is no missing checkpoint (runs.checkpoints.moved_aside);
    a moved file the aside manifest does not list yet verifies there as `unverified`.
    The next start (`recover`, run by the engine under the lock before anything else) moves those
    entries to the aside folder's manifest, drops them from the run's and removes empty folders.
    Files not yet moved stay in checkpoints/, listed: a repeated resume --from moves them then.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runctl.runs import safe_files
from runctl.runs.atomic import (
    _pid_alive,
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    remove_stale_temps,
    temp_path,
)
from runctl.runs.disk_full import disk_full_message, free_bytes, is_disk_full
from runctl.runs.errors import RunctlError
from runctl.runs.layout import (
    CONTROL_DIR,
    EVENTS_JSONL,
    QUARANTINE_DIR,
    RANKS_DIR,
    REASONS_JSON,
    RUN_YAML,
    STATUS_JSON,
    STEP_STATE,
    SUPERSEDED_DIR,
    TEMP_MARKER,
    checkpoint_dir,
    checkpoint_name,
    is_step_folder_name,
    step_folder_name,
    step_from_name,
)
from runctl.runs.lock import RunLock
from runctl.runs.manifest import Manifest, ManifestEntry, read_manifest, write_manifest
from runctl.runs.ranks import rank_file
from runctl.runs.run_yaml import read_run_yaml

__all__ = ["PAUSE_ENV", "QUARANTINE_DIR", "SLOW_WRITE_ENV", "SUPERSEDED_DIR", "CommittedCheckpoint", "RunStore"]

# Test-only: seconds to sleep inside a checkpoint's temp write and between its rename and the
# manifest update, so fault tests can kill the process inside those windows.
SLOW_WRITE_ENV = "RUNCTL_TEST_SLOW_WRITE"
# Test-only: the name of a point between two writes (see `_pause_at`); the process announces it
# on stderr and waits there to be killed.
PAUSE_ENV = "RUNCTL_TEST_PAUSE_AT"


@dataclass
class CommittedCheckpoint:
    name: str
    step: int
    bytes: int
    sha256: str
    # Set when the old manifest was unreadable and is rewritten from this checkpoint on.
    manifest_problem: str | None = None


class RunStore:
    """Every change to the run folder `run_dir` (see the module docstring for the rules)."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = checkpoint_dir(self.run_dir)

    # ------------------------------------------------------------------ creating a run

    @classmethod
    def create(cls, run_dir: Path, config: Mapping[str, Any],
               first_event: Mapping[str, Any] | None = None) -> RunStore:
        """mkdir `run_dir` (RunctlError if it exists), write run.yaml and `first_event`; a failure
        removes the half-made folder again."""
        run_dir = Path(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(run_dir)
        except FileExistsError:
            raise RunctlError(f"{run_dir}: a run named {run_dir.name!r} already exists; "
                              "choose another --name") from None
        store = cls(run_dir)
        try:
            _pause_at("create:folder-made")
            store.write_config(config)
            if first_event is not None:
                append_jsonl(run_dir / EVENTS_JSONL, dict(first_event))
        except BaseException:
            for leftover in run_dir.iterdir():
                leftover.unlink()
            run_dir.rmdir()
            raise
        return store

    @classmethod
    def adopt(cls, built: Path, run_dir: Path) -> RunStore:
        """Rename a complete run folder built elsewhere on the same file system (an import's
        staging folder) to `run_dir`; RunctlError if `run_dir` exists (never replaced)."""
        run_dir = Path(run_dir)
        if run_dir.exists():
            raise RunctlError(f"{run_dir}: a run of that name exists; refusing to overwrite it")
        try:
            # Between the check and the rename only an empty folder could appear, which rename()
            # replaces: nothing is lost. A folder with files in it makes rename() fail.
            os.rename(built, run_dir)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise RunctlError(f"{run_dir}: a run of that name exists; refusing to overwrite it") from None
            raise
        fsync_dir(run_dir.parent)
        return cls(run_dir)

    # ------------------------------------------------------------------ run.yaml

    @property
    def config_path(self) -> Path:
        return self.run_dir / RUN_YAML

    def read_config(self) -> tuple[dict[str, Any], str | None]:
        """run.yaml as a dict and a problem line (missing: ({}, None)); never raises."""
        return read_run_yaml(self.run_dir)

    def load_config(self) -> dict[str, Any]:
        """run.yaml as a dict, or RunctlError naming the file (missing, unreadable, not YAML)."""
        path = self.config_path
        if not path.exists():
            raise RunctlError(f"{path}: missing; is {self.run_dir} a runctl run?")
        cfg, problem = self.read_config()
        if problem is not None:
            raise RunctlError(problem)
        return cfg

    def config_text(self) -> str:
        """run.yaml's text as it is on disk ("" when it cannot be read), for display."""
        try:
            return safe_files.read_text(self.config_path)
        except (OSError, UnicodeDecodeError):
            return ""

    def write_config(self, cfg: Mapping[str, Any]) -> None:
        import yaml  # only when run.yaml is written: keeps `import runs` light

        atomic_write_text(self.config_path, yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None))

    # ------------------------------------------------------------------ status.json

    def write_status(self, status: Mapping[str, Any]) -> None:
        atomic_write_json(self.run_dir / STATUS_JSON, dict(status))

    # ------------------------------------------------------------------ ranks/<rank>.json

    def write_rank_beat(self, rank: int, beat: Mapping[str, Any]) -> None:
        """One rank's heartbeat (a distributed run: each rank writes its own file only)."""
        path = rank_file(self.run_dir, rank)
        path.parent.mkdir(exist_ok=True)
        atomic_write_json(path, dict(beat))

    def forget_rank_beats(self, beyond: int) -> None:
        """Remove the beat files of ranks >= `beyond` (an earlier attempt ran with more ranks)."""
        folder = self.run_dir / RANKS_DIR
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.suffix == ".json" and path.stem.isdigit() and int(path.stem) >= beyond:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ checkpoints

    def lock(self) -> RunLock:
        return RunLock(self.run_dir)

    def clean_temps(self, checkpoints_only: bool = False) -> None:
        """Remove temp files of writers that died (any pid but a live one's) from checkpoints/ and,
        unless `checkpoints_only`, from the run folder and control/."""
        folders = [self.checkpoints] if checkpoints_only else [self.run_dir, self.checkpoints,
                                                                 self.run_dir / CONTROL_DIR]
        for folder in folders:
            remove_stale_temps(folder)

    def commit_checkpoint(self, step: int, kind: str, write: Callable[[IO[bytes]], None],
                          best: Mapping[str, Any] | None = None,
                          on_renamed: Callable[[], None] | None = None) -> CommittedCheckpoint:
        """Write checkpoint `step` through `write(fileobj)` (hashed on the way), rename it into
        place, then record it in the manifest; `best` ({metric, value, step}) makes it the best.
        `on_renamed` is called once the file is in place, before the manifest update.
        Caller holds the run lock."""
        slow = _seconds_from_env(SLOW_WRITE_ENV)
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = checkpoint_name(step)
        final = self.checkpoints / name
        size, sha256 = _write_hashed(final, write, slow)
        if on_renamed is not None:
            on_renamed()
        _pause_at("commit:renamed")
        if slow:
            time.sleep(slow)

        problem = self._record(name, ManifestEntry(step=step, bytes=size, sha256=sha256, saved_at=time.time(),
                                                   kind=kind), best)
        return CommittedCheckpoint(name=name, step=step, bytes=size, sha256=sha256, manifest_problem=problem)

    def _record(self, name: str, entry: ManifestEntry, best: Mapping[str, Any] | None) -> str | None:
        """Add checkpoint `name`'s entry to the manifest (and make it the best); returns what was
        wrong with the old manifest, which is rewritten from here on."""
        manifest = read_manifest(self.checkpoints)
        problem = manifest.error
        manifest.files[name] = entry
        if best is not None:
            manifest.best = {"file": name, "metric": best.get("metric"),
                             "value": best.get("value"), "step": best.get("step", entry.step)}
        write_manifest(self.checkpoints, manifest)
        return problem

    def begin_step_folder(self, step: int, tag: int,
                          write_state: Callable[[IO[bytes]], None] | None = None) -> Path:
        """Create the temp folder `step_N.tmp.<tag>/` a sharded save writes into (every rank of one
        save passes rank 0's pid as `tag`) and, on the rank that passes `write_state`, write
        runctl.pt in it. DCP then writes each rank's shard and `.metadata` into the folder, and
        commit_step_folder puts it in place. Caller is a rank of the engine that holds the lock."""
        temp = self.checkpoints / f"{step_folder_name(step)}{TEMP_MARKER}{tag}"
        temp.mkdir(parents=True, exist_ok=True)
        if write_state is not None:
            with open(temp / STEP_STATE, "wb") as file:
                write_state(file)
        return temp

    def commit_step_folder(self, temp: Path, name: str, step: int, kind: str,
                           best: Mapping[str, Any] | None = None) -> CommittedCheckpoint:
        """Commit a sharded checkpoint that every rank has finished writing into `temp`
        (`step_N.tmp.<pid>/`, DCP's `.metadata` included): fsync and hash each file, record the
        entry (bytes and sha256 of every file; `sha256` = the .metadata's), then rename the folder
        to `name`. The entry comes first: a kill in between leaves an entry whose folder is
        `missing` (a resume skips it), never a folder whose `.metadata` pickle nothing vouches for.
        Caller holds the run lock."""
        files = {}
        for path in sorted(temp.iterdir()):
            with open(path, "rb") as file:
                os.fsync(file.fileno())
            files[path.name] = {"bytes": path.stat().st_size, "sha256": safe_files.sha256_of(path)}
        fsync_dir(temp)
        total = sum(f["bytes"] for f in files.values())
        metadata_sha = files.get(".metadata", {}).get("sha256", "")
        problem = self._record(name, ManifestEntry(step=step, bytes=total, sha256=metadata_sha, saved_at=time.time(),
                                                   kind=kind, files=files), best)
        _pause_at("commit_folder:manifest-written")
        final = self.checkpoints / name
        if final.is_dir():  # the same step saved again (a resume --from an older step)
            shutil.rmtree(final)
        os.rename(temp, final)
        fsync_dir(self.checkpoints)
        return CommittedCheckpoint(name=name, step=step, bytes=total, sha256=metadata_sha, manifest_problem=problem)

    def clean_temp_step_folders(self, keep: str | None = None) -> None:
        """Remove temp step folders (`step_N.tmp.<pid>/`) of writers that died; `keep` stays."""
        try:
            entries = list(os.scandir(self.checkpoints))
        except FileNotFoundError:
            return
        for entry in entries:
            if TEMP_MARKER not in entry.name or not is_step_folder_name(entry.name) or entry.name == keep \
                    or not entry.is_dir(follow_symlinks=False):
                continue
            pid = entry.name.rsplit(TEMP_MARKER, 1)[1]
            if pid.isdigit() and (int(pid) == os.getpid() or _pid_alive(int(pid))):
                continue  # its writer may still be at work
            shutil.rmtree(entry.path, ignore_errors=True)

    def forget_checkpoints(self, names: Iterable[str]) -> list[tuple[str, OSError]]:
        """Retention: drop the entries of `names` (best keeps its metric, loses its file), then
        delete the files. Returns the files that could not be deleted. Caller holds the run lock."""
        names = list(names)
        if not names:
            return []
        manifest = read_manifest(self.checkpoints)
        _forget_entries(manifest, names, keep_best_record=True)
        write_manifest(self.checkpoints, manifest)
        _pause_at("forget:manifest-written")
        failed = []
        for name in names:
            path = self.checkpoints / name
            try:
                _remove_checkpoint(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append((name, exc))
        return failed

    def delete_checkpoint(self, name: str) -> None:
        """Remove checkpoint `name` and its manifest entry under the run's lock (RunctlError if
        an engine holds it, or if `name` is no checkpoint file of this run)."""
        path = self.checkpoints / name
        step_folder = is_step_folder_name(name) and path.is_dir() and not path.is_symlink()
        if Path(name).name != name or not (step_folder or path.is_file()):
            raise RunctlError(f"{path}: no such checkpoint file")
        lock = self.lock()
        lock.acquire(wait=0.5)
        try:
            manifest = read_manifest(self.checkpoints)
            if manifest.error is None and name in manifest.files:
                _forget_entries(manifest, [name])
                write_manifest(self.checkpoints, manifest)
            _pause_at("delete:manifest-written")
            _remove_checkpoint(path)
            fsync_dir(self.checkpoints)
        finally:
            lock.release()

    def set_aside(self, names: Iterable[str], kind: str, step: int,
                  reasons: Mapping[str, str] | None = None) -> Path | None:
        """Move checkpoints `names`, with their manifest entries, to RUN/<kind>/<time>-from-<step>/
        (kind: "superseded" or "quarantine"; `reasons` per file are kept in its reasons.json);
        returns that folder (None: nothing to move). Caller holds the run lock."""
        names = sorted(names)
        if not names:
            return None
        aside = self._new_aside_folder(kind, step)
        if reasons:
            atomic_write_json(aside / REASONS_JSON, {"resumed_from": step,
                                                     "files": {name: reasons.get(name) for name in names}})
        _pause_at("set_aside:folder-made")
        for index, name in enumerate(names):
            os.rename(self.checkpoints / name, aside / name)
            if index == 0 and len(names) > 1:
                _pause_at("set_aside:moved-one")
        fsync_dir(self.checkpoints)
        fsync_dir(aside)
        _pause_at("set_aside:moved")
        manifest = read_manifest(self.checkpoints)
        write_manifest(aside, Manifest(files={n: manifest.files[n] for n in names if n in manifest.files}))
        _pause_at("set_aside:aside-manifest-written")
        _forget_entries(manifest, names)
        write_manifest(self.checkpoints, manifest)
        return aside

    def recover(self) -> list[str]:
        """Finish the bookkeeping of a set_aside that was killed after moving files: their entries
        move from the run's manifest to the aside folder's; a set-aside folder left empty goes.
        Returns the names whose entries moved. Caller holds the run lock (the engine, at start)."""
        manifest = read_manifest(self.checkpoints)
        if manifest.error is not None:
            return []  # never rewrite a manifest that cannot be read: its entries would be lost
        recovered: list[str] = []
        # Newest first within a kind: of a name moved twice, the entry belongs to the newest move.
        for folder in reversed(self.aside_folders()):
            held = [name for name in _checkpoint_names(folder) if name not in recovered]
            if not held:
                _remove_if_empty(folder)
                continue
            stale = [name for name in held if name in manifest.files
                     and not os.path.lexists(self.checkpoints / name)
                     and _size(folder / name) == manifest.files[name].bytes]
            if not stale:
                continue
            aside_manifest = read_manifest(folder)
            if aside_manifest.error is not None:
                continue
            unlisted = [name for name in stale if name not in aside_manifest.files]
            if unlisted:
                aside_manifest.files.update({name: manifest.files[name] for name in unlisted})
                write_manifest(folder, aside_manifest)
            _forget_entries(manifest, stale)
            recovered += stale
        if recovered:
            write_manifest(self.checkpoints, manifest)
        return recovered

    def aside_folders(self) -> list[Path]:
        """The set-aside folders: superseded/* then quarantine/*, each oldest first (by name: its time)."""
        from runctl.runs.checkpoints import set_aside_folders  # a reader's module: not at import time

        return set_aside_folders(self.run_dir)

    def _new_aside_folder(self, kind: str, step: int) -> Path:
        parent = self.run_dir / kind
        parent.mkdir(exist_ok=True)
        base = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-from-{step}"
        for suffix in range(1, 1000):
            folder = parent / (base if suffix == 1 else f"{base}-{suffix}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            fsync_dir(parent)
            return folder
        raise RunctlError(f"{parent}: too many folders named {base}")


def _forget_entries(manifest: Manifest, names: Iterable[str], keep_best_record: bool = False) -> None:
    """Drop the entries of `names`; if the best is among them, retention keeps its metric record
    (file None: the value stays the run's best), a delete or a move drops the record."""
    names = set(names)
    for name in names:
        manifest.files.pop(name, None)
    if manifest.best and manifest.best.get("file") in names:
        manifest.best = {**manifest.best, "file": None} if keep_best_record else None


def _remove_checkpoint(path: Path) -> None:
    """Unlink a checkpoint file; a step folder (sharded checkpoint) is first renamed to a temp
    folder of this pid, then removed, so a kill midway leaves a temp folder the next start cleans
    up (clean_temp_step_folders), never a step folder with some shards gone."""
    if is_step_folder_name(path.name) and path.is_dir() and not path.is_symlink():
        doomed = path.with_name(f"{path.name}{TEMP_MARKER}{os.getpid()}")
        os.rename(path, doomed)
        _pause_at("delete:folder-renamed")
        shutil.rmtree(doomed)
    else:
        path.unlink()


def _checkpoint_names(folder: Path) -> list[str]:
    try:
        return sorted(name for name in os.listdir(folder) if step_from_name(name) is not None)
    except OSError:
        return []


def _remove_if_empty(folder: Path) -> None:
    """A set-aside folder whose move was killed before the first file moved: empty, or holding
    only its reasons.json."""
    try:
        leftovers = os.listdir(folder)
        if leftovers not in ([], [REASONS_JSON]):
            return
        if leftovers:
            os.unlink(folder / REASONS_JSON)
        os.rmdir(folder)
    except OSError:
        return


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


# -------------------------------------------------------------------- writing a checkpoint


class _HashingWriter:
    """A write-only file object that hashes every byte on its way to the file (no re-read)."""

    def __init__(self, file: IO[bytes], pause_after_first_write: float = 0.0) -> None:
        self._file = file
        self._pause = pause_after_first_write
        self.sha256 = hashlib.sha256()
        self.bytes_written = 0
        self.attempted = 0  # size of the write in progress (what a full disk refused)

    def write(self, data: bytes | memoryview) -> int:
        self.sha256.update(data)
        self.attempted = len(data)
        written = self._file.write(data)
        self.bytes_written += len(data)
        if self._pause:
            # Make the partial temp file visible on disk, then hold the window open once.
            self._file.flush()
            time.sleep(self._pause)
            self._pause = 0.0
        return written

    def flush(self) -> None:
        self._file.flush()


def _write_hashed(final: Path, write: Callable[[IO[bytes]], None], slow: float) -> tuple[int, str]:
    """`write` to a temp name beside `final`, hashing as it goes; fsync, rename, fsync the folder."""
    tmp = temp_path(final)
    writer: _HashingWriter | None = None
    try:
        with open(tmp, "wb") as file:
            writer = _HashingWriter(file, pause_after_first_write=slow)
            write(writer)  # type: ignore[arg-type]  # a file object for torch.save's purposes
            file.flush()
            os.fsync(file.fileno())
        _pause_at("commit:temp-written")
        os.replace(tmp, final)
    except BaseException as exc:
        # Measured before the temp file goes: its blocks are what the disk had left to give.
        free = free_bytes(final.parent)
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        # torch's zip writer reports a short write as RuntimeError("unexpected pos ..."): name it.
        if isinstance(exc, Exception) and is_disk_full(exc, needed=writer.attempted if writer else None, free=free):
            raise OSError(errno.ENOSPC, disk_full_message(final.parent), str(tmp)) from exc
        raise
    fsync_dir(final.parent)
    return writer.bytes_written, writer.sha256.hexdigest()


# -------------------------------------------------------------------- test hooks


def _seconds_from_env(name: str) -> float:
    try:
        return max(0.0, float(os.environ.get(name, "0")))
    except ValueError:
        return 0.0


def _pause_at(point: str) -> None:
    """Test-only: when RUNCTL_TEST_PAUSE_AT names `point`, say so on stderr and wait to be killed,
    so a test can SIGKILL the process exactly between two writes."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    os.write(2, f"runctl-test: paused at {point}\n".encode())
    while True:
        time.sleep(3600)
