"""Reading a torch.save zip for damage without unpickling it: the quick and full scans.

quick: the central directory parses, data.pkl is there, its record's CRC holds and its pickle
       references only globals a weights-only load allows.
full:  ONE sequential pass over the file computes the sha256 of every byte and the CRC32 of every
       zip record, walking the local headers as the bytes stream past (records are checked in
       file order against the central directory; STORED records, as torch.save writes them, are
       CRC'd as they are; DEFLATED ones are inflated first). The sha256 runs on a helper thread
       for big files, overlapping the CRC work (hashlib and zlib release the GIL on big buffers).
       Given the sha256 its writer recorded (a manifest entry), the scan hashes first and skips
       the CRC walk when the hash matches: the bytes are then exactly the ones written, whose
       records were whole, and the quick scan's pickle check still runs. A mismatch falls back to
       the walk, which names the damage (truncated, crc mismatch) rather than only "differs".

Each scan returns the first problem found as a reason string ("truncated: ...", "crc mismatch:
...", "not a checkpoint: ...", "unsafe pickle: ...") or None.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, BinaryIO

from runctl.runs.pickle_scan import unsafe_globals

TRUNCATED = "truncated"
CRC_MISMATCH = "crc mismatch"
NOT_A_CHECKPOINT = "not a checkpoint"
UNSAFE_PICKLE = "unsafe pickle"

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_EOCD_SIGNATURE = b"PK\x05\x06"
_CHUNK = 256 << 10  # small enough that sha256 and CRC32 both read it from CPU cache
# Below this size the sha256 runs inline; above, on a helper thread.
_THREADED_HASH_MIN_BYTES = 16 << 20
_MAX_PICKLE_BYTES = 512 << 20


def quick_scan(file: BinaryIO) -> str | None:
    """The central directory, data.pkl's record and its pickle's globals; reads a few KB."""
    archive, problem = _open_zip(file)
    if archive is None:
        return problem
    with archive:  # closes the archive, not our file
        member = _pickle_member(archive)
        if member is None:
            return f"{NOT_A_CHECKPOINT}: a zip without data.pkl"
        if member.file_size > _MAX_PICKLE_BYTES:
            return f"{NOT_A_CHECKPOINT}: data.pkl of {member.file_size} bytes"
        try:
            data = archive.read(member)  # checks the local header and this record's CRC
        except zipfile.BadZipFile as exc:
            reason = CRC_MISMATCH if "CRC" in str(exc) else f"{NOT_A_CHECKPOINT}: damaged zip header"
            return f"{reason}: {member.filename}"
        except (EOFError, zlib.error, ValueError, struct.error) as exc:
            return f"{TRUNCATED}: {member.filename} ({exc.__class__.__name__})"
    return _pickle_problem(data)


def full_scan(file: BinaryIO, size: int, written_sha256: str | None = None) -> tuple[str | None, str]:
    """(the first problem or None, the sha256 of all `size` bytes) from one sequential read, or,
    when `written_sha256` is given and matches, from the quick scan plus the hash alone."""
    if written_sha256 is not None:
        problem = quick_scan(file)
        if problem is None:
            file.seek(0)
            digest = hashlib.file_digest(file, "sha256").hexdigest()
            if digest == written_sha256:
                return None, digest
    file.seek(0)
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
    return problem, digest


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


def _pickle_problem(data: bytes) -> str | None:
    bad = unsafe_globals(data)
    return f"{UNSAFE_PICKLE}: {bad}" if bad else None


def _hash_on_helper_thread(size: int) -> bool:
    """Overlap sha256 with the CRC work only for big files and only while a core is idle: on a
    busy machine the two threads just take turns on one core and pay for the hand-offs."""
    if size < _THREADED_HASH_MIN_BYTES:
        return False
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores > 1
    return cores > 1 and load <= cores - 1


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
        self._pool = ThreadPoolExecutor(max_workers=1) if _hash_on_helper_thread(size) else None
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
