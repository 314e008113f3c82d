"""runs.integrity on real torch.save files and on every kind of damage a checkpoint meets."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest
from runctl.runs import integrity, zipscan
from runctl.runs.integrity import CheckpointIdentity, verify_file
from support.checkpoints import (
    checkpoint_state,
    flip_bit,
    malicious_checkpoint,
    manifest_entry_for,
    member_data_offset,
    reduce_call,
    write_checkpoint,
)

LEVELS = ("quick", "full", "deep")


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    integrity.clear_cache()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "step_00000010.pt", 10, hidden=64)


@pytest.mark.parametrize("level", LEVELS)
def test_intact_checkpoint_with_manifest_entry_is_ok(checkpoint: Path, level: str) -> None:
    entry = manifest_entry_for(checkpoint, 10)
    info = verify_file(checkpoint, level, entry)
    assert (info.status, info.reason, info.level) == ("ok", None, level)
    assert info.step == 10 and info.kind == "periodic" and info.bytes == checkpoint.stat().st_size
    if level != "quick":
        assert info.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_without_manifest_entry_is_unverified_but_reports_sha256(checkpoint: Path) -> None:
    info = verify_file(checkpoint, "full")
    assert info.status == "unverified"
    assert info.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert info.step == 10  # from the file name


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_one_pass_walk_handles_headers_split_across_chunks(checkpoint: Path, chunk: int, threaded: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks put every local header across a read boundary; with the hasher thread and without.
    monkeypatch.setattr(zipscan, "_CHUNK", chunk)
    monkeypatch.setattr(zipscan, "_hash_on_helper_thread", lambda size: threaded)
    # Without a manifest entry: a matching sha256 would skip the walk this test is about.
    intact = verify_file(checkpoint, "full")
    assert (intact.status, intact.sha256) == ("unverified", hashlib.sha256(checkpoint.read_bytes()).hexdigest())
    offset, _ = member_data_offset(checkpoint, "data/0")
    flip_bit(checkpoint, offset + 3)
    integrity.clear_cache()
    assert verify_file(checkpoint, "full").reason.startswith("crc mismatch")


def test_a_sha256_that_matches_the_writers_skips_the_crc_walk_but_not_the_pickle_check(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_walk(*args: object) -> None:
        raise AssertionError("the CRC walk ran although the bytes are the writer's")

    entry = manifest_entry_for(checkpoint, 10)
    with monkeypatch.context() as patched:
        patched.setattr(zipscan, "_walk_records", no_walk)
        info = verify_file(checkpoint, "full", entry)
        assert (info.status, info.sha256) == ("ok", entry.sha256)
    # A manifest that vouches for a malicious pickle's bytes does not make it loadable.
    evil = malicious_checkpoint(tmp_path / "step_00000001.pt", reduce_call(os.system, "true"))
    info = verify_file(evil, "full", manifest_entry_for(evil, 1))
    assert info.status == "corrupt" and info.reason.startswith("unsafe pickle"), info
    # Bytes that differ from the writer's go through the walk, which names the damage.
    offset, size = member_data_offset(checkpoint, "data/0")
    flip_bit(checkpoint, offset + size // 2)
    info = verify_file(checkpoint, "full", entry)
    assert info.status == "corrupt" and info.reason.startswith("crc mismatch") and "data/0" in info.reason


@pytest.mark.parametrize("keep", [10, 0.5, -30, -1])
@pytest.mark.parametrize("with_entry", [True, False])
def test_truncated_file_is_corrupt_at_every_level(checkpoint: Path, keep: float, with_entry: bool) -> None:
    entry = manifest_entry_for(checkpoint, 10) if with_entry else None
    data = checkpoint.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    checkpoint.write_bytes(data[:cut])
    for level in LEVELS:
        info = verify_file(checkpoint, level, entry)
        assert info.status == "corrupt", (level, info)
        assert info.reason.startswith("truncated"), (level, info.reason)


def test_bit_flip_in_tensor_data_is_a_crc_mismatch(checkpoint: Path) -> None:
    entry = manifest_entry_for(checkpoint, 10)
    offset, size = member_data_offset(checkpoint, "data/0")
    flip_bit(checkpoint, offset + size // 2, bit=5)
    for level in ("full", "deep"):
        info = verify_file(checkpoint, level, entry)
        assert info.status == "corrupt"
        assert info.reason.startswith("crc mismatch") and "data/0" in info.reason


def test_bit_flip_without_manifest_is_still_caught_by_crc(checkpoint: Path) -> None:
    offset, _ = member_data_offset(checkpoint, "data/1")
    flip_bit(checkpoint, offset)
    assert verify_file(checkpoint, "full").reason.startswith("crc mismatch")


def test_bit_flip_in_a_local_zip_header_is_corrupt(checkpoint: Path) -> None:
    with zipfile.ZipFile(checkpoint) as archive:
        member = next(m for m in archive.infolist() if m.filename.endswith("data/0"))
    flip_bit(checkpoint, member.header_offset + 30 + 1)  # inside the record's file name
    info = verify_file(checkpoint, "full")
    assert info.status == "corrupt" and "damaged zip header" in info.reason


def test_bit_flip_in_the_central_directory_is_corrupt(checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    central = data.rfind(b"PK\x01\x02")  # the last central directory record
    flip_bit(checkpoint, central + 16)   # its CRC field
    for level in ("full", "deep"):
        assert verify_file(checkpoint, level).status == "corrupt"


def test_signature_damage_in_central_directory_is_not_a_checkpoint(checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    flip_bit(checkpoint, data.find(b"PK\x01\x02") + 1)
    for level in LEVELS:
        info = verify_file(checkpoint, level)
        assert info.status == "corrupt" and info.reason.startswith("not a checkpoint"), info


@pytest.mark.parametrize("level", LEVELS)
def test_zero_bytes_is_corrupt_empty(tmp_path: Path, level: str) -> None:
    path = tmp_path / "step_00000001.pt"
    path.write_bytes(b"")
    info = verify_file(path, level)
    assert (info.status, info.reason) == ("corrupt", "empty")


@pytest.mark.parametrize("level", LEVELS)
def test_random_bytes_are_not_a_checkpoint(tmp_path: Path, level: str) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(5000))
    info = verify_file(path, level)
    assert info.status == "corrupt" and info.reason.startswith("not a checkpoint")


@pytest.mark.parametrize("level", LEVELS)
def test_valid_zip_without_data_pkl_is_not_a_checkpoint(tmp_path: Path, level: str) -> None:
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    info = verify_file(path, level)
    assert info.status == "corrupt" and info.reason == "not a checkpoint: a zip without data.pkl"


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", ["system", "open"])
def test_malicious_pickle_is_corrupt_at_every_level_and_never_runs(tmp_path: Path, protocol: int,
                                                                   payload: str) -> None:
    marker = tmp_path / "PWNED"
    call = (reduce_call(os.system, f"touch {marker}") if payload == "system"
            else reduce_call(builtins.open, str(marker), "w"))
    path = malicious_checkpoint(tmp_path / "step_00000001.pt", call, protocol=protocol)
    entry = manifest_entry_for(path, 1)  # a manifest cannot vouch for a pickle
    for level in LEVELS:
        integrity.clear_cache()
        info = verify_file(path, level, entry)
        assert info.status == "corrupt", (level, info)
        assert info.reason.startswith("unsafe pickle"), (level, info.reason)
    assert not marker.exists()


def test_deflated_records_are_checked_too(tmp_path: Path, checkpoint: Path) -> None:
    # Re-pack a real checkpoint with DEFLATE: still a checkpoint, checked by inflating each record.
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(checkpoint) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in src.infolist():
            dst.writestr(member.filename, src.read(member))
    assert verify_file(path, "full").status == "unverified"
    offset, size = member_data_offset(path, "data/0")
    flip_bit(path, offset + size // 2)
    integrity.clear_cache()
    info = verify_file(path, "full")
    assert info.status == "corrupt" and info.reason.startswith("crc mismatch")


def test_sha256_and_size_compared_with_manifest(checkpoint: Path, tmp_path: Path) -> None:
    entry = manifest_entry_for(checkpoint, 10)
    entry.sha256 = "0" * 64
    assert verify_file(checkpoint, "quick", entry).status == "ok"  # quick does not hash
    assert verify_file(checkpoint, "full", entry).reason.startswith("sha256 mismatch")
    # Once known, the damage is reported at any level asked for.
    assert verify_file(checkpoint, "quick", entry).reason.startswith("sha256 mismatch")
    entry = manifest_entry_for(checkpoint, 10)
    with open(checkpoint, "ab") as f:
        f.write(b"trailing")
    for level in LEVELS:
        assert verify_file(checkpoint, level, entry).reason.startswith("size mismatch")


def test_temp_file_is_partial_and_not_read(tmp_path: Path) -> None:
    path = tmp_path / "step_00000020.pt.tmp.12345"
    path.write_bytes(b"PK\x03\x04 half written")
    info = verify_file(path, "full")
    assert info.status == "partial" and info.sha256 is None


def test_missing_file(tmp_path: Path) -> None:
    assert verify_file(tmp_path / "step_00000001.pt", "full").status == "missing"


def test_deep_reports_incompatible_format_and_missing_resume_keys(tmp_path: Path) -> None:
    # In a runctl run's checkpoints/ a file must be resumable; a loose foreign file only has to load.
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "run.yaml").write_text("run_id: run\n")
    stranger = write_checkpoint(tmp_path / "run" / "checkpoints" / "a.pt", 1,
                                state=checkpoint_state(1, format="other/2"))
    info = verify_file(stranger, "deep")
    assert info.status == "incompatible" and "format" in info.reason
    foreign = write_checkpoint(tmp_path / "a.pt", 1, state=checkpoint_state(1, format="other/2"))
    info = verify_file(foreign, "deep")
    assert info.status == "unverified" and "optimizer state" in info.holds, info
    state = checkpoint_state(2)
    del state["optimizer"]
    lacking = write_checkpoint(tmp_path / "b.pt", 2, state=state)
    info = verify_file(lacking, "deep")
    assert info.status == "incompatible" and "optimizer" in info.reason
    assert verify_file(lacking, "full").status == "unverified"  # only deep loads it


def test_deep_compares_run_id_and_model_shapes_with_a_reference(checkpoint: Path) -> None:
    def reference(run_id: str | None, hidden: int) -> CheckpointIdentity:
        return CheckpointIdentity(run_id=run_id, model_shapes={"layer.weight": (hidden, 4), "layer.bias": (hidden,)})

    assert verify_file(checkpoint, "deep", reference=reference("r", 64)).status == "unverified"
    assert verify_file(checkpoint, "deep", reference=reference(None, 64)).status == "unverified"
    info = verify_file(checkpoint, "deep", reference=reference("r", 32))
    assert info.status == "incompatible" and "layer.bias" in info.reason
    info = verify_file(checkpoint, "deep", reference=reference("other-run", 64))
    assert info.status == "incompatible" and "saved by run 'r'" in info.reason
    assert integrity.identity_of(checkpoint) == reference("r", 64)


def test_results_are_cached_by_file_identity(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real_full = integrity._full
    monkeypatch.setattr(integrity, "_full", lambda file, size, written: reads.append(size) or real_full(file, size, written))
    entry = manifest_entry_for(checkpoint, 10)
    assert verify_file(checkpoint, "full", entry).status == "ok"
    assert verify_file(checkpoint, "full", entry).status == "ok"
    assert verify_file(checkpoint, "quick", entry).level == "full"  # a higher level answers a lower
    assert len(reads) == 1
    # Same size, new content and mtime: the old result must not be trusted.
    offset, _ = member_data_offset(checkpoint, "data/0")
    flip_bit(checkpoint, offset)
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert verify_file(checkpoint, "full", entry).status == "corrupt"
    assert len(reads) == 2


def test_a_folder_named_like_a_checkpoint_is_unchecked_not_corrupt(tmp_path: Path) -> None:
    folder = tmp_path / "step_00000005.pt"
    folder.mkdir()
    for level in LEVELS:
        info = verify_file(folder, level)
        assert info.status == "unchecked" and info.reason == "not a regular file: directory", info


def test_unreadable_file_is_reported_not_raised(checkpoint: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files regardless of permissions")
    checkpoint.chmod(0)
    try:
        info = verify_file(checkpoint, "full")
    finally:
        checkpoint.chmod(0o644)
    assert info.status == "unchecked" and info.reason.startswith("unreadable")
    assert verify_file(checkpoint, "full").status == "unverified"  # not cached: readable again


def test_pickle_scan_accepts_what_torch_saves(tmp_path: Path) -> None:
    import torch
    from runctl.runs.pickle_scan import unsafe_globals

    buffer = io.BytesIO()
    state = {"t": torch.ones(2, dtype=torch.bfloat16), "p": torch.nn.Parameter(torch.ones(2)),
             "i": torch.arange(3), "b": b"bytes", "s": {1, 2}, "c": 1 + 2j, "d": torch.device("cpu"),
             "size": torch.Size([2, 3]), "dtype": torch.float16}
    torch.save(state, buffer)
    with zipfile.ZipFile(buffer) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert unsafe_globals(data) is None


def test_deep_load_itself_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    # Defence in depth: even past the static scan, the deep level only loads with weights_only=True.
    marker = tmp_path / "PWNED"
    path = malicious_checkpoint(tmp_path / "evil.pt", reduce_call(os.system, f"touch {marker}"))
    facts = integrity._deep(path, integrity._Facts(level="full", sha256="0" * 64))
    assert facts.problem.startswith("unsafe pickle") and "system" in facts.problem, facts.problem
    assert "weights_only" not in facts.problem  # never advise the unsafe load
    assert not marker.exists()
