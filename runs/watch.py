"""Watch a root of runs and report typed changes (run added, checkpoint added, metrics appended...).

watchdog tells us *that* something under a run directory moved; what changed is decided by
comparing a small stat snapshot of that run (its four files and its checkpoints folder) with the
previous one. So a burst of raw events (a checkpoint written in 1,000 chunks, `rm -rf` of a run)
becomes the few changes a UI cares about, and native and polling observers behave the same.

Raw events are collected for at most `debounce` seconds (less when the burst goes quiet), then
the callback gets one list of changes on the watcher's own thread, never the caller's.
The native observer (inotify) sees nothing that another host writes on NFS, SMB or SSHFS: pass
`poll=True` there. When the native observer cannot start (inotify limits raise ENOSPC/EMFILE),
polling is taken automatically and `fallback_reason` says why.

runctl's runs are looked for among the root's children as they appear. Runs deeper down and runs
other tools wrote (a Lightning version_N/, a Hugging Face output_dir ...) are found as
runs.discovery finds them for a listing, down to `depth`: all of them at start, then a new one
when a file that can make a run (a checkpoint, trainer_state.json, hparams.yaml ...) is written
where no known run is (the folders on its way from the root are read, as the walk would), and,
when polling, by a walk of the root now and then (a poll lists only the known runs' folders).
Another tool's run is watched through its layout's folders (runs.watch_foreign).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from runctl.runs.discovery import find_run_folders, run_on_path
from runctl.runs.errors import RunctlError
from runctl.runs.layout import (
    CHECKPOINT_DIR,
    DEFAULT_DEPTH,
    EVENTS_JSONL,
    MANIFEST_JSON,
    METRICS_JSONL,
    RUN_YAML,
    STATUS_JSON,
    TEMP_MARKER,
    is_temp_name,
)
from runctl.runs.watch_foreign import (
    ForeignSnapshot,
    Signature,
    diff_foreign,
    file_signature,
    may_mark_a_run,
    snapshot_foreign,
)
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

log = logging.getLogger(__name__)

# Where runs are looked for: the root itself or its direct children, not hidden ones, as
# runs.discovery.find_runs does, so the watcher never announces a run a listing would not show.
MAX_RUN_DEPTH = 1
# A burst that stays quiet this long is delivered before the debounce window ends. A poll
# queues all it found at once, so polling needs hardly any quiet time.
QUIET_SECONDS = 0.02
QUIET_SECONDS_POLLING = 0.005
# Poll period: a change is seen within about this plus the time of one tree snapshot, which
# keeps the worst case under the 250 ms the UI promises on small roots.
DEFAULT_POLL_INTERVAL = 0.2
# When polling, the root is walked for new runs below its children at most this often, and at
# most a 1/DISCOVERY_SHARE part of the time (a walk of a big root takes a while).
DISCOVERY_INTERVAL = 5.0
DISCOVERY_SHARE = 20

_RUN_FILES = (RUN_YAML, STATUS_JSON, METRICS_JSONL, EVENTS_JSONL)
# Opening and closing a file without writing (our own readers do it all the time) is no change.
_EVENT_TYPES = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


class ChangeKind(StrEnum):
    RUN_ADDED = "run_added"
    RUN_REMOVED = "run_removed"
    RUN_CHANGED = "run_changed"  # run.yaml rewritten (e.g. extended)
    CHECKPOINT_ADDED = "checkpoint_added"
    CHECKPOINT_REMOVED = "checkpoint_removed"
    # A checkpoint rewritten, a partial (temp) one appearing, growing or vanishing, or the
    # manifest updated (which turns "unverified" rows into verifiable ones).
    CHECKPOINT_CHANGED = "checkpoint_changed"
    METRICS_APPENDED = "metrics_appended"  # also when metrics.jsonl shrinks or is replaced
    EVENTS_APPENDED = "events_appended"
    STATUS_CHANGED = "status_changed"


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    run_dir: Path
    path: Path


# (inode, size, mtime_ns): enough to see a rewrite, an append or a replacement by rename.


@dataclass
class RunSnapshot:
    """What the watcher remembers of one run directory."""

    files: dict[str, Signature] = field(default_factory=dict)
    checkpoints: dict[str, Signature] = field(default_factory=dict)
    partials: dict[str, Signature] = field(default_factory=dict)
    manifest: Signature | None = None


def snapshot_run(run_dir: Path, checkpoints_from: RunSnapshot | None = None) -> RunSnapshot | None:
    """Stat the files of a run directory; None when `run_dir` is not (or no longer) a run.

    With `checkpoints_from`, its checkpoints/ part is reused instead of listing the folder
    again (nothing happened there), which keeps a run with many checkpoints cheap to rescan on
    every metrics append.
    """
    snapshot = RunSnapshot()
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return None
    for entry in entries:
        if entry.name in _RUN_FILES:
            signature = file_signature(entry)
            if signature is not None:
                snapshot.files[entry.name] = signature
    if RUN_YAML not in snapshot.files and STATUS_JSON not in snapshot.files:
        return None
    if checkpoints_from is not None:
        snapshot.checkpoints = checkpoints_from.checkpoints
        snapshot.partials = checkpoints_from.partials
        snapshot.manifest = checkpoints_from.manifest
        return snapshot
    try:
        checkpoint_entries = list(os.scandir(run_dir / CHECKPOINT_DIR))
    except OSError:
        checkpoint_entries = []
    for entry in checkpoint_entries:
        signature = file_signature(entry)
        if signature is None:
            continue
        if entry.name == MANIFEST_JSON:
            snapshot.manifest = signature
        elif is_temp_name(entry.name):
            if not entry.name.startswith(MANIFEST_JSON + TEMP_MARKER):
                snapshot.partials[entry.name] = signature
        else:
            snapshot.checkpoints[entry.name] = signature
    return snapshot


def diff_run(run_dir: Path, old: RunSnapshot | None, new: RunSnapshot | None) -> list[Change]:
    """The typed changes that take a run directory from snapshot `old` to `new`."""
    if old is None and new is None:
        return []
    if old is None:
        return [Change(ChangeKind.RUN_ADDED, run_dir, run_dir)]
    if new is None:
        return [Change(ChangeKind.RUN_REMOVED, run_dir, run_dir)]
    changes: list[Change] = []
    file_kinds = (
        (RUN_YAML, ChangeKind.RUN_CHANGED),
        (STATUS_JSON, ChangeKind.STATUS_CHANGED),
        (METRICS_JSONL, ChangeKind.METRICS_APPENDED),
        (EVENTS_JSONL, ChangeKind.EVENTS_APPENDED),
    )
    for name, kind in file_kinds:
        if old.files.get(name) != new.files.get(name):
            changes.append(Change(kind, run_dir, run_dir / name))
    ckpt_dir = run_dir / CHECKPOINT_DIR
    added = new.checkpoints.keys() - old.checkpoints.keys()
    for name in sorted(added):
        changes.append(Change(ChangeKind.CHECKPOINT_ADDED, run_dir, ckpt_dir / name))
    for name in sorted(old.checkpoints.keys() - new.checkpoints.keys()):
        changes.append(Change(ChangeKind.CHECKPOINT_REMOVED, run_dir, ckpt_dir / name))
    for name in sorted(old.checkpoints.keys() & new.checkpoints.keys()):
        if old.checkpoints[name] != new.checkpoints[name]:
            changes.append(Change(ChangeKind.CHECKPOINT_CHANGED, run_dir, ckpt_dir / name))
    for name, signature in sorted(new.partials.items()):
        if old.partials.get(name) != signature:
            changes.append(Change(ChangeKind.CHECKPOINT_CHANGED, run_dir, ckpt_dir / name))
    for name in sorted(old.partials.keys() - new.partials.keys()):
        # Renamed into place: checkpoint_added above already tells the story.
        if name.split(TEMP_MARKER, 1)[0] not in added:
            changes.append(Change(ChangeKind.CHECKPOINT_CHANGED, run_dir, ckpt_dir / name))
    if old.manifest != new.manifest:
        changes.append(Change(ChangeKind.CHECKPOINT_CHANGED, run_dir, ckpt_dir / MANIFEST_JSON))
    return changes


def scan_runs(top: Path, max_depth: int = MAX_RUN_DEPTH) -> dict[Path, RunSnapshot]:
    """Snapshots of the run directories at `top` or below (not inside runs, no symlinked folders)."""
    found: dict[Path, RunSnapshot] = {}
    stack = [(top, 0)]
    while stack:
        directory, depth = stack.pop()
        snapshot = snapshot_run(directory)
        if snapshot is not None:
            found[directory] = snapshot
            continue
        if depth >= max_depth:
            continue
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                stack.append((Path(entry.path), depth + 1))
    return found


class _Handler(FileSystemEventHandler):
    def __init__(self, note: Callable[[FileSystemEvent], None]) -> None:
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._note(event)


class RunWatcher:
    """Watch `root` recursively; call `callback(list[Change])` on the watcher's thread.

    `poll=True` polls every `poll_interval` seconds (network file systems). `start()` and
    `stop()` may be called more than once; `stop()` returns after the threads have ended.
    A callback that raises is logged and the watcher goes on.
    """

    def __init__(
        self,
        root: Path,
        callback: Callable[[list[Change]], None],
        poll: bool = False,
        debounce: float = 0.1,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        depth: int = DEFAULT_DEPTH,
        discovery_interval: float = DISCOVERY_INTERVAL,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.callback = callback
        self.poll = poll
        self.debounce = debounce
        self.poll_interval = poll_interval
        self.depth = depth
        self.discovery_interval = discovery_interval
        self.mode: str | None = None  # "native" or "polling" once started
        self.fallback_reason: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # Run directories to rescan; True when something happened in their checkpoints/.
        self._dirty: dict[Path, bool] = {}
        self._dirty_trees: set[Path] = set()
        self._first_event_at = 0.0
        self._last_event_at = 0.0
        self._snapshots: dict[Path, RunSnapshot] = {}
        # Runs other tools wrote, and the folders a poll lists for them and for runctl runs deeper
        # than the root's children (theirs and the ones on the way to them).
        self._foreign: dict[Path, ForeignSnapshot] = {}
        self._polled: frozenset[Path] = frozenset()
        # Files written where no known run is: their folders may have just become runs.
        self._loose: set[Path] = set()
        self._discovered_at = 0.0
        self._discovery_seconds = 0.0
        self._discovered_once = False
        self._observer: BaseObserver | None = None
        self._dispatcher: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._dispatcher is not None

    def start(self) -> None:
        if self._dispatcher is not None:
            return
        if not self.root.is_dir():
            raise RunctlError(f"{self.root}: not a directory (cannot watch it)")
        self._stopping.clear()
        self._observer = self._start_observer()
        # Baseline after the observer runs: a change made during the scan is then seen twice
        # (harmless: the snapshot diff is empty), never missed.
        self._snapshots = scan_runs(self.root)
        self._rediscover()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="runctl-watch", daemon=True)
        self._dispatcher.start()

    def stop(self) -> None:
        if self._dispatcher is None:
            return
        self._stopping.set()
        self._wake.set()
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
        self._dispatcher.join()
        self._dispatcher = None

    def __enter__(self) -> RunWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def covers(self, run_dir: Path) -> bool:
        """Whether changes to the files of the run in `run_dir` are reported (while running)."""
        depth = self._depth(Path(os.path.abspath(run_dir)))
        return self.running and depth is not None and depth <= self.depth

    def known_runs(self) -> list[Path]:
        """Run directories the watcher currently knows (from the dispatcher's last pass)."""
        return sorted(set(self._snapshots) | set(self._foreign))

    def _start_observer(self) -> BaseObserver:
        handler = _Handler(self._note)
        if not self.poll:
            observer: BaseObserver | None = None
            try:
                # The inotify instance is created in the constructor (EMFILE surfaces there),
                # the watches in start() (ENOSPC).
                observer = Observer()
                observer.schedule(handler, str(self.root), recursive=True, event_filter=_EVENT_TYPES)
                observer.start()
                self.mode = "native"
                return observer
            except OSError as err:
                # inotify limits (max_user_watches, max_user_instances) or no inotify at all:
                # polling still works, only slower.
                self.fallback_reason = (
                    f"native file watching failed ({err}); polling every {self.poll_interval}s"
                )
                log.warning("%s: %s", self.root, self.fallback_reason)
                if observer is not None:
                    _discard(observer)
        # PollingObserver stats with os.stat, which follows symlinks: a symlink loop under the
        # root would make every snapshot recurse until ELOOP. lstat does not follow them (nor
        # does inotify), so both modes see the same tree; the listing is pruned to the folders
        # where run files can be, which matters on a network file system.
        observer = PollingObserverVFS(os.lstat, self._relevant_entries, polling_interval=self.poll_interval)
        observer.schedule(handler, str(self.root), recursive=True, event_filter=_EVENT_TYPES)
        observer.start()
        self.mode = "polling"
        return observer

    def _relevant_entries(self, directory: str) -> Iterator[os.DirEntry]:
        """What a poll lists of `directory`: candidate runs, their files, their checkpoints/."""
        path = Path(os.fsdecode(directory))
        if path in self._polled:
            with os.scandir(directory) as entries:
                yield from (entry for entry in entries if not entry.name.startswith("."))
            return
        depth = self._depth(path)
        if depth is None or depth > MAX_RUN_DEPTH + 1:
            return
        if depth == MAX_RUN_DEPTH + 1 and path.name != CHECKPOINT_DIR:
            return  # a folder inside a run other than checkpoints/ (control/, someone's data)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if depth >= MAX_RUN_DEPTH and entry.name != CHECKPOINT_DIR and _is_dir(entry):
                    continue
                yield entry

    # -- observer thread ------------------------------------------------------------------------

    def _note(self, event: FileSystemEvent) -> None:
        paths = [event.src_path]
        if isinstance(event, FileMovedEvent | DirMovedEvent) and event.dest_path:
            paths.append(event.dest_path)
        runs: list[tuple[Path, bool]] = []
        trees: list[Path] = []
        loose: list[Path] = []
        for raw in paths:
            path = Path(os.fsdecode(raw))
            if event.is_directory:
                trees.append(path)
            else:
                run_dir = self._run_dir_of_file(path)
                if run_dir is not None and run_dir not in self._foreign:
                    runs.append((run_dir, path.parent.name == CHECKPOINT_DIR))
                elif self._may_matter(path):
                    loose.append(path)
        if not runs and not trees and not loose:
            return
        now = time.monotonic()
        with self._lock:
            if not self._dirty and not self._dirty_trees:
                self._first_event_at = now
            self._last_event_at = now
            for run_dir, in_checkpoints in runs:
                self._dirty[run_dir] = self._dirty.get(run_dir, False) or in_checkpoints
            self._dirty_trees.update(trees)
            self._loose.update(loose)
            self._wake.set()

    def _run_dir_of_file(self, path: Path) -> Path | None:
        name, parent = path.name, path.parent
        if parent.name == CHECKPOINT_DIR:
            run_dir = parent.parent
        elif name in _RUN_FILES:
            run_dir = parent
        else:
            # Temps of status.json / run.yaml, the lock, control files: the rename that
            # follows a temp, if any, is what counts.
            return None
        depth = self._depth(run_dir)
        return run_dir if depth is not None and depth <= MAX_RUN_DEPTH else None

    def _may_matter(self, path: Path) -> bool:
        """Whether a file that is no run file of a runctl run among the root's children is worth a
        look by the dispatcher: a file of a foreign run, a run file of a deeper runctl run, or a
        file whose name can make its folder a new run."""
        known = self._known_run_of(path)
        if known is not None:
            return known[1] is not None
        depth = self._depth(path.parent)
        return depth is not None and depth <= self.depth and may_mark_a_run(path.name)

    def _known_run_of(self, path: Path) -> tuple[Path, bool | None] | None:
        """(run, what) for a file inside a known run: what is None for a file no change is made
        of (a runctl run's lock, control/ ...), True for one in a runctl run's checkpoints/,
        False otherwise; None when the file is in no known run."""
        for parent in path.parents:
            if parent in self._foreign:
                return parent, False
            if parent in self._snapshots:
                if path.parent == parent and path.name in _RUN_FILES:
                    return parent, False
                if path.parent.name == CHECKPOINT_DIR and path.parent.parent == parent:
                    return parent, True
                return parent, None
            if parent == self.root:
                return None
        return None

    # -- dispatcher thread ----------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            woken = self._wake.wait(self._discovery_due_in())
            if self._stopping.is_set():
                return
            if woken:
                self._wait_for_burst_end()
            if self._stopping.is_set():
                return
            with self._lock:
                runs, trees, loose = self._dirty, self._dirty_trees, self._loose
                self._dirty, self._dirty_trees, self._loose = {}, set(), set()
                self._wake.clear()
            changes = self._rescan(runs, trees, loose)
            if self._discovery_due_in() == 0:
                changes += self._rediscover()
            if changes:
                try:
                    self.callback(changes)
                except Exception:
                    log.exception("runctl watcher callback failed on %d change(s)", len(changes))

    def _wait_for_burst_end(self) -> None:
        quiet = min(QUIET_SECONDS_POLLING if self.mode == "polling" else QUIET_SECONDS, self.debounce)
        while True:
            with self._lock:
                deadline = min(self._first_event_at + self.debounce, self._last_event_at + quiet)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.wait(remaining):
                return

    def _depth(self, path: Path) -> int | None:
        """How many levels below the root `path` is; None if outside it or hidden."""
        if path == self.root:
            return 0
        if self.root not in path.parents:
            return None
        parts = path.relative_to(self.root).parts
        return None if any(part.startswith(".") for part in parts) else len(parts)

    def _rescan(self, runs: dict[Path, bool], trees: Iterable[Path], loose: Iterable[Path] = ()) -> list[Change]:
        runs = dict(runs)
        foreign: set[Path] = set()
        deep: set[Path] = set()  # runctl runs below the root's children, found by discovery
        looked_at: dict[Path, Any] = {}  # folder -> run_on_path's answer (a burst writes many files there)
        for path in loose:
            known = self._known_run_of(path)
            if known is None:
                if path.parent not in looked_at:
                    looked_at[path.parent] = run_on_path(self.root, path.parent, self.depth)
                found = looked_at[path.parent]
                if found is None:
                    continue
                known = (found[0], False) if found[1].writable else None
                if known is None:
                    foreign.add(found[0])
                    continue
            run_dir, in_checkpoints = known
            if in_checkpoints is None:
                continue
            if run_dir in self._foreign:
                foreign.add(run_dir)
            else:
                runs[run_dir] = runs.get(run_dir, False) or in_checkpoints
                deep.add(run_dir)
        for tree in trees:
            if self._depth(tree) is None:
                continue
            inside = next((path for path in (tree, *tree.parents) if path in self._foreign), None)
            if inside is not None:  # a folder of another tool's run (HF's checkpoint-N/) or the run
                foreign.add(inside)
            elif not tree.is_dir():  # removed or moved away, with the runs in it
                foreign.update(run for run in self._foreign if tree in run.parents)
            elif not any(parent in self._snapshots for parent in tree.parents):
                for run_dir, detector in self._runs_at_or_below(tree):  # made or moved in
                    (deep if detector.writable else foreign).add(run_dir)
        changes = self._rescan_runctl(runs, trees, deep)
        for run_dir in sorted(foreign):
            changes.extend(self._rescan_foreign(run_dir))
        if foreign or deep:
            self._update_polled()
        return changes

    def _runs_at_or_below(self, tree: Path) -> list[tuple[Path, Any]]:
        """The runs a folder made or moved in is or holds, as a walk from the root finds them."""
        on_path = run_on_path(self.root, tree, self.depth)
        if on_path is not None:
            return [on_path]
        depth = self._depth(tree)
        if depth is None or depth >= self.depth:
            return []
        try:
            return [found for found in find_run_folders(tree, self.depth - depth) if found[0] != tree]
        except RunctlError:
            return []

    def _rescan_foreign(self, run_dir: Path, detector: Any = None) -> list[Change]:
        if any(parent in self._snapshots or parent in self._foreign for parent in run_dir.parents):
            return []  # inside a known run: not a run of its own to a listing
        old = self._foreign.get(run_dir)
        new = snapshot_foreign(run_dir, detector)
        if new is None:
            self._foreign.pop(run_dir, None)
        else:
            self._foreign[run_dir] = new
        return [Change(ChangeKind(kind), run_dir, path) for kind, path in diff_foreign(run_dir, old, new)]

    def _rescan_runctl(self, runs: dict[Path, bool], trees: Iterable[Path], deep: set[Path]) -> list[Change]:
        candidates = set(runs)
        files_only = {run_dir for run_dir, in_checkpoints in runs.items() if not in_checkpoints}
        for tree in trees:
            depth = self._depth(tree)
            if depth is None:
                continue
            candidates.add(tree)
            files_only.discard(tree)
            if tree.name == CHECKPOINT_DIR:
                candidates.add(tree.parent)
                files_only.discard(tree.parent)
            # A folder removed or moved away takes the runs inside it along.
            candidates.update(run for run in self._snapshots if tree in run.parents)
            # A folder moved in may hold runs deeper down.
            if depth < MAX_RUN_DEPTH and tree.is_dir():
                candidates.update(scan_runs(tree, MAX_RUN_DEPTH - depth))
        changes: list[Change] = []
        candidates |= deep
        for run_dir in sorted(candidates):
            depth = self._depth(run_dir)
            if depth is None or (depth > MAX_RUN_DEPTH and run_dir not in deep and run_dir not in self._snapshots):
                continue
            if any(parent in self._snapshots for parent in run_dir.parents):
                continue  # a folder inside a known run (checkpoints/, control/)
            old = self._snapshots.get(run_dir)
            new = snapshot_run(run_dir, old if run_dir in files_only else None)
            changes.extend(diff_run(run_dir, old, new))
            if new is None:
                self._snapshots.pop(run_dir, None)
            else:
                self._snapshots[run_dir] = new
        return changes

    # -- discovery -----------------------------------------------------------------------------

    def _discovery_due_in(self) -> float | None:
        """Seconds until the next walk of the root (polling only; None: no walk is due)."""
        if self.mode != "polling":
            return None
        interval = max(self.discovery_interval, self._discovery_seconds * DISCOVERY_SHARE)
        return max(0.0, self._discovered_at + interval - time.monotonic())

    def _rediscover(self) -> list[Change]:
        """Walk the root as a listing does: runs below the root's children and other tools' runs
        that appeared or went away since the last walk (the first one, at start, is the baseline)."""
        started = time.monotonic()
        try:
            found = find_run_folders(self.root, self.depth)
        except RunctlError:
            found = []
        self._discovered_at = time.monotonic()
        self._discovery_seconds = self._discovered_at - started
        baseline = not self._discovered_once
        self._discovered_once = True
        foreign = {run_dir: detector for run_dir, detector in found if not detector.writable}
        deep = {run_dir for run_dir, detector in found if detector.writable and run_dir not in self._snapshots}
        changes: list[Change] = []
        for run_dir in sorted(foreign.keys() ^ self._foreign.keys()):
            rescanned = self._rescan_foreign(run_dir, foreign.get(run_dir))
            if not baseline:
                changes += rescanned
        if deep:
            rescanned = self._rescan_runctl({}, (), deep)
            if not baseline:
                changes += rescanned
        self._update_polled()
        return changes

    def _update_polled(self) -> None:
        """The folders a poll lists beyond the root's children: those of other tools' runs and
        of deeper runctl runs, and the folders on the way to them."""
        if self.mode != "polling":
            return
        polled: set[Path] = set()
        for run_dir, snapshot in list(self._foreign.items()):
            polled.update(snapshot.folders)
            polled.update(self._ways_to(run_dir))
        for run_dir in list(self._snapshots):
            depth = self._depth(run_dir)
            if depth is not None and depth > MAX_RUN_DEPTH:
                polled.update((run_dir, run_dir / CHECKPOINT_DIR))
                polled.update(self._ways_to(run_dir))
        self._polled = frozenset(polled)

    def _ways_to(self, run_dir: Path) -> list[Path]:
        ways = []
        for parent in run_dir.parents:
            if parent == self.root:
                break
            ways.append(parent)
        return ways


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _discard(observer: BaseObserver) -> None:
    """Release what a native observer that failed to start holds (its inotify reader thread)."""
    try:
        # What the observer thread would run on its way out: unschedule, close inotify, join.
        observer.on_thread_stop()
    except Exception:  # a half-built observer may fail to clean up; polling replaces it anyway
        log.debug("cleaning up the failed native observer", exc_info=True)
