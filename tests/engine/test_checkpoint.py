"""CheckpointManager: atomic hashed writes, manifest, retention, async, verified weights_only loads."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import runctl.engine.checkpoint as checkpoint_module
import runctl.runs.store as store_module
import torch
from runctl.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    CheckpointManager,
    capture_rng,
    load_checkpoint,
    restore_rng,
    select_for_deletion,
)
from runctl.engine.snapshot import HostBuffers, snapshot_to_cpu
from runctl.runs.errors import RunctlError
from runctl.runs.layout import checkpoint_name
from runctl.runs.manifest import read_manifest
from support.waiting import wait_for

SETTINGS = {"every": 10, "keep_last": 3, "keep_best": True, "async": True}


def make_state(step: int, model: torch.nn.Module | None = None) -> dict[str, Any]:
    torch.manual_seed(step)
    model = model or torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return {
        "format": CHECKPOINT_FORMAT, "run_id": "run-1", "step": step,
        "config": {"data": {"batch_size": 8}, "model": {"hidden": 4}},
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": None, "ema": None,
        "rng": capture_rng(), "data": {"epoch": 0, "position": step * 8},
        "best": {"metric": "val/loss", "value": 1.0, "step": step}, "curriculum_stage": 0,
    }


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(dict(event))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event"] == name]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_manager(run_dir: Path, recorder: Recorder, **overrides: Any) -> CheckpointManager:
    return CheckpointManager(run_dir, "run-1", {**SETTINGS, **overrides}, on_event=recorder)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ckpt_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name != "manifest.json")


# ------------------------------------------------------------------ writing and the manifest


def test_sync_save_writes_file_manifest_and_event(tmp_path: Path, recorder: Recorder) -> None:
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(5), step=5, kind="periodic", best={"metric": "val/loss", "value": 0.5, "step": 5},
                 sync=True)
    path = tmp_path / "checkpoints" / "step_00000005.pt"
    manifest = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    entry = manifest["files"]["step_00000005.pt"]
    assert entry["step"] == 5 and entry["kind"] == "periodic"
    assert entry["bytes"] == path.stat().st_size
    assert entry["sha256"] == sha256_of(path)
    assert entry["saved_at"] > 0
    assert manifest["best"] == {"file": "step_00000005.pt", "metric": "val/loss", "value": 0.5, "step": 5}
    assert recorder.named("checkpoint") == [
        {"event": "checkpoint", "step": 5, "file": "step_00000005.pt", "kind": "periodic",
         "bytes": path.stat().st_size}]
    assert ckpt_files(tmp_path) == ["step_00000005.pt"]
    manager.close()


def test_async_saves_then_wait_all_hash_correctly(tmp_path: Path, recorder: Recorder) -> None:
    manager = make_manager(tmp_path, recorder, keep_last=None)
    for step in (1, 2, 3):
        manager.save(make_state(step), step=step, kind="periodic")
    manager.wait()
    manifest = read_manifest(tmp_path / "checkpoints")
    assert sorted(manifest.files) == [checkpoint_name(s) for s in (1, 2, 3)]
    for name, entry in manifest.files.items():
        assert entry.sha256 == sha256_of(tmp_path / "checkpoints" / name)
    manager.close()


def test_at_most_one_write_in_flight(tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    active, peak, lock = [0], [0], threading.Lock()
    real_write = store_module._write_hashed

    def observed_write(*args: Any) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real_write(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(store_module, "_write_hashed", observed_write)
    monkeypatch.setenv(checkpoint_module.SLOW_WRITE_ENV, "0.05")
    manager = make_manager(tmp_path, recorder, keep_last=None)
    manager.save(make_state(1), step=1, kind="periodic")
    manager.save(make_state(2), step=2, kind="periodic")
    # The second save() returned, so the first write had finished, manifest and event included.
    assert recorder.named("checkpoint")[0]["step"] == 1
    manager.save(make_state(3), step=3, kind="periodic")
    manager.close()
    assert peak[0] == 1
    assert [e["step"] for e in recorder.named("checkpoint")] == [1, 2, 3]


def test_snapshot_is_isolated_from_in_place_updates(tmp_path: Path, recorder: Recorder,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checkpoint_module.SLOW_WRITE_ENV, "0.05")
    model = torch.nn.Linear(4, 3)
    state = make_state(1, model)
    before = model.weight.detach().clone()
    manager = make_manager(tmp_path, recorder)
    manager.save(state, step=1, kind="periodic")
    with torch.no_grad():
        model.weight.add_(100.0)  # what the next optimizer step does, while the write is in flight
    manager.wait()
    loaded = manager.load(tmp_path / "checkpoints" / "step_00000001.pt")
    assert torch.equal(loaded["model"]["weight"], before)
    manager.close()


def test_no_file_under_final_name_until_complete(tmp_path: Path, recorder: Recorder,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "checkpoints" / "step_00000007.pt"
    seen_during_write: list[tuple[bool, list[str]]] = []

    class ObservingWriter(store_module._HashingWriter):
        def write(self, data: Any) -> int:
            seen_during_write.append((final.exists(), ckpt_files(tmp_path)))
            return super().write(data)

    monkeypatch.setattr(store_module, "_HashingWriter", ObservingWriter)
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(7), step=7, kind="final", sync=True)
    assert seen_during_write, "torch.save wrote through the hashing writer"
    assert not any(exists for exists, _ in seen_during_write)
    assert all(names == [f"step_00000007.pt.tmp.{os.getpid()}"] for _, names in seen_during_write)
    assert ckpt_files(tmp_path) == ["step_00000007.pt"]
    manager.close()


class FailingWriter(store_module._HashingWriter):
    """Fails like a full disk after the first chunk, leaving a partial temp file behind."""

    failures_left = 1

    def write(self, data: Any) -> int:
        written = super().write(data)
        if FailingWriter.failures_left > 0:
            FailingWriter.failures_left -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return written


def test_failed_sync_write_removes_temp_and_says_disk_full(tmp_path: Path, recorder: Recorder,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(1), step=1, kind="periodic", sync=True)
    manifest_before = (tmp_path / "checkpoints" / "manifest.json").read_text()
    monkeypatch.setattr(FailingWriter, "failures_left", 1)
    monkeypatch.setattr(store_module, "_HashingWriter", FailingWriter)
    with pytest.raises(CheckpointError, match="disk full") as raised:
        manager.save(make_state(2), step=2, kind="final", sync=True)
    assert "step_00000002.pt" in str(raised.value)
    assert raised.value.exit_code == 1
    assert ckpt_files(tmp_path) == ["step_00000001.pt"]
    assert (tmp_path / "checkpoints" / "manifest.json").read_text() == manifest_before
    [failed] = recorder.named("checkpoint_failed")
    assert failed["step"] == 2 and "disk full" in failed["error"]
    manager.close()


def test_async_failure_surfaces_on_next_save_then_recovers(tmp_path: Path, recorder: Recorder,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FailingWriter, "failures_left", 1)
    monkeypatch.setattr(store_module, "_HashingWriter", FailingWriter)
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(1), step=1, kind="periodic")  # returns at once; the write fails later
    with pytest.raises(CheckpointError, match="disk full"):
        manager.save(make_state(2), step=2, kind="periodic")
    assert len(recorder.named("checkpoint_failed")) == 1
    manager.save(make_state(3), step=3, kind="periodic")  # reported once; later saves work
    manager.close()
    assert ckpt_files(tmp_path) == ["step_00000003.pt"]


def test_close_is_idempotent_and_raises_a_pending_error_once(tmp_path: Path, recorder: Recorder,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FailingWriter, "failures_left", 1)
    monkeypatch.setattr(store_module, "_HashingWriter", FailingWriter)
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(1), step=1, kind="periodic")
    with pytest.raises(CheckpointError):
        manager.close()
    manager.close()
    assert manager._thread is None


# ------------------------------------------------------------------ retention


def test_retention_keeps_newest_best_and_final(tmp_path: Path, recorder: Recorder) -> None:
    manager = make_manager(tmp_path, recorder, keep_last=2)
    for step in range(1, 9):
        kind = "final" if step == 3 else "periodic"  # a final from before an `extend`
        best = {"metric": "val/loss", "value": 0.1, "step": 2} if step == 2 else None
        manager.save(make_state(step), step=step, kind=kind, best=best)
    manager.close()
    kept = ["step_00000002.pt", "step_00000003.pt", "step_00000007.pt", "step_00000008.pt"]
    assert ckpt_files(tmp_path) == kept
    manifest = read_manifest(tmp_path / "checkpoints")
    assert sorted(manifest.files) == kept
    assert manifest.best["file"] == "step_00000002.pt"


def test_retention_never_deletes_protected_or_newest(tmp_path: Path, recorder: Recorder) -> None:
    manager = make_manager(tmp_path, recorder, keep_last=0, keep_best=False)
    manager.save(make_state(1), step=1, kind="periodic", best={"metric": "val/loss", "value": 0.1})
    manager.protect(tmp_path / "checkpoints" / "step_00000001.pt")
    for step in (2, 3, 4):
        manager.save(make_state(step), step=step, kind="periodic")
    manager.close()
    assert ckpt_files(tmp_path) == ["step_00000001.pt", "step_00000004.pt"]


def test_failed_delete_is_a_warning_not_a_failure(tmp_path: Path, recorder: Recorder,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_unlink = Path.unlink

    def stubborn_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name == "step_00000001.pt":
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", stubborn_unlink)
    manager = make_manager(tmp_path, recorder, keep_last=1)
    for step in (1, 2, 3):
        manager.save(make_state(step), step=step, kind="periodic")
    manager.close()
    assert ckpt_files(tmp_path) == ["step_00000001.pt", "step_00000003.pt"]
    warnings = [e["message"] for e in recorder.named("warning")]
    assert warnings and all("step_00000001.pt" in w and "could not delete" in w for w in warnings)
    assert not recorder.named("checkpoint_failed")


def test_retention_forgets_the_manifest_entry_before_deleting_the_file(
        tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between the two leaves an old unlisted file, never a listed file that is gone."""
    seen_at_unlink: list[set[str]] = []
    real_unlink = Path.unlink

    def watching_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith("step_"):
            seen_at_unlink.append(set(read_manifest(self.parent).files))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", watching_unlink)
    manager = make_manager(tmp_path, recorder, keep_last=1)
    for step in (1, 2, 3):
        manager.save(make_state(step), step=step, kind="periodic")
    manager.close()
    assert seen_at_unlink == [{"step_00000002.pt"}, {"step_00000003.pt"}]


