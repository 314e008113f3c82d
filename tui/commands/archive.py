"""`runctl export RUN --out FILE.zip` and `runctl import FILE.zip`: move a run between machines.

Export packs what a run needs to be browsed and resumed elsewhere (run.yaml, status, logs,
checkpoints and their manifest) and leaves out what only means something on this host: the lock,
pending control commands and temp files of a write in progress. Every checkpoint is verified
(full: CRC + sha256) before it is packed, so a corrupt file never travels. The zip is written
atomically. Import unpacks into a temp folder beside the destination and renames it into place:
an existing run is never overwritten, and a broken or hostile archive (a path escaping the
folder, a symlink, no run.yaml) leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from runctl.runs.atomic import atomic_write
from runctl.runs.checkpoints import list_checkpoints
from runctl.runs.discovery import resolve_run
from runctl.runs.errors import RunctlError
from runctl.runs.layout import CONTROL_DIR, LOCK_FILE, RANKS_DIR, RUN_YAML, is_temp_name
from runctl.runs.lock import is_locked
from runctl.runs.store import RunStore

_SKIPPED_NAMES = {LOCK_FILE}


def export(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run, args.root)
    out = Path(args.out)
    if out.suffix != ".zip":
        raise RunctlError(f"{out}: --out must name a .zip file")
    if out.exists():
        raise RunctlError(f"{out}: exists; refusing to overwrite it")
    if not out.parent.is_dir():
        raise RunctlError(f"{out.parent}: no such folder for --out")
    if is_locked(run_dir):
        raise RunctlError(f"{run_dir}: an engine is training this run; stop it first (runctl stop)")
    bad = [info for info in list_checkpoints(run_dir, level="full") if info.status == "corrupt"]
    if bad:
        names = ", ".join(f"{info.name} ({info.reason})" for info in bad[:3])
        raise RunctlError(f"{run_dir}: corrupt checkpoint(s) {names}; delete them or verify the run first",
                          exit_code=1)
    files = sorted(_files_to_pack(run_dir))

    def write(fileobj) -> None:
        with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED) as zf:
            for path in files:
                zf.write(path, str(PurePosixPath(run_dir.name, *path.relative_to(run_dir).parts)))

    size = atomic_write(out, write)
    print(f"{out}: {len(files)} files, {size / 1e6:.1f} MB from {run_dir}")
    return 0


def import_(args: argparse.Namespace) -> int:
    archive = Path(args.file)
    root = Path(args.root)
    if not archive.is_file():
        raise RunctlError(f"{archive}: no such file")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise RunctlError(f"{archive}: not a zip file ({err})") from None
    with zf:
        run_name = _check_members(archive, zf)
        destination = root / run_name
        if destination.exists():
            raise RunctlError(f"{destination}: a run of that name exists; refusing to overwrite it")
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_name}.import-", dir=root))
        try:
            zf.extractall(staging)
            bad = zf.testzip()
            if bad is not None:
                raise RunctlError(f"{archive}: {bad}: CRC mismatch in the archive", exit_code=1)
            RunStore.adopt(staging / run_name, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    corrupt = [info for info in list_checkpoints(destination, level="full") if info.status == "corrupt"]
    note = f"; {len(corrupt)} corrupt checkpoint(s), see runctl verify" if corrupt else ""
    print(f"{destination}: imported from {archive}{note}")
    return 1 if corrupt else 0


def _files_to_pack(run_dir: Path):
    for dirpath, dirnames, filenames in os.walk(run_dir):
        here = Path(dirpath)
        # Temp step folders are a sharded save in progress (or a killed one); ranks/ heartbeats
        # describe processes on this cluster only.
        dirnames[:] = [d for d in dirnames if not (here == run_dir and d in (CONTROL_DIR, RANKS_DIR))
                       and not is_temp_name(d)]
        for name in filenames:
            path = here / name
            if (here == run_dir and name in _SKIPPED_NAMES) or is_temp_name(name) or path.is_symlink():
                continue
            yield path


def _check_members(archive: Path, zf: zipfile.ZipFile) -> str:
    """The run's folder name, after refusing anything that could land outside it."""
    tops = set()
    for info in zf.infolist():
        parts = PurePosixPath(info.filename).parts
        if not parts or info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
            raise RunctlError(f"{archive}: member {info.filename!r} would land outside the run folder")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise RunctlError(f"{archive}: member {info.filename!r} is a symlink")
        tops.add(parts[0])
    if len(tops) != 1:
        raise RunctlError(f"{archive}: expected one run folder, found {len(tops)}")
    run_name = tops.pop()
    if run_name.startswith(".") or f"{run_name}/{RUN_YAML}" not in zf.namelist():
        raise RunctlError(f"{archive}: not a runctl export (no {run_name}/{RUN_YAML})")
    return run_name
