"""Checkpoint integrity at three levels, without trusting a byte of the file.

quick: the zip's central directory is readable, it holds a data.pkl whose globals a weights-only
       load allows, and the size matches the manifest.
full:  ONE sequential read of the file computes the sha256 of all bytes and the CRC32 of every
       zip record (walking the local headers ourselves as the bytes stream past), then compares
       the sha256 with the manifest.
deep:  after full passes, `torch.load(weights_only=True, mmap=True)` (torch imported here, lazily)
       and the keys a resume needs.

Nothing is ever unpickled before the static pickle scan (runs.pickle_scan) has passed, and then
only by torch's weights-only unpickler. Results are cached per process, keyed by
(path, size, mtime_ns, inode): a re-list costs a stat.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, BinaryIO

from runs.layout import is_temp_name, step_from_name
from runs.manifest import ManifestEntry
from runs.model import CheckpointInfo
from runs.pickle_scan import unsafe_globals

LEVELS = ("quick", "full", "deep")
CHECKPOINT_FORMAT = "runctl/1"
# What a resume reads from a checkpoint (DESIGN.md "Checkpoint").
RESUME_KEYS = ("format", "step", "model", "optimizer", "rng", "data")

# Reasons a file is corrupt; `CheckpointInfo.reason` starts with one of them, then ": detail".
TRUNCATED = "truncated"
CRC_MISMATCH = "crc mismatch"
SHA256_MISMATCH = "sha256 mismatch"
SIZE_MISMATCH = "size mismatch"
NOT_A_CHECKPOINT = "not a checkpoint"
UNSAFE_PICKLE = "unsafe pickle"
EMPTY = "empty"
# Not a verdict on the file: it could not be read (permissions, I/O error); status stays unchecked.
UNREADABLE = "unreadable"

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_EOCD_SIGNATURE = b"PK\x05\x06"
_CHUNK = 256 << 10  # small enough that sha256 and CRC32 read it from CPU cache
# Below this size the sha256 runs inline; above, on a helper thread overlapping the CRC work.
_THREADED_HASH_MIN_BYTES = 16 << 20
_MAX_PICKLE_BYTES = 512 << 20


@dataclass(frozen=True)
class CheckpointIdentity:
    """What ties a checkpoint to a run, read by a deep verify: the run_id it was saved with and its
    model's {key: shape}. None in a field means unknown (and is not compared)."""

    run_id: str | None
    model_shapes: dict[str, tuple[int, ...]] | None


@dataclass(frozen=True)
class _Facts:
    """What reading a file established, independent of any manifest (so it can be cached)."""

    level: str
    problem: str | None = None        # a corrupt reason, or None
    sha256: str | None = None         # full and deep
    incompatible: str | None = None   # deep: loads, but a resume cannot use it
    identity: CheckpointIdentity | None = None  # deep


