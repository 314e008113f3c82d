"""`runctl branch PATH/TO/CKPT --name NEW --config CFG`: a runctl run from a checkpoint another tool
wrote (the real-tool fixtures in tests/fixtures/foreign/), through the CLI in a subprocess. The
fixture tree is compared (paths, sizes, mtimes) before and after every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

FOREIGN = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
HERE = Path(__file__).resolve().parent
TINY = ["--set", "eval.every=1", "--set", "eval.batches=1", "--set", "log.every=1",
        "--set", "checkpoint.async=false"]


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = (Path(folder) / name).lstat()
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size if name in files else 0,
                                                                      st.st_mtime_ns)
    return out


def branch(tmp_path: Path, ckpt: Path, *args: str) -> subprocess.CompletedProcess[str]:
    before = tree_state(FOREIGN)
    env = dict(os.environ, PYTHONPATH=str(HERE))
    result = subprocess.run([sys.executable, "-m", "runctl", "branch", str(ckpt), "--root", str(tmp_path / "runs"),
                             *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env, check=False)
    assert tree_state(FOREIGN) == before, "runctl wrote into a foreign folder"
    return result


def run_yaml(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "run.yaml").read_text())


def final_model(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / f"step_{step:08d}.pt", weights_only=True)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_builtin_task_from_a_plain_folder_checkpoint_starts_from_its_weights(tmp_path: Path) -> None:
    ckpt = FOREIGN / "plain" / "checkpoints" / "mlp_narrow_mnist" / "checkpoint_step_01000.pt"
    result = branch(tmp_path, ckpt, "--name", "mlp", "--config", "digits_mlp", "--set", "model.hidden=32",
                    "--set", "model.depth=1", "--set", "max_steps=2", *TINY)
    assert result.returncode == 0, result.stderr
    # The script's one-group AdamW does not fit runctl's decay/no-decay groups: weights only, said so.
    assert "starting from the weights only (fresh optimizer, step 0): its parameter groups hold [4]" \
        in result.stderr
    assert "setting changed" not in result.stderr
    run_dir = tmp_path / "runs" / "mlp"
    parent = run_yaml(run_dir)["parent"]
    assert parent["path"] == str(ckpt) and parent["step"] == 1000 and parent["weights_only"] is True
    assert parent["layout"] == "plain" and parent["weights_from"] == "model_state_dict of checkpoint_step_01000.pt"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "branched" and events[0]["checkpoint"] == str(ckpt)
    # Two AdamW steps at lr <= 1e-3 move each weight by at most ~2e-3: the run started from these weights.
    foreign = torch.load(ckpt, weights_only=True)["model_state_dict"]
    assert max_difference(final_model(run_dir, 2), foreign) < 5e-3


def test_compiled_model_prefix_is_removed(tmp_path: Path) -> None:
    ckpt = FOREIGN / "plain" / "checkpoints_optimized" / "checkpoint_step_5000.pt"
    assert all(k.startswith("_orig_mod.") for k in torch.load(ckpt, weights_only=True)["model_state_dict"])
    result = branch(tmp_path, ckpt, "--name", "compiled", "--config", "digits_mlp", "--set", "model.hidden=32",
                    "--set", "model.depth=1", "--no-start")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "compiled" / "run.yaml").is_file()


def test_old_checkpoint_without_optimizer_is_a_weights_only_start(tmp_path: Path) -> None:
    ckpt = FOREIGN / "plain" / "logs" / "old-run" / "model_step000128.pt"
    result = branch(tmp_path, ckpt, "--name", "old", "--config", "digits_mlp", "--set", "model.hidden=32",
                    "--set", "model.depth=1", "--no-start")
    assert result.returncode == 0, result.stderr
    assert "starting from the weights only (fresh optimizer, step 0): the checkpoint has no optimizer state" \
        in result.stderr
    assert run_yaml(tmp_path / "runs" / "old")["parent"]["step"] == 128


def test_a_model_that_does_not_fit_names_the_keys_and_creates_nothing(tmp_path: Path) -> None:
    ckpt = FOREIGN / "plain" / "checkpoints" / "mlp_narrow_mnist" / "checkpoint_step_01000.pt"
    result = branch(tmp_path, ckpt, "--name", "wide", "--config", "digits_mlp", "--no-start")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "does not fit the config's model: missing 2 keys (net.5.weight, net.5.bias)" in lines[0]
    assert "net.1.weight: [32,64] -> [128,64]" in lines[0]
    assert not (tmp_path / "runs" / "wide").exists()


def test_a_file_that_is_not_loadable_safely_is_refused(tmp_path: Path) -> None:
    ckpt = FOREIGN / "plain" / "logs" / "691bd736-d91a-48bf-a7a9-4b17d3ec0733" / "model_step000256.pt"
    result = branch(tmp_path, ckpt, "--name", "ns", "--config", "digits_mlp", "--no-start")
    assert result.returncode == 2
    assert "not loadable safely: pickled Namespace (argparse.Namespace)" in result.stderr
    assert not (tmp_path / "runs" / "ns").exists()


def test_nanogpt_checkpoint_continues_with_its_optimizer_and_step(tmp_path: Path) -> None:
    # char_gpt at nanoGPT's fixture size: 32 distinct characters give the same vocab_size.
    text = tmp_path / "text.txt"
    alphabet = "abcdefghijklmnopqrstuvwxyz ,.;!?"
    assert len(set(alphabet)) == 32
    text.write_text("".join(alphabet[(i * 7 + i // 5) % 32] for i in range(4000)))
    ckpt = FOREIGN / "nanogpt" / "out-tiny" / "ckpt.pt"
    result = branch(tmp_path, ckpt, "--name", "gpt", "--config", "char_gpt", "--set", f"data.path={text}",
                    "--set", "model.n_layer=1", "--set", "model.n_head=2", "--set", "model.n_embd=16",
                    "--set", "model.block_size=16", "--set", "max_steps=22", "--set", "data.batch_size=4", *TINY)
    assert result.returncode == 0, result.stderr
    assert "weights only" not in result.stderr
    assert "nanogpt; weights from model of ckpt.pt; step 20" in result.stderr
    run_dir = tmp_path / "runs" / "gpt"
    parent = run_yaml(run_dir)["parent"]
    assert (parent["step"], parent["weights_only"], parent["layout"]) == (20, False, "nanogpt")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/loss" in m] == [21, 22]  # the step carried over
    saved = torch.load(run_dir / "checkpoints" / "step_00000022.pt", weights_only=True)
    assert saved["step"] == 22
    foreign = torch.load(ckpt, weights_only=True)
    assert max_difference(saved["model"], foreign["model"]) < 5e-3
    # The optimizer state went on from nanoGPT's: Adam's step count is 20 + 2.
    assert {float(s["step"]) for s in saved["optimizer"]["state"].values()} == {22.0}


def test_custom_task_from_a_lightning_checkpoint(tmp_path: Path) -> None:
    config = tmp_path / "lightning.yaml"
    config.write_text("task: foreign_tasks:lightning_digits\nmodel: {hidden: 32}\nmax_steps: 2\n")
    ckpt = FOREIGN / "lightning" / "lightning_logs" / "version_0" / "checkpoints" / "epoch=1-step=16.ckpt"
    result = branch(tmp_path, ckpt, "--name", "lit", "--config", str(config), *TINY)
    assert result.returncode == 0, result.stderr
    assert "lightning; weights from state_dict of epoch=1-step=16.ckpt" in result.stderr
    run_dir = tmp_path / "runs" / "lit"
    assert run_yaml(run_dir)["parent"]["step"] == 16
    foreign = torch.load(ckpt, weights_only=True)["state_dict"]
    stripped = {k.removeprefix("model."): v for k, v in foreign.items()}
    assert max_difference(final_model(run_dir, 2), stripped) < 5e-3


@pytest.mark.parametrize("extra", [["--from", "latest"], []])
def test_bad_usage_is_one_line_exit_2(tmp_path: Path, extra: list[str]) -> None:
    ckpt = FOREIGN / "nanogpt" / "out-tiny" / "ckpt.pt"
    args = ["--name", "x", *extra] + (["--config", "char_gpt"] if extra else [])
    result = branch(tmp_path, ckpt, *args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