def test_select_for_deletion_rules() -> None:
    on_disk = {checkpoint_name(s): s for s in (10, 20, 30, 40, 50)}
    kinds = {checkpoint_name(20): "final"}
    assert select_for_deletion(on_disk, kinds, keep_last=2, best_file=checkpoint_name(10),
                               protected=[checkpoint_name(30)]) == []
    assert select_for_deletion(on_disk, {}, keep_last=2, best_file=None, protected=[]) == [
        checkpoint_name(10), checkpoint_name(20), checkpoint_name(30)]
    assert select_for_deletion(on_disk, {}, keep_last=None, best_file=None, protected=[]) == []
    assert checkpoint_name(50) not in select_for_deletion(on_disk, {}, keep_last=0, best_file=None, protected=[])


def test_stale_temp_of_a_dead_writer_is_removed_after_a_save(tmp_path: Path, recorder: Recorder) -> None:
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    stale = directory / "step_00000001.pt.tmp.999999999"  # no such pid
    stale.write_bytes(b"half a checkpoint")
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(2), step=2, kind="periodic", sync=True)
    manager.close()
    assert not stale.exists()


# ------------------------------------------------------------------ loading


def test_load_roundtrip_and_rng_restore(tmp_path: Path, recorder: Recorder) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = make_state(4)
    state["rng"] = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    manager = make_manager(tmp_path, recorder)
    manager.save(state, step=4, kind="periodic", sync=True)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    loaded = manager.load(tmp_path / "checkpoints" / "step_00000004.pt")
    restore_rng(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert loaded["step"] == 4 and loaded["data"] == {"epoch": 0, "position": 32}
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    manager.close()


def test_load_refuses_a_flipped_byte(tmp_path: Path, recorder: Recorder) -> None:
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(1), step=1, kind="periodic", sync=True)
    manager.close()
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    with zipfile.ZipFile(path) as archive:
        record = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 8)
    data = bytearray(path.read_bytes())
    # The record's payload starts after its local header (30 bytes + name + extra field).
    local_header = record.header_offset
    name_len = int.from_bytes(data[local_header + 26:local_header + 28], "little")
    extra_len = int.from_bytes(data[local_header + 28:local_header + 30], "little")
    data[local_header + 30 + name_len + extra_len + 4] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RunctlError, match=r"step_00000001\.pt: refusing to load: corrupt") as raised:
        load_checkpoint(path)
    assert raised.value.exit_code == 2


