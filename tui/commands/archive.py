"""`runctl export RUN --out FILE.zip` and `runctl import FILE.zip`: move a run between machines.

Export packs what a run needs to be browsed and resumed elsewhere (run.yaml, status, logs,
checkpoints and their manifest) and leaves out what only means something on this host: the lock,
pending control commands and temp files of a write in progress. Every checkpoint is verified
(full: CRC + sha256) before it is packed, so a corrupt file never travels. The zip is written
atomically. Import unpacks into a temp folder beside the destination and renames it into place:
an existing run is never overwritten, and a broken or hostile archive (a path escaping the
folder, a symlink, no run.yaml) leaves nothing behind.

Import trusts nothing in the archive. Before a byte is written it checks, from the central
directory, the member count, each member's size, the total unpacked size against the free space
and the compression ratio (a zip bomb is refused, exit 2). zipfile never reads past a member's
declared size and checks each member's CRC, so the declared sizes bound the writes. The unpacked
checkpoints are verified (full) in the temp folder: a damaged bundle leaves no run behind (exit 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from runctl.runs.atomic import atomic_write
from runctl.runs.checkpoints import list_checkpoints
from runctl.runs.discovery import resolve_run
from runctl.runs.disk_full import free_bytes
from runctl.runs.errors import RunctlError
from runctl.runs.humanize import human_bytes
from runctl.runs.layout import CONTROL_DIR, LOCK_FILE, RANKS_DIR, RUN_YAML, is_temp_name
from runctl.runs.lock import is_locked
from runctl.runs.store import RunStore

_SKIPPED_NAMES = {LOCK_FILE}

# Import limits. A run is run.yaml, status, two logs, a manifest and its checkpoints: thousands of
# members would be a very long run; an export stores checkpoints uncompressed (ratio ~1), and
# re-zipped logs compress ~10x, so a ratio of 100 over more than 16 MiB is a bomb.
MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 256 * 2**30
MAX_RATIO = 100
RATIO_FREE_BYTES = 16 * 2**20
# Room left on the file system after the import, for the run to go on writing.
FREE_MARGIN_BYTES = 64 * 2**20


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
        _check_sizes(archive, zf, root)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run_name}.import-", dir=root))
        try:
            _unpack(archive, zf, staging)
            corrupt = [info for info in list_checkpoints(staging / run_name, level="full")
                       if info.status == "corrupt"]
            if corrupt:
                names = ", ".join(f"{info.name} ({info.reason})" for info in corrupt[:3])
                more = f" and {len(corrupt) - 3} more" if len(corrupt) > 3 else ""
                raise RunctlError(f"{archive}: damaged bundle, nothing imported: corrupt checkpoint(s) "
                                  f"{names}{more}", exit_code=1)
            RunStore.adopt(staging / run_name, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"{destination}: imported from {archive}")
    return 0


def _check_sizes(archive: Path, zf: zipfile.ZipFile, root: Path) -> None:
    """Refuse, before writing, a bundle too large for the disk or compressed like a bomb."""
    members = [info for info in zf.infolist() if not info.is_dir()]
    for info in members:
        if info.file_size > MAX_MEMBER_BYTES:
            raise RunctlError(f"{archive}: member {info.filename!r} unpacks to {human_bytes(info.file_size)}; "
                              f"refusing members over {human_bytes(MAX_MEMBER_BYTES)}")
    unpacked = sum(info.file_size for info in members)
    packed = sum(info.compress_size for info in members)
    if unpacked > RATIO_FREE_BYTES and unpacked > MAX_RATIO * max(packed, 1):
        raise RunctlError(f"{archive}: {human_bytes(packed)} that unpack to {human_bytes(unpacked)} "
                          f"(ratio {unpacked / max(packed, 1):,.0f}); refusing a ratio over {MAX_RATIO} (a zip bomb?)")
    free = free_bytes(_existing_ancestor(root))
    if free is not None and unpacked + FREE_MARGIN_BYTES > free:
        raise RunctlError(f"{archive}: unpacks to {human_bytes(unpacked)}, but {root} has {human_bytes(free)} free "
                          f"(and {human_bytes(FREE_MARGIN_BYTES)} must stay free)")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unpack(archive: Path, zf: zipfile.ZipFile, staging: Path) -> None:
    """Every member into `staging`, as plain files and folders; a CRC mismatch is a damaged bundle."""
    for info in zf.infolist():
        target = staging.joinpath(*PurePosixPath(info.filename).parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as source, open(target, "xb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        except (zipfile.BadZipFile, EOFError, NotImplementedError) as err:
            raise RunctlError(f"{archive}: {info.filename}: damaged in the archive ({err}); nothing imported",
                              exit_code=1) from None


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
    """The run's folder name, after refusing anything that could land outside it or is not a
    plain file or folder."""
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise RunctlError(f"{archive}: {len(members):,} members; a run bundle has at most {MAX_MEMBERS:,}")
    tops = set()
    seen: set[str] = set()
    for info in members:
        parts = PurePosixPath(info.filename).parts
        if not parts or info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
            raise RunctlError(f"{archive}: member {info.filename!r} would land outside the run folder")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise RunctlError(f"{archive}: member {info.filename!r} is a symlink")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: a zip made without Unix modes
            raise RunctlError(f"{archive}: member {info.filename!r} is not a plain file (mode {mode:o})")
        key = info.filename.rstrip("/")
        if key in seen:
            raise RunctlError(f"{archive}: member {info.filename!r} appears twice")
        seen.add(key)
        tops.add(parts[0])
    if len(tops) != 1:
        raise RunctlError(f"{archive}: expected one run folder, found {len(tops)}")
    run_name = tops.pop()
    if run_name.startswith(".") or f"{run_name}/{RUN_YAML}" not in zf.namelist():
        raise RunctlError(f"{archive}: not a runctl export (no {run_name}/{RUN_YAML})")
    return run_name