_CacheKey = tuple[str, int, int, int]
_cache: dict[_CacheKey, dict[str, _Facts]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def verify_file(path: Path, level: str = "quick", manifest_entry: ManifestEntry | None = None,
                *, reference: CheckpointIdentity | None = None) -> CheckpointInfo:
    """Verify one checkpoint file at `level`; never raises for anything wrong with the file.

    `reference` (deep only): the identity of the run's trusted checkpoints; a file saved by another
    run or holding another model is `incompatible`.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown integrity level {level!r}; expected one of {LEVELS}")
    path = Path(path)
    info = CheckpointInfo(path=path, name=path.name,
                          step=manifest_entry.step if manifest_entry else step_from_name(path.name),
                          kind=manifest_entry.kind if manifest_entry else None,
                          bytes=0, mtime=0.0, status="unchecked")
    if is_temp_name(path.name):
        try:
            st = os.stat(path)
        except OSError:
            st = None
        info.bytes, info.mtime = (st.st_size, st.st_mtime) if st else (0, 0.0)
        info.status, info.reason = "partial", "being written (temporary file)"
        return info
    try:
        # Stat the open file, not the name: a rename in between cannot pair one file's identity
        # (the cache key) with another file's bytes.
        with open(path, "rb", buffering=0) as file:
            st = os.fstat(file.fileno())
            info.bytes, info.mtime = st.st_size, st.st_mtime
            facts = facts_for(path, file, st, level)
    except FileNotFoundError:
        info.status, info.reason = "missing", "file not found"
        return info
    except OSError as exc:
        info.reason = f"{UNREADABLE}: {exc.strerror or exc.__class__.__name__}"
        return info
    return judge(info, facts, manifest_entry, reference)


def facts_for(path: Path, file: BinaryIO, st: os.stat_result, level: str) -> _Facts:
    """The cached facts for this exact file version at `level` or above, computing them if needed."""
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    rank = LEVELS.index(level)
    with _cache_lock:
        known = dict(_cache.get(key, {}))
    for have in reversed(LEVELS[rank:]):  # the most thorough answer known
        if have in known:
            facts = known[have]
            if have == "deep" and level != "deep":
                # Damage found by any level is real; "cannot resume" is a deep-level judgement only
                # (a weights-only branch may still use such a file).
                facts = replace(facts, incompatible=None, identity=None)
            return facts
    facts = _compute(path, file, st.st_size, level, known)
    if not (facts.problem or "").startswith(UNREADABLE):  # a chmod fixes that without touching mtime
        with _cache_lock:
            _cache.setdefault(key, {})[facts.level] = facts
    return facts


def identity_of(path: Path) -> CheckpointIdentity | None:
    """The identity a deep verify read from this exact file version, if one did."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    with _cache_lock:
        deep = _cache.get((str(path), st.st_size, st.st_mtime_ns, st.st_ino), {}).get("deep")
    return deep.identity if deep else None


def judge(info: CheckpointInfo, facts: _Facts, entry: ManifestEntry | None,
          reference: CheckpointIdentity | None = None) -> CheckpointInfo:
    """Turn the file's facts plus its manifest entry into a status and reason."""
    info.level, info.sha256 = facts.level, facts.sha256
    if entry is not None and info.bytes != entry.bytes and facts.problem != EMPTY:
        short = info.bytes < entry.bytes
        info.status = "corrupt"
        info.reason = (f"{TRUNCATED if short else SIZE_MISMATCH}: {info.bytes} bytes, "
                       f"manifest says {entry.bytes}")
    elif facts.problem is not None:
        unreadable = facts.problem.startswith(UNREADABLE)
        info.status, info.reason = ("unchecked" if unreadable else "corrupt"), facts.problem
    elif entry is not None and facts.sha256 is not None and facts.sha256 != entry.sha256:
        info.status, info.reason = "corrupt", f"{SHA256_MISMATCH}: manifest says {entry.sha256[:12]}..."
    elif facts.incompatible is not None:
        info.status, info.reason = "incompatible", facts.incompatible
    elif reference is not None and facts.identity is not None and \
            (why := _identity_difference(facts.identity, reference)) is not None:
        info.status, info.reason = "incompatible", why
    elif entry is None:
        info.status, info.reason = "unverified", "no manifest entry"
    else:
        info.status, info.reason = "ok", None
    return info


def _compute(path: Path, file: BinaryIO, size: int, level: str, known: dict[str, _Facts]) -> _Facts:
    if size == 0:
        return _Facts(level=level, problem=EMPTY)
    try:
        if level == "quick":
            return _quick(file)
        full = known.get("full") or _full(file, size)
        if level == "full" or full.problem is not None:
            return full
        return _deep(path, full)
    except OSError as exc:
        return _Facts(level=level, problem=f"{UNREADABLE}: {exc.strerror or exc.__class__.__name__}")


# ---------------------------------------------------------------------------------------- quick

def _open_zip(file: IO[bytes]) -> tuple[zipfile.ZipFile | None, str | None]:
    """The archive with its central directory parsed, or why it cannot be."""
    head = file.read(4)
    file.seek(0)
    try:
        return zipfile.ZipFile(file), None
    except zipfile.BadZipFile as exc:
        if head == _LOCAL_SIGNATURE and not _has_end_record(file):
            # Starts like a zip but the end record never arrived: the write was cut short.
            return None, f"{TRUNCATED}: the zip end record is missing"
        if head == _LOCAL_SIGNATURE:
            return None, f"{NOT_A_CHECKPOINT}: damaged zip central directory ({exc})"
        return None, f"{NOT_A_CHECKPOINT}: not a zip file"
    except (ValueError, EOFError, struct.error, UnicodeDecodeError) as exc:
        return None, f"{NOT_A_CHECKPOINT}: damaged zip central directory ({exc.__class__.__name__})"


def _has_end_record(file: IO[bytes]) -> bool:
    """A complete end-of-central-directory record finishes the file (the last thing a zip writer writes)."""
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(max(0, size - (1 << 16) - 22))
    tail = file.read()
    at = tail.rfind(_EOCD_SIGNATURE)
    while at >= 0:
        if at + 22 <= len(tail):
            comment_length = int.from_bytes(tail[at + 20:at + 22], "little")
            if at + 22 + comment_length == len(tail):
                return True
        at = tail.rfind(_EOCD_SIGNATURE, 0, at)
    return False


def _pickle_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    for member in archive.infolist():
        if member.filename == "data.pkl" or member.filename.endswith("/data.pkl"):
            return member
    return None


def _quick(file: BinaryIO) -> _Facts:
    archive, problem = _open_zip(file)
    if archive is None:
        return _Facts(level="quick", problem=problem)
    with archive:  # closes the archive, not our file
        member = _pickle_member(archive)
        if member is None:
            return _Facts(level="quick", problem=f"{NOT_A_CHECKPOINT}: a zip without data.pkl")
        if member.file_size > _MAX_PICKLE_BYTES:
            return _Facts(level="quick", problem=f"{NOT_A_CHECKPOINT}: data.pkl of {member.file_size} bytes")
        try:
            data = archive.read(member)  # checks the local header and this record's CRC
        except zipfile.BadZipFile as exc:
            reason = CRC_MISMATCH if "CRC" in str(exc) else f"{NOT_A_CHECKPOINT}: damaged zip header"
            return _Facts(level="quick", problem=f"{reason}: {member.filename}")
        except (EOFError, zlib.error, ValueError, struct.error) as exc:
            return _Facts(level="quick", problem=f"{TRUNCATED}: {member.filename} ({exc.__class__.__name__})")
    return _Facts(level="quick", problem=_pickle_problem(data))


def _pickle_problem(data: bytes) -> str | None:
    bad = unsafe_globals(data)
    return f"{UNSAFE_PICKLE}: {bad}" if bad else None


# ----------------------------------------------------------------------------------------- full

class _HashingStream:
    """Reads a file once, front to back, in big chunks; every byte read goes into sha256.

    Consumers pull through read/skip/feed; the sha256 runs on a helper thread for big files so
    hashing and CRC work overlap (hashlib and zlib both release the GIL on large buffers).
    """

    _RING = 3

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self._sha = hashlib.sha256()
        self._buffers = [bytearray(min(_CHUNK, max(size, 1))) for _ in range(self._RING)]
        self._pending: list[Future[None] | None] = [None] * self._RING
        self._pool = ThreadPoolExecutor(max_workers=1) if size >= _THREADED_HASH_MIN_BYTES else None
        self._turn = 0
        self._view = memoryview(b"")
        self._idx = 0
        self.pos = 0        # file offset of the next unconsumed byte
        self.eof = False

    def _fill(self) -> bool:
        slot = self._turn % self._RING
        self._turn += 1
        if self._pending[slot] is not None:
            self._pending[slot].result()  # the hasher is done with this buffer: reuse it
        buffer = self._buffers[slot]
        count = self._file.readinto(buffer)
        if not count:
            self.eof = True
            return False
        view = memoryview(buffer)[:count]
        if self._pool is not None:
            self._pending[slot] = self._pool.submit(self._sha.update, view)
        else:
            self._sha.update(view)
        self._view, self._idx = view, 0
        return True

    def feed(self, count: int, consume: Callable[[memoryview], None] | None) -> int:
        """Pass the next `count` bytes to `consume` in pieces; returns how many were available."""
        done = 0
        while done < count:
            if self._idx >= len(self._view) and not self._fill():
                break
            take = min(count - done, len(self._view) - self._idx)
            if consume is not None:
                consume(self._view[self._idx:self._idx + take])
            self._idx += take
            done += take
        self.pos += done
        return done

    def read(self, count: int) -> bytes:
        parts: list[bytes] = []
        self.feed(count, lambda piece: parts.append(bytes(piece)))
        return b"".join(parts)

    def drain(self) -> None:
        while self.feed(_CHUNK, None) == _CHUNK:
            pass

    def hexdigest(self) -> str:
        self.close()
        return self._sha.hexdigest()

    def close(self) -> None:
        if self._pool is not None:
            for pending in self._pending:
                if pending is not None:
                    pending.result()
            self._pool.shutdown(wait=True)
            self._pool = None


class _RecordChecker:
    """CRC32 of one zip record's uncompressed bytes, fed piecewise as they stream past."""

    def __init__(self, member: zipfile.ZipInfo, keep: bool) -> None:
        self.member = member
        self.crc = 0
        self.kept: list[bytes] | None = [] if keep else None
        self.error: str | None = None
        if member.compress_type == zipfile.ZIP_STORED:
            self._inflate = None
        elif member.compress_type == zipfile.ZIP_DEFLATED:
            self._inflate = zlib.decompressobj(-15)
        else:
            self.error = f"{NOT_A_CHECKPOINT}: {member.filename} uses zip compression {member.compress_type}"

    def __call__(self, piece: memoryview) -> None:
        if self.error is not None:
            return
        if self._inflate is None:
            self._absorb(piece)
            return
        try:
            self._absorb(self._inflate.decompress(piece))
        except zlib.error:
            self.error = f"{CRC_MISMATCH}: {self.member.filename} (corrupt deflate stream)"

    def _absorb(self, plain: bytes | memoryview) -> None:
        self.crc = zlib.crc32(plain, self.crc)
        if self.kept is not None:
            self.kept.append(bytes(plain))

    def finish(self) -> str | None:
        if self.error is None and self._inflate is not None:
            try:
                self._absorb(self._inflate.flush())
            except zlib.error:
                self.error = f"{CRC_MISMATCH}: {self.member.filename} (corrupt deflate stream)"
        if self.error is None and self.crc != self.member.CRC:
            self.error = f"{CRC_MISMATCH}: {self.member.filename}"
        return self.error


def _full(file: BinaryIO, size: int) -> _Facts:
    archive, problem = _open_zip(file)
    members: list[zipfile.ZipInfo] = []
    pickle_member = None
    if archive is not None:
        with archive:  # closes the archive, not our file
            members = sorted(archive.infolist(), key=lambda m: m.header_offset)
            pickle_member = _pickle_member(archive)
        if pickle_member is None:
            problem = f"{NOT_A_CHECKPOINT}: a zip without data.pkl"
    file.seek(0)
    stream = _HashingStream(file, size)
    pickle_bytes = None
    try:
        if problem is None:
            problem, pickle_bytes = _walk_records(stream, members, pickle_member)
        stream.drain()  # the sha256 covers every byte, also after a problem
        digest = stream.hexdigest()
    finally:
        stream.close()
    if problem is None and pickle_bytes is not None:
        problem = _pickle_problem(pickle_bytes)
    return _Facts(level="full", problem=problem, sha256=digest)


def _walk_records(stream: _HashingStream, members: list[zipfile.ZipInfo],
                  pickle_member: zipfile.ZipInfo | None) -> tuple[str | None, bytes | None]:
    """Check every record in file order; the first problem found, and data.pkl's bytes."""
    pickle_bytes = None
    for member in members:
        if member.header_offset < stream.pos:
            return f"{NOT_A_CHECKPOINT}: overlapping zip records at {member.filename}", None
        stream.feed(member.header_offset - stream.pos, None)
        raw = stream.read(_LOCAL_HEADER.size)
        if len(raw) < _LOCAL_HEADER.size:
            return f"{TRUNCATED}: at the header of {member.filename}", None
        fields = _LOCAL_HEADER.unpack(raw)
        name_len, extra_len = fields[9], fields[10]
        name = stream.read(name_len)
        if fields[0] != _LOCAL_SIGNATURE or name != _encoded_name(member):
            return f"{NOT_A_CHECKPOINT}: damaged zip header of {member.filename} at offset {member.header_offset}", None
        stream.feed(extra_len, None)
        keep = member is pickle_member
        if keep and member.file_size > _MAX_PICKLE_BYTES:
            return f"{NOT_A_CHECKPOINT}: data.pkl of {member.file_size} bytes", None
        checker = _RecordChecker(member, keep)
        got = stream.feed(member.compress_size, checker)
        if got < member.compress_size:
            return f"{TRUNCATED}: inside {member.filename}", None
        error = checker.finish()
        if error is not None:
            return error, None
        if keep and checker.kept is not None:
            pickle_bytes = b"".join(checker.kept)
    return None, pickle_bytes


def _encoded_name(member: zipfile.ZipInfo) -> bytes:
    # The central directory's name as stored; bit 11 means UTF-8, else cp437 (zipfile's rule).
    encoding = "utf-8" if member.flag_bits & 0x800 else "cp437"
    return member.orig_filename.encode(encoding)


# ----------------------------------------------------------------------------------------- deep

def _deep(path: Path, full: _Facts) -> _Facts:
    import pickle

    import torch  # deep only: runs/ must import without torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        return _deep_facts(full, problem=f"{UNSAFE_PICKLE}: {_unpickler_refusal(exc)}")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a file it cannot load
        return _deep_facts(full, problem=f"{NOT_A_CHECKPOINT}: torch.load failed ({_first_line(exc)})")
    run_id = state.get("run_id") if isinstance(state, dict) else None
    identity = CheckpointIdentity(run_id=run_id if isinstance(run_id, str) else None, model_shapes=_shapes(state))
    return _deep_facts(full, incompatible=_resume_problem(state), identity=identity)


def _deep_facts(full: _Facts, **kwargs: Any) -> _Facts:
    return _Facts(level="deep", sha256=full.sha256, **kwargs)


def _resume_problem(state: Any) -> str | None:
    if not isinstance(state, dict):
        return f"not a checkpoint dict (a {type(state).__name__})"
    if state.get("format") != CHECKPOINT_FORMAT:
        return f"format {state.get('format')!r}, expected {CHECKPOINT_FORMAT!r}"
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not isinstance(state["model"], dict):
        return "model is not a state dict"
    return None


def _shapes(state: Any) -> dict[str, tuple[int, ...]] | None:
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict):
        return None
    return {str(k): tuple(getattr(v, "shape", ())) for k, v in model.items()}


