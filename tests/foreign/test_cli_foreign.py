"""`runctl ls`, `summary` and `verify` on runs other tools wrote, as a user runs them (a subprocess),
and not one byte written into their folders by any of them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trees


def runctl(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "runctl", *map(str, args)], capture_output=True, text=True,
                            timeout=180)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    trees.foreign_root(root)
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "root"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


def test_ls_lists_every_layout_with_its_step_and_size(root: Path) -> None:
    result = runctl("ls", root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "LAYOUT", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {trees.NANOGPT, trees.HF, trees.LIGHTNING, trees.TENSORBOARD, trees.PLAIN, trees.UUID_RUN}
    assert rows[trees.NANOGPT][1:4] == ["nanogpt", "unknown", "250/500"]
    assert rows[trees.HF][1:4] == ["hf-trainer", "finished", "8/8"]
    assert rows[trees.LIGHTNING][1:6] == ["lightning", "unknown", "8/-", "0.65", "2"]  # last.ckpt: a copy
    assert rows[trees.PLAIN][1:3] == ["plain", "finished"]
    document = json.loads(runctl("ls", root, "--json").stdout)
    layouts = {run["name"]: run["layout"] for run in document["runs"]}
    assert layouts[trees.TENSORBOARD] == "tensorboard"


def test_depth_flag(root: Path) -> None:
    nested = root / "deep" / "a" / "b" / "c"
    trees.uuid_run(nested)
    assert "deep/a/b/c" in runctl("ls", root).stdout
    assert "deep/a/b/c" not in runctl("ls", root, "--depth", "3").stdout
    result = runctl("ls", root, "--depth", "0")
    assert result.returncode == 2 and "--depth" in result.stderr and result.stderr.count("\n") == 1


def test_summary_and_verify_find_nested_runs(root: Path) -> None:
    result = runctl("summary", root)
    assert result.returncode == 0
    assert trees.LIGHTNING in result.stdout and "val/loss=1.47" in result.stdout
    result = runctl("verify", root, "--quick", "--json")
    document = json.loads(result.stdout)
    by_run = {(c["run"], c["name"]): c for c in document["checkpoints"]}
    last = by_run[(trees.LIGHTNING, "checkpoints/last.ckpt")]
    assert (last["step"], last["kind"], last["copy_of"]) == (8, "last", "checkpoints/epoch=1-step=8.ckpt")
    assert by_run[(trees.PLAIN, "best_model.pt")]["step"] == 1000
    assert by_run[(trees.HF, "checkpoint-8/optimizer.pt")]["step"] == 8
    text = runctl("verify", root / trees.LIGHTNING, "--quick").stdout
    assert "last (copy of checkpoints/epoch=1-step=8.ckpt)" in text


def test_no_command_writes_into_a_foreign_folder(root: Path) -> None:
    before = trees.tree_state(root)
    commands = [("ls", root), ("ls", root, "--json"), ("summary", root), ("summary", root, "--json"),
                ("verify", root, "--quick"), ("verify", root), ("verify", root, "--deep", "--json")]
    commands += [("summary", root / name) for name in (trees.NANOGPT, trees.HF, trees.LIGHTNING, trees.PLAIN)]
    commands += [("verify", root / trees.NANOGPT / "ckpt.pt", "--deep"),
                 ("verify", root / trees.HF / "checkpoint-4" / "model.safetensors", "--deep")]
    for command in commands:
        result = runctl(*command)
        assert result.returncode in (0, 1), (command, result.stderr)
        assert trees.tree_state(root) == before, f"runctl {' '.join(map(str, command))} wrote into the tree"
