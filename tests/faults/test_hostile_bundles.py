"""`runctl import` against hostile bundles: bombs, floods, strange members and damaged checkpoints.

Every archive is built for real in tmp (zipfile, tarfile), and fed to `python -m runctl import`.
A refused bundle is exit 2 with one line naming the archive; a damaged one exit 1; either way the
root holds nothing afterwards (no run, no temp folder) and nothing was unpacked first.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run_cli
from support.configs import TINY_MLP
from support.filesystems import tmpfs
from support.run_files import find_run_dir

TIMEOUT = 120.0


def runs_left(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def refused(done, archive: Path, *needles: str, code: int = 2) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, f"exit {done.returncode}: {done.stderr!r}"
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert archive.name in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def minimal_members(zf: zipfile.ZipFile, name: str = "r1") -> None:
    zf.writestr(f"{name}/run.yaml", "run_id: r1\nname: r1\ntask: digits_mlp\nmax_steps: 4\n")
    zf.writestr(f"{name}/status.json", '{"state": "finished", "step": 4, "max_steps": 4}')


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        minimal_members(zf)
        chunk = b"\0" * (1 << 20)
        with zf.open("r1/checkpoints/step_00000004.pt", "w", force_zip64=True) as member:
            for _ in range(1024):  # 1 GiB of zeros
                member.write(chunk)
    assert bomb.stat().st_size < 2 * 2**20
    root = tmp_path / "runs"
    done = run_cli(["import", bomb, "--root", root], cwd=tmp_path, timeout=TIMEOUT)
    refused(done, bomb, "1.0 GiB", "ratio")
    assert runs_left(root) == []


def test_a_flood_of_members_is_refused(tmp_path: Path) -> None:
    flood = tmp_path / "flood.zip"
    with zipfile.ZipFile(flood, "w") as zf:
        minimal_members(zf)
        for i in range(10_001):
            zf.writestr(f"r1/junk/{i}", b"")
    root = tmp_path / "runs"
    refused(run_cli(["import", flood, "--root", root], cwd=tmp_path, timeout=TIMEOUT), flood, "members")
    assert runs_left(root) == []


def _member(zf: zipfile.ZipFile, name: str, mode: int, data: bytes = b"") -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    zf.writestr(info, data)


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(("case", "needle"), [
    ("traversal", "outside the run folder"), ("absolute", "outside the run folder"),
    ("symlink", "symlink"), ("fifo", "not a plain file"), ("device", "not a plain file"),
    ("duplicate", "twice"), ("two_runs", "one run folder"),
])
def test_strange_members_are_refused(tmp_path: Path, case: str, needle: str) -> None:
    archive = tmp_path / f"{case}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        minimal_members(zf)
        if case == "traversal":
            zf.writestr("r1/../../escape.txt", b"x")
        elif case == "absolute":
            zf.writestr("/tmp/escape.txt", b"x")
        elif case == "symlink":
            _member(zf, "r1/checkpoints/step_00000004.pt", stat.S_IFLNK | 0o777, b"/etc/passwd")
        elif case == "fifo":
            _member(zf, "r1/metrics.jsonl", stat.S_IFIFO | 0o644)
        elif case == "device":
            _member(zf, "r1/events.jsonl", stat.S_IFCHR | 0o644)
        elif case == "duplicate":
            zf.writestr("r1/notes.txt", b"one")
            zf.writestr("r1/notes.txt", b"two")
        elif case == "two_runs":
            zf.writestr("r2/run.yaml", b"run_id: r2\n")
    root = tmp_path / "runs"
    refused(run_cli(["import", archive, "--root", root], cwd=tmp_path, timeout=TIMEOUT), archive, needle)
    assert runs_left(root) == []
    assert not (tmp_path / "escape.txt").exists()


def test_a_tar_bomb_is_not_unpacked(tmp_path: Path) -> None:
    """Only zips written by `runctl export` are bundles: a tar (here a gzip'd 256 MiB of zeros) is
    refused unread."""
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("r1/checkpoints/step_00000004.pt")
        info.size = 256 * 2**20

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
                n = min(len(buffer), self.left)
                buffer[:n] = b"\0" * n
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    root = tmp_path / "runs"
    refused(run_cli(["import", archive, "--root", root], cwd=tmp_path, timeout=TIMEOUT), archive, "not a zip")
    assert runs_left(root) == []


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run exported by `runctl export`."""
    tmp = tmp_path_factory.mktemp("bundle")
    sets = [a for s in [*TINY_MLP, "max_steps=4", "checkpoint.every=2"] for a in ("--set", s)]
    done = run_cli(["train", "digits_mlp", "--root", tmp / "runs", "--name", "r1", *sets], cwd=tmp, timeout=180)
    assert done.returncode == 0, done.stderr
    run = find_run_dir(tmp / "runs")
    assert run is not None
    done = run_cli(["export", run, "--out", tmp / "r1.zip"], cwd=tmp, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return tmp / "r1.zip"


def rewrite(source: Path, target: Path, change: dict[str, bytes]) -> None:
    """A copy of the zip with some members' bytes replaced (consistent CRCs: the zip is sound)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, change.get(info.filename, zin.read(info)))


def test_a_bundle_with_a_damaged_checkpoint_leaves_no_run(exported: Path, tmp_path: Path) -> None:
    name = "r1/checkpoints/step_00000004.pt"
    data = bytearray(zipfile.ZipFile(exported).read(name))
    data[len(data) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.zip"
    rewrite(exported, damaged, {name: bytes(data)})
    root = tmp_path / "runs"
    line = refused(run_cli(["import", damaged, "--root", root], cwd=tmp_path, timeout=TIMEOUT), damaged,
                   "step_00000004.pt", "nothing imported", code=1)
    assert "damaged" in line
    assert runs_left(root) == []


def test_a_bundle_whose_zip_crc_fails_leaves_no_run(exported: Path, tmp_path: Path) -> None:
    raw = bytearray(exported.read_bytes())
    with zipfile.ZipFile(exported) as zf:
        info = zf.getinfo("r1/checkpoints/step_00000002.pt")
    # the member's data starts after its 30-byte local header, name and extra field
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    damaged = tmp_path / "crc.zip"
    damaged.write_bytes(bytes(raw))
    root = tmp_path / "runs"
    refused(run_cli(["import", damaged, "--root", root], cwd=tmp_path, timeout=TIMEOUT), damaged,
            "step_00000002.pt", "nothing imported", code=1)
    assert runs_left(root) == []


def test_the_intact_bundle_still_imports(exported: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    done = run_cli(["import", exported, "--root", root], cwd=tmp_path, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert runs_left(root) == ["r1"]
    assert run_cli(["verify", root / "r1"], cwd=tmp_path, timeout=TIMEOUT).returncode == 0


@pytest.fixture
def disk_of_96_mib(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", "96m") as mount_point:
        yield mount_point


def test_a_bundle_larger_than_the_free_space_is_refused(tmp_path: Path, disk_of_96_mib: Path) -> None:
    """A real 96 MiB file system: 40 MiB of incompressible checkpoint would leave less than the
    64 MiB the run needs to go on, so nothing is unpacked."""
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        minimal_members(zf)
        zf.writestr("r1/checkpoints/step_00000004.pt", os.urandom(40 * 2**20))
    root = disk_of_96_mib / "runs"
    refused(run_cli(["import", archive, "--root", root], cwd=tmp_path, timeout=TIMEOUT), archive, "free")
    assert runs_left(root) == []
    stats = os.statvfs(disk_of_96_mib)
    assert stats.f_bfree == stats.f_blocks or stats.f_bavail * stats.f_frsize > 95 * 2**20