def test_load_refuses_a_manifest_hash_mismatch(tmp_path: Path, recorder: Recorder) -> None:
    manager = make_manager(tmp_path, recorder, keep_last=None)
    manager.save(make_state(1), step=1, kind="periodic", sync=True)
    manager.save(make_state(2), step=2, kind="periodic", sync=True)
    manager.close()
    directory = tmp_path / "checkpoints"
    # A whole, valid file swapped in under another name: every CRC passes, the sha256 does not.
    (directory / "step_00000001.pt").write_bytes((directory / "step_00000002.pt").read_bytes())
    with pytest.raises(RunctlError, match="refusing to load: corrupt"):
        load_checkpoint(directory / "step_00000001.pt")


def test_load_refuses_truncated_file(tmp_path: Path, recorder: Recorder) -> None:
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(1), step=1, kind="periodic", sync=True)
    manager.close()
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RunctlError, match="refusing to load"):
        load_checkpoint(path)


class _Planted:
    """Unpickling this creates a file: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_load_never_unpickles_a_malicious_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "step_00000001.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "payload": _Planted(marker)}, path)
    with pytest.raises(RunctlError, match=r"step_00000001\.pt: refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()
    # Second line of defence: with verification skipped, torch's weights-only unpickler refuses too.
    monkeypatch.setattr(checkpoint_module, "verification_failure", lambda path: None)
    with pytest.raises(RunctlError, match="not loadable with weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()
    # The plant is real: a full unpickle would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_refuses_foreign_format_and_missing_optimizer(tmp_path: Path) -> None:
    foreign = tmp_path / "ckpt.pt"
    torch.save({"model": {}, "iter_num": 5}, foreign)
    with pytest.raises(RunctlError, match="not a runctl/1 checkpoint"):
        load_checkpoint(foreign)
    state = make_state(3)
    del state["optimizer"]
    no_optim = tmp_path / "step_00000003.pt"
    torch.save(state, no_optim)
    with pytest.raises(RunctlError, match="--weights-only"):
        load_checkpoint(no_optim)
    assert set(load_checkpoint(no_optim, require=("model",))["model"]) == {"weight", "bias"}


def test_compile_prefix_stripped_on_save_and_on_load(tmp_path: Path, recorder: Recorder) -> None:
    state = make_state(1)
    state["model"] = {f"_orig_mod.{k}": v for k, v in state["model"].items()}
    manager = make_manager(tmp_path, recorder)
    manager.save(state, step=1, kind="periodic", sync=True)
    manager.close()
    raw = torch.load(tmp_path / "checkpoints" / "step_00000001.pt", weights_only=True)
    assert set(raw["model"]) == {"weight", "bias"}
    written_elsewhere = tmp_path / "other.pt"
    torch.save(state, written_elsewhere)  # a checkpoint some other tool saved with the prefix
    assert set(load_checkpoint(written_elsewhere)["model"]) == {"weight", "bias"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_state_is_snapshotted_to_pinned_cpu(tmp_path: Path, recorder: Recorder) -> None:
    model = torch.nn.Linear(4, 3).cuda()
    state = make_state(1, model)
    manager = make_manager(tmp_path, recorder)
    manager.save(state, step=1, kind="periodic")
    with torch.no_grad():
        expected = model.weight.detach().cpu().clone()
        model.weight.add_(1.0)
    manager.close()
    loaded = load_checkpoint(tmp_path / "checkpoints" / "step_00000001.pt")
    assert loaded["model"]["weight"].device.type == "cpu"
    assert torch.equal(loaded["model"]["weight"], expected)


def test_manifest_failure_says_the_checkpoint_itself_was_saved(tmp_path: Path, recorder: Recorder,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(directory: Path, manifest: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(directory / "manifest.json.tmp.1"))

    monkeypatch.setattr(store_module, "write_manifest", full_disk)
    manager = make_manager(tmp_path, recorder)
    with pytest.raises(CheckpointError, match="checkpoint saved, but manifest.json not updated: disk full"):
        manager.save(make_state(1), step=1, kind="interrupt", sync=True)
    manager.close()
    assert ckpt_files(tmp_path) == ["step_00000001.pt"]


# ------------------------------------------------------------------ snapshots


def test_tied_weights_stay_one_tensor_in_the_snapshot(tmp_path: Path, recorder: Recorder) -> None:
    shared = torch.randn(64, 64)
    state = make_state(1)
    state["model"] = {"wte.weight": shared, "lm_head.weight": shared}
    snapshot = snapshot_to_cpu(state)
    assert snapshot["model"]["wte.weight"] is snapshot["model"]["lm_head.weight"]
    assert snapshot["model"]["wte.weight"].data_ptr() != shared.data_ptr()
    manager = make_manager(tmp_path, recorder)
    manager.save(state, step=1, kind="periodic", sync=True)
    manager.close()
    loaded = load_checkpoint(tmp_path / "checkpoints" / "step_00000001.pt")
    assert loaded["model"]["wte.weight"].untyped_storage().data_ptr() == \
        loaded["model"]["lm_head.weight"].untyped_storage().data_ptr()


def test_host_buffers_are_reused_while_shapes_match() -> None:
    buffers = HostBuffers(pin_memory=False)
    first = buffers.get(("model", "w"), torch.zeros(3, 4))
    assert buffers.get(("model", "w"), torch.ones(3, 4)) is first
    assert buffers.get(("model", "w"), torch.ones(4, 4)) is not first
    assert buffers.get(("model", "w"), torch.ones(4, 4, dtype=torch.float16)).dtype == torch.float16


# ------------------------------------------------------------------ kill -9 inside the write windows

_SAVER = """
import sys, torch
from pathlib import Path
from runctl.engine.checkpoint import CheckpointManager, CHECKPOINT_FORMAT
from runctl.engine.snapshot import capture_rng
run_dir, step = Path(sys.argv[1]), int(sys.argv[2])
model = torch.nn.Linear(4, 3)
state = {"format": CHECKPOINT_FORMAT, "run_id": "r", "step": step, "config": {}, "model": model.state_dict(),
         "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict(), "scheduler": {},
         "rng": capture_rng(), "data": {"epoch": 0, "position": 0}}