def _identity_difference(identity: CheckpointIdentity, reference: CheckpointIdentity) -> str | None:
    if identity.run_id and reference.run_id and identity.run_id != reference.run_id:
        return f"saved by run {identity.run_id!r}, this run's checkpoints say {reference.run_id!r}"
    if identity.model_shapes is not None and reference.model_shapes is not None:
        return _shape_difference(identity.model_shapes, reference.model_shapes)
    return None


def _shape_difference(shapes: dict[str, tuple[int, ...]], reference: dict[str, tuple[int, ...]]) -> str | None:
    if shapes == reference:
        return None
    missing = sorted(set(reference) - set(shapes))
    extra = sorted(set(shapes) - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks model keys {', '.join(missing[:3])}")
        if extra:
            parts.append(f"has unexpected model keys {', '.join(extra[:3])}")
        return "; ".join(parts)
    key = next(k for k in sorted(shapes) if shapes[k] != reference[k])
    return f"model {key} has shape {list(shapes[key])}, the run's other checkpoints {list(reference[key])}"


def _unpickler_refusal(exc: BaseException) -> str:
    """The line of torch's refusal that names the offending global (its first line only advises
    weights_only=False, which is exactly what must not be done)."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "GLOBAL" in line or "Unsupported" in line or "unrecognized" in line:
            return line.split(" was not an allowed global", 1)[0]
    return "refused by the weights-only unpickler"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
