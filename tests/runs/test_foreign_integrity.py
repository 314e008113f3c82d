"""Integrity of files written by the real tools (tests/fixtures/foreign/, made by make_fixtures.py):
every healthy file verifies without a false alarm at every level, damage in a copy is `corrupt`,
files a weights-only load refuses by design have their own status, and nothing is written into
the fixture folders."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.cli import cli_env, run_cli
from support.filesystems import tree_snapshot

FOREIGN = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
HF_CHECKPOINT = FOREIGN / "hf" / "out" / "checkpoint-4"
HF_BIN_CHECKPOINT = FOREIGN / "hf_bin" / "out" / "checkpoint-4"


def level_flag(level: str) -> list[str]:
    return [] if level == "full" else [f"--{level}"]


def verify_json(path: Path, level: str) -> tuple[int, dict[str, dict[str, Any]], dict[str, Any]]:
    """(exit code, {file name: record}, the whole document) of `runctl verify PATH --LEVEL --json`,
    checking that the folder tree is untouched."""
    before = tree_snapshot(FOREIGN)
    result = run_cli(["verify", str(path), *level_flag(level), "--json"], timeout=300)
    assert tree_snapshot(FOREIGN) == before, "runctl wrote into a foreign folder"
    assert result.stdout, result.stderr
    document = json.loads(result.stdout)
    return result.returncode, {item["name"]: item for item in document["checkpoints"]}, document


@pytest.mark.parametrize("level", ["quick", "full", "deep"])
@pytest.mark.parametrize("folder", [HF_CHECKPOINT, HF_BIN_CHECKPOINT], ids=["safetensors", "pytorch_model.bin"])
def test_hugging_face_checkpoint_folder_verifies_without_a_false_alarm(folder: Path, level: str) -> None:
    code, files, document = verify_json(folder, level)
    assert code == 0, document
    assert document["corrupt"] == 0
    weights = "model.safetensors" if (folder / "model.safetensors").exists() else "pytorch_model.bin"
    assert set(files) == {weights, "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}
    args, rng = files["training_args.bin"], files["rng_state.pth"]
    assert args["status"] == "unsafe"
    assert args["reason"].startswith("not loadable safely: pickled TrainingArguments ("), args
    assert rng["status"] == "unsafe" and "pickled numpy arrays" in rng["reason"], rng
    for name in (weights, "optimizer.pt", "scheduler.pt"):
        assert files[name]["status"] == "unverified", files[name]
        if level != "quick":
            assert len(files[name]["sha256"]) == 64
    if level == "deep":
        assert files["optimizer.pt"]["holds"].startswith("optimizer state")
        assert files["scheduler.pt"]["holds"].startswith("LR scheduler state")
        assert "model weights" in files[weights]["holds"]
    if weights == "model.safetensors":
        assert files[weights]["format"] == "safetensors"
        assert "safetensors has no checksums" in files[weights]["reason"]


def test_table_shows_status_reason_and_sha256() -> None:
    before = tree_snapshot(FOREIGN)
    result = run_cli(["verify", str(HF_CHECKPOINT)], timeout=300)
    assert tree_snapshot(FOREIGN) == before
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.split()[1:2] == ["training_args.bin"])
    assert " unsafe " in row and "not loadable safely: pickled TrainingArguments" in row
    row = next(line for line in result.stdout.splitlines() if "optimizer.pt" in line)
    import hashlib
    digest = hashlib.sha256((HF_CHECKPOINT / "optimizer.pt").read_bytes()).hexdigest()
    assert digest[:16] in row


def test_byte_flipped_in_a_copy_is_corrupt(tmp_path: Path) -> None:
    copy = tmp_path / "checkpoint-4"
    shutil.copytree(HF_CHECKPOINT, copy)
    data = bytearray((copy / "optimizer.pt").read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor records
    (copy / "optimizer.pt").write_bytes(bytes(data))
    result = run_cli(["verify", str(copy), "--json"], timeout=300)
    assert result.returncode == 1
    files = {item["name"]: item for item in json.loads(result.stdout)["checkpoints"]}
    assert files["optimizer.pt"]["status"] == "corrupt", files["optimizer.pt"]
    assert files["optimizer.pt"]["reason"].startswith("crc mismatch")
    assert [name for name, item in files.items() if item["status"] == "corrupt"] == ["optimizer.pt"]


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_damaged_safetensors_is_corrupt(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "model.safetensors"
    data = bytearray((HF_CHECKPOINT / "model.safetensors").read_bytes())
    if damage == "truncate":
        data = data[:-100]
    else:
        data[20] = ord("?")  # inside the JSON header
    path.write_bytes(bytes(data))
    for level in ("quick", "full"):
        result = run_cli(["verify", str(path), *level_flag(level), "--json"], timeout=300)
        assert result.returncode == 1, result.stdout
        (item,) = json.loads(result.stdout)["checkpoints"]
        assert item["status"] == "corrupt"
        expected = "truncated" if damage == "truncate" else "not a safetensors file"
        assert item["reason"].startswith(expected), item


def test_sharded_safetensors_and_its_index() -> None:
    code, files, _ = verify_json(FOREIGN / "hf" / "sharded", "full")
    assert code == 0
    assert set(files) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert all(item["status"] == "unverified" and item["format"] == "safetensors" for item in files.values())


def test_legacy_torch_file_is_its_own_status() -> None:
    path = FOREIGN / "plain" / "weights" / "legacy_step_300.pt"
    for level in ("quick", "full", "deep"):
        code, files, _ = verify_json(path, level)
        item = files["legacy_step_300.pt"]
        assert code == 0 and item["status"] == "legacy" and item["format"] == "legacy", item
    assert item["holds"].startswith("model weights (4 tensors")
    assert len(item["sha256"]) == 64


def test_argparse_namespace_in_args_is_not_loadable_safely_and_not_corrupt() -> None:
    code, files, _ = verify_json(FOREIGN / "plain" / "logs" / "691bd736-d91a-48bf-a7a9-4b17d3ec0733", "deep")
    assert code == 0
    for item in files.values():
        assert item["status"] == "unsafe"
        assert item["reason"] == "not loadable safely: pickled Namespace (argparse.Namespace)"


@pytest.mark.parametrize(("path", "holds"), [
    (FOREIGN / "lightning" / "lightning_logs" / "version_0" / "checkpoints" / "epoch=1-step=16.ckpt",
     "model weights under 'state_dict' (4 tensors, 2,410 values), optimizer state, step 16"),
    (FOREIGN / "nanogpt" / "out-tiny" / "ckpt.pt", "model weights under 'model' ("),
    (FOREIGN / "plain" / "checkpoints_optimized" / "checkpoint_step_5000.pt",
     "model weights under 'model_state_dict' (4 tensors, 2,410 values), optimizer state, step 5000"),
    (FOREIGN / "plain" / "logs" / "old-run" / "model_step000128.pt",
     "model weights under 'model' (4 tensors, 2,410 values), step 128"),
])
def test_deep_says_what_a_foreign_checkpoint_holds(path: Path, holds: str) -> None:
    code, files, _ = verify_json(path, "deep")
    item = files[path.name]
    assert code == 0 and item["status"] == "unverified", item
    assert item["holds"].startswith(holds), item["holds"]
    if path.name == "ckpt.pt":
        assert item["holds"].endswith("optimizer state, step 20"), item["holds"]


def test_results_are_cached_in_the_user_cache_dir_not_the_folder(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = cli_env({"XDG_CACHE_HOME": str(cache)})
    before = tree_snapshot(FOREIGN)
    for _ in range(2):
        result = run_cli(["verify", HF_CHECKPOINT, "--deep"], env=env, timeout=300)
        assert result.returncode == 0, result.stderr
    assert tree_snapshot(FOREIGN) == before
    assert (cache / "runctl" / "verify.sqlite3").is_file()
    import sqlite3
    with sqlite3.connect(cache / "runctl" / "verify.sqlite3") as db:
        paths = {row[0] for row in db.execute("SELECT path FROM facts WHERE level='deep'")}
    assert str(HF_CHECKPOINT / "optimizer.pt") in paths


def summary(*args: str) -> subprocess.CompletedProcess[str]:
    before = tree_snapshot(FOREIGN)
    result = run_cli(["summary", *args], timeout=300)
    assert tree_snapshot(FOREIGN) == before
    return result


def test_summary_expect_counts_the_steps_asked_for(tmp_path: Path) -> None:
    # Seed 000: three experiments, checkpoints at 100, 1000 and 2000 each.
    source = FOREIGN / "plain" / "checkpoints" / "mlp_narrow_mnist"
    for name in ("transformer_deep_mnist", "cnn_deep_mnist", "mlp_narrow_mnist"):
        shutil.copytree(source, tmp_path / "checkpoints" / name)
    result = run_cli(["summary", str(tmp_path / "checkpoints"), "--expect", "100,1000,2000"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "Total checkpoints: 9 (expected: 9)"
    # The fixture's cnn_deep_mnist stopped before 2000 (the seed's off-by-one loop).
    result = summary(str(FOREIGN / "plain" / "checkpoints"), "--expect", "100,1000,2000", "--json")
    assert result.returncode == 0, result.stderr
    runs = {run["name"]: run for run in json.loads(result.stdout)["runs"]}
    assert (runs["cnn_deep_mnist"]["checkpoints_present"], runs["cnn_deep_mnist"]["checkpoints_expected"],
            runs["cnn_deep_mnist"]["missing_steps"]) == (2, 3, [2000])
    assert runs["mlp_narrow_mnist"]["missing_steps"] == []
    result = summary(str(FOREIGN / "plain" / "checkpoints"), "--expect", "100,x")
    assert result.returncode == 2 and result.stderr.startswith("runctl: --expect '100,x'")


def test_hugging_face_expected_checkpoints_from_trainer_state(tmp_path: Path) -> None:
    # save_steps 2, max_steps 6: checkpoint-2, -4 and -6.
    result = summary(str(FOREIGN / "hf"), "--json")
    runs = {run["name"]: run for run in json.loads(result.stdout)["runs"]}
    assert (runs["out"]["checkpoints_present"], runs["out"]["checkpoints_expected"], runs["out"]["missing_steps"]) \
        == (3, 3, [])
    # save_total_limit=2 rotated checkpoint-2 out: the newest two are all that should be there.
    result = summary(str(FOREIGN / "hf_bin"), "--json")
    (run,) = json.loads(result.stdout)["runs"]
    assert (run["checkpoints_present"], run["checkpoints_expected"], run["missing_steps"]) == (2, 2, [])
    # A checkpoint lost in the middle is missing.
    copy = tmp_path / "out"
    shutil.copytree(FOREIGN / "hf" / "out", copy)
    shutil.rmtree(copy / "checkpoint-4")
    result = run_cli(["summary", str(tmp_path), "--json"], timeout=300)
    (run,) = json.loads(result.stdout)["runs"]
    assert (run["checkpoints_present"], run["checkpoints_expected"], run["missing_steps"]) == (2, 3, [4])