manager = CheckpointManager(run_dir, "r", {"keep_last": 3, "keep_best": True, "async": True})
manager.save(state, step=step, kind="periodic", sync=True)
"""


def _start_saver(run_dir: Path, step: int) -> subprocess.Popen[bytes]:
    # Each window lasts this long: wide enough to hit, short enough to reach the second one.
    env = {**os.environ, checkpoint_module.SLOW_WRITE_ENV: "2"}
    return subprocess.Popen([sys.executable, "-c", _SAVER, str(run_dir), str(step)], env=env,
                            cwd=Path(__file__).resolve().parents[2])


def _kill_each_when_ready(savers: list[tuple[subprocess.Popen[bytes], Any]]) -> None:
    """SIGKILL each saver as soon as its `ready()` holds; all are watched at once."""
    waiting = list(savers)

    def kill_the_ready() -> bool:
        for proc, ready in list(waiting):
            if ready():
                proc.kill()
                waiting.remove((proc, ready))
            else:
                assert proc.poll() is None, "a saver exited before reaching its window"
        return not waiting

    try:
        # Two cold torch imports at once, beside other tests' subprocesses under pytest-xdist on a
        # loaded 2-core box: a bound for a hang, not a speed check.
        wait_for(kill_the_ready, 240, "every saver to reach its window")
    finally:
        for proc, _ in savers:
            proc.kill()
            proc.wait()


def test_kill_inside_temp_write_and_before_manifest_update(tmp_path: Path, recorder: Recorder) -> None:
    in_temp_write, before_manifest = tmp_path / "a", tmp_path / "b"
    for run_dir in (in_temp_write, before_manifest):
        manager = make_manager(run_dir, recorder)
        manager.save(make_state(1), step=1, kind="periodic", sync=True)
        manager.close()
    manifest_before = (in_temp_write / "checkpoints" / "manifest.json").read_text()
    dir_a, dir_b = in_temp_write / "checkpoints", before_manifest / "checkpoints"
    # Both savers run at once (their torch imports overlap); each is killed inside its own window.
    _kill_each_when_ready([
        (_start_saver(in_temp_write, 2),
         lambda: any(".tmp." in p.name and p.stat().st_size > 0 for p in dir_a.iterdir())),
        (_start_saver(before_manifest, 3), lambda: (dir_b / "step_00000003.pt").exists()),
    ])

    # Killed while the temp file is half written: no file under the final name, manifest untouched.
    assert not (dir_a / "step_00000002.pt").exists()
    assert any(".tmp." in p.name for p in dir_a.iterdir())
    assert (dir_a / "manifest.json").read_text() == manifest_before
    # The next successful save clears the dead writer's temp file.
    manager = make_manager(in_temp_write, recorder)
    manager.save(make_state(4), step=4, kind="periodic", sync=True)
    manager.close()
    assert ckpt_files(in_temp_write) == ["step_00000001.pt", "step_00000004.pt"]

    # Killed after the rename, before the manifest update: a complete file the manifest does not know.
    assert "step_00000003.pt" not in read_manifest(dir_b).files
    assert load_checkpoint(dir_b / "step_00000003.pt")["step"] == 3  # CRCs pass: unverified, loadable


def test_cleanup_failure_after_a_save_is_only_a_warning(tmp_path: Path, recorder: Recorder,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(directory: Path) -> list[Path]:
        raise PermissionError(errno.EACCES, "Permission denied", str(directory))

    monkeypatch.setattr(store_module, "remove_stale_temps", unreadable)
    manager = make_manager(tmp_path, recorder)
    manager.save(make_state(1), step=1, kind="periodic")
    manager.save(make_state(2), step=2, kind="periodic")
    manager.close()
    assert ckpt_files(tmp_path) == ["step_00000001.pt", "step_00000002.pt"]
    assert [e["step"] for e in recorder.named("checkpoint")] == [1, 2]
    assert len(recorder.named("warning")) == 2 and not recorder.named("checkpoint_failed")
