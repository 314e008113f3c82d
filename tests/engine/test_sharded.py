"""parallel.strategy: fsdp on CPU with gloo: FSDP2 fully_shard, step folders saved through
torch.distributed.checkpoint (async), committed by rank 0 with a manifest entry per file, resumed
at other world sizes (2 -> 1 -> 4), bit-exact at the same world size, and a step folder's integrity
(quick, full, deep; .metadata never read unless its sha256 matches the manifest)."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from runctl.engine import api
from runctl.runs.checkpoints import list_checkpoints, newest_valid
from support.checkpoints import final_checkpoint
from support.cli import cli_env, run_cli, runctl_here, start_runctl
from support.configs import set_args, task_sets
from support.run_files import events, manifest_files, read_jsonl, status
from support.waiting import wait_for

SETS = task_sets(max_steps=20, checkpoint_every=5)
FSDP = [*SETS, "parallel.strategy=fsdp"]




def _step_tensors(folder: Path, tmp_path: Path) -> dict[str, Any]:
    """A step folder's tensors as plain CPU tensors, read by DCP's own converter."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp_path / f"{folder.parent.parent.name}-{folder.name}.pt"
    dcp_to_torch_save(str(folder), str(out))
    return torch.load(out, map_location="cpu", weights_only=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fsdp_two_ranks_save_async_step_folders_resume_on_one_and_four_and_exactly_on_two(
        tmp_path: Path) -> None:
    env = cli_env({"TEST_TASK_STEP_SLEEP": "0.05"})
    # Stopped mid-run and resumed on two ranks, while the uninterrupted reference trains beside it.
    stopped = start_runctl(["train", "digits_mlp", "--root", tmp_path, "--name", "stopped", "--nproc", "2",
                            *set_args(FSDP)], tmp_path, env=env)
    straight = run_cli(["train", "digits_mlp", "--root", tmp_path, "--name", "f", "--nproc", "2", *set_args(FSDP)],
                      tmp_path, timeout=400)
    assert straight.returncode == 0, straight.stderr
    wait_for(lambda: status(tmp_path / "stopped").get("state") == "finished" or
               len(read_jsonl(tmp_path / "stopped" / "metrics.jsonl")) >= 7, 300, "seven steps")
    run_cli(["stop", tmp_path / "stopped"], tmp_path)
    _, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 0, err

    run = tmp_path / "f"
    files = manifest_files(run)
    assert sorted(files) == ["step_00000010", "step_00000015", "step_00000020"]  # keep_last 3
    entry = files["step_00000020"]
    folder = run / "checkpoints" / "step_00000020"
    assert sorted(entry["files"]) == [".metadata", "__0_0.distcp", "__1_0.distcp", "runctl.pt"]
    for name, listed in entry["files"].items():
        assert (folder / name).stat().st_size == listed["bytes"] and _sha256(folder / name) == listed["sha256"]
    assert entry["sha256"] == entry["files"][".metadata"]["sha256"]
    assert entry["bytes"] == sum(f["bytes"] for f in entry["files"].values())
    assert [e["file"] for e in events(run, "checkpoint")] == [f"step_{s:08d}" for s in (5, 10, 15, 20)]
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp." in p.name]
    verify = run_cli(["verify", run, "--deep", "--json"], tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert {c["status"] for c in json.loads(verify.stdout)["checkpoints"]} == {"ok"}

    # Same world size: bit-exact, whichever step the stop landed on.
    st = status(tmp_path / "stopped")
    if st["state"] == "stopped":
        assert 7 <= st["step"] < 20
        resumed = run_cli(["resume", tmp_path / "stopped", "--nproc", "2"], tmp_path, timeout=400)
        assert resumed.returncode == 0, resumed.stderr
    exact = _step_tensors(tmp_path / "stopped" / "checkpoints" / "step_00000020", tmp_path)
    straight_20 = _step_tensors(folder, tmp_path)
    for key, value in straight_20["model"].items():
        assert torch.equal(exact["model"][key], value), key
    for name, moments in straight_20["optimizer"]["state"].items():
        for moment, value in moments.items():
            assert torch.equal(exact["optimizer"]["state"][name][moment], value), (name, moment)

    # 2 -> 1 (in this process), then 1 -> 4 ranks: DCP reshards.
    assert runctl_here(["extend", run, "--steps", "10"]) == 0
    assert sorted(manifest_files(run)["step_00000030"]["files"]) == [".metadata", "__0_0.distcp", "runctl.pt"]
    four = run_cli(["extend", run, "--steps", "10", "--nproc", "4"], tmp_path, timeout=400)
    assert four.returncode == 0, four.stderr
    assert sorted(manifest_files(run)["step_00000040"]["files"]) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "__3_0.distcp", "runctl.pt"]
    assert [e["world_size"] for e in events(run, "started")] == [2]
    assert status(run)["world_size"] == 4 and status(run)["step"] == 40

    # One process with DDP's file checkpoints, the same schedule: equal up to the reductions' rounding.
    reference = api.new_run("digits_mlp", tmp_path, name="reference", overrides=SETS)
    assert api.train(reference).state == "finished"
    for _ in range(2):
        api.extend_run(reference, steps=10)
        assert api.resume_run(reference).state == "finished"
    sharded, single = _step_tensors(run / "checkpoints" / "step_00000040", tmp_path), final_checkpoint(reference, 40)
    assert torch.load(run / "checkpoints" / "step_00000040" / "runctl.pt", weights_only=True)["data"] == \
        {**single["data"], "world_size": 4}
    for key, value in single["model"].items():
        torch.testing.assert_close(sharded["model"][key], value, rtol=1e-4, atol=1e-5)


def _one_process_fsdp_run(tmp_path: Path, name: str = "one") -> Path:
    run = api.new_run("digits_mlp", tmp_path, name=name, overrides=[*FSDP, "max_steps=10"])
    assert api.train(run).state == "finished"
    return run


def test_step_folder_damage_is_found_at_the_right_level_and_metadata_is_never_unpickled_unvouched(
        tmp_path: Path) -> None:
    run = _one_process_fsdp_run(tmp_path)
    ckpt = run / "checkpoints"
    assert [i.name for i in list_checkpoints(run, level="full")] == ["step_00000005", "step_00000010"]

    shard = ckpt / "step_00000010" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert [i.status for i in list_checkpoints(run, level="quick")] == ["ok", "ok"]  # same size
    full = list_checkpoints(run, level="full")[1]
    assert full.status == "corrupt" and full.reason.startswith("sha256 mismatch: __0_0.distcp")
    chosen, skipped = newest_valid(run)
    assert chosen.name == "step_00000005" and [s.name for s in skipped] == ["step_00000010"]

    # A .metadata that would run code if unpickled: its sha256 no longer matches, so nothing reads it.
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    (ckpt / "step_00000005" / ".metadata").write_bytes(pickle.dumps(Evil()))
    verify = run_cli(["verify", run, "--deep", "--json"], tmp_path)
    assert verify.returncode == 1
    reasons = {c["name"]: c["reason"] for c in json.loads(verify.stdout)["checkpoints"]}
    assert reasons["step_00000005"].startswith(("truncated: .metadata", "size mismatch: .metadata",
                                                "sha256 mismatch: .metadata"))
    refused = run_cli(["resume", run, "--from", "step_00000005"], tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "refusing to load" in refused.stderr
    assert not marker.exists()

    # A folder no manifest entry vouches for (copied in): listed, never loaded.
    stranger = ckpt / "step_00000007"
    shutil.copytree(run / "checkpoints" / "step_00000010", stranger)
    (stranger / ".metadata").write_bytes(pickle.dumps(Evil()))
    info = next(i for i in list_checkpoints(run, level="deep") if i.name == "step_00000007")
    assert info.status == "unverified" and ".metadata" in info.reason
    assert newest_valid(run)[0] is None
    assert not marker.exists()


def test_step_folders_export_import_list_and_branch_to_ddp(tmp_path: Path) -> None:
    run = _one_process_fsdp_run(tmp_path)
    (run / "checkpoints" / "step_00000012.tmp.999999").mkdir()  # a killed writer's temp folder
    (run / "checkpoints" / "step_00000012.tmp.999999" / "__0_0.distcp").write_bytes(b"x")
    listed = {i.name: i.status for i in list_checkpoints(run, level="quick")}
    assert listed == {"step_00000005": "ok", "step_00000010": "ok", "step_00000012.tmp.999999": "partial"}
    ls = json.loads(run_cli(["ls", tmp_path, "--json"], tmp_path).stdout)
    (summary,) = [r for r in ls["runs"] if r["name"] == "one"] if isinstance(ls, dict) else \
        [r for r in ls if r["name"] == "one"]
    assert summary["checkpoints"] == 2
    assert summary["checkpoint_bytes"] == sum(e["bytes"] for e in manifest_files(run).values())

    archive = tmp_path / "one.zip"
    assert run_cli(["export", run, "--out", archive], tmp_path).returncode == 0
    imported_root = tmp_path / "elsewhere"
    imported = run_cli(["import", archive, "--root", imported_root], tmp_path)
    assert imported.returncode == 0, imported.stderr
    copy = imported_root / "one"
    assert {i.name: i.status for i in list_checkpoints(copy, level="full")} == \
        {"step_00000005": "ok", "step_00000010": "ok"}

    # FSDP -> DDP: a branch with the other strategy reads the step folder into plain tensors.
    branched = api.branch_run(run, "step_00000005", "as-ddp", overrides=["parallel.strategy=ddp"])
    assert api.train(branched.run_dir).state == "finished"
    ddp_10 = final_checkpoint(branched.run_dir, 10)
    fsdp_10 = _step_tensors(run / "checkpoints" / "step_00000010", tmp_path)
    for key, value in fsdp_10["model"].items():
        assert torch.equal(ddp_10["model"][key], value), key  # one process either way: bit-exact
