"""`runctl branch PATH/TO/CKPT --name NEW --config CFG`: a runctl run from a checkpoint another tool
wrote (the real-tool fixtures in tests/fixtures/foreign/), through the CLI in a subprocess. The
fixture tree is compared (paths, sizes, mtimes) before and after every command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from support.cli import run_cli
from support.filesystems import tree_snapshot

FOREIGN = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
TINY = ["--set", "eval.every=1", "--set", "eval.batches=1", "--set", "log.every=1",
        "--set", "checkpoint.async=false"]


def branch(tmp_path: Path, ckpt: Path, *args: str) -> subprocess.CompletedProcess[str]:
    before = tree_snapshot(FOREIGN)
    result = run_cli(["branch", ckpt, "--root", tmp_path / "runs", *args], tmp_path, timeout=300)
    assert tree_snapshot(FOREIGN) == before, "runctl wrote into a foreign folder"
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
    config.write_text("task: support.tasks:lightning_digits\nmodel: {hidden: 32}\nmax_steps: 2\n")
    ckpt = FOREIGN / "lightning" / "lightning_logs" / "version_0" / "checkpoints" / "epoch=1-step=16.ckpt"
    result = branch(tmp_path, ckpt, "--name", "lit", "--config", str(config), *TINY)
    assert result.returncode == 0, result.stderr
    assert "lightning; weights from state_dict of epoch=1-step=16.ckpt" in result.stderr
    run_dir = tmp_path / "runs" / "lit"
    assert run_yaml(run_dir)["parent"]["step"] == 16
    foreign = torch.load(ckpt, weights_only=True)["state_dict"]
    stripped = {k.removeprefix("model."): v for k, v in foreign.items()}
    assert max_difference(final_model(run_dir, 2), stripped) < 5e-3


HF_CHECKPOINT = FOREIGN / "hf" / "out" / "checkpoint-6"
HF_CONFIG = "task: support.tasks:hf_tiny_tokens\nmax_steps: 8\ndata: {batch_size: 4}\n"


def test_custom_task_from_a_hugging_face_checkpoint_folder(tmp_path: Path) -> None:
    """checkpoint-6/ as the Trainer left it: the weights from model.safetensors, AdamW's state from
    optimizer.pt (its decay and no-decay groups are runctl's) and the step from trainer_state.json."""
    config = tmp_path / "gpt2.yaml"
    config.write_text(HF_CONFIG)
    result = branch(tmp_path, HF_CHECKPOINT, "--name", "gpt2", "--config", str(config), *TINY)
    assert result.returncode == 0, result.stderr
    assert "hf-trainer; weights from model.safetensors; step 6" in result.stderr
    assert "weights only" not in result.stderr
    run_dir = tmp_path / "runs" / "gpt2"
    parent = run_yaml(run_dir)["parent"]
    assert (parent["path"], parent["step"], parent["weights_only"]) == (str(HF_CHECKPOINT), 6, False)
    assert (parent["layout"], parent["weights_from"]) == ("hf-trainer", "model.safetensors")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train/loss" in m] == [7, 8]
    saved = torch.load(run_dir / "checkpoints" / "step_00000008.pt", weights_only=True)
    from safetensors.torch import load_file

    assert max_difference(saved["model"], load_file(HF_CHECKPOINT / "model.safetensors")) < 5e-3
    # AdamW went on from the Trainer's: its step count is 6 + 2 for every parameter.
    assert {float(s["step"]) for s in saved["optimizer"]["state"].values()} == {8.0}


def test_what_a_hugging_face_checkpoint_loads_is_the_trainer_s_model(tmp_path: Path) -> None:
    """The weights branch takes from checkpoint-6/ give, in the custom task's model, the eval loss
    the Trainer logged at step 6 on the same data: the model loaded is the one that was trained."""
    from runctl.engine.foreign import fit_weights, read_foreign
    from support.tasks import hf_tiny_tokens

    task = hf_tiny_tokens({})
    model = task.build_model().eval()
    checkpoint = read_foreign(HF_CHECKPOINT)
    model.load_state_dict(fit_weights(model, checkpoint))
    with torch.no_grad():
        losses = [float(task.loss(model, task.get_batch("val", torch.arange(i, i + 4)), {})) for i in range(0, 32, 4)]
    state = json.loads((HF_CHECKPOINT / "trainer_state.json").read_text())
    (logged,) = [e["eval_loss"] for e in state["log_history"] if e.get("step") == 6 and "eval_loss" in e]
    # The Trainer divides the summed token losses by every label of the batch (16 a sequence), where
    # the shifted loss predicts 15 of them: its eval_loss is the mean token loss times 15/16.
    assert sum(losses) / len(losses) * 15 / 16 == pytest.approx(logged, abs=1e-5)


def test_a_hugging_face_model_file_alone_is_a_weights_only_start(tmp_path: Path) -> None:
    config = tmp_path / "gpt2.yaml"
    config.write_text(HF_CONFIG)
    ckpt = HF_CHECKPOINT / "model.safetensors"
    result = branch(tmp_path, ckpt, "--name", "weights", "--config", str(config), "--no-start")
    assert result.returncode == 0, result.stderr
    assert "starting from the weights only (fresh optimizer, step 0): the checkpoint has no optimizer state" \
        in result.stderr
    parent = run_yaml(tmp_path / "runs" / "weights")["parent"]
    assert (parent["weights_only"], parent["weights_from"]) == (True, "model.safetensors")


@pytest.mark.parametrize("extra", [["--from", "latest"], []])
def test_bad_usage_is_one_line_exit_2(tmp_path: Path, extra: list[str]) -> None:
    ckpt = FOREIGN / "nanogpt" / "out-tiny" / "ckpt.pt"
    args = ["--name", "x", *extra] + (["--config", "char_gpt"] if extra else [])
    result = branch(tmp_path, ckpt, *args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
