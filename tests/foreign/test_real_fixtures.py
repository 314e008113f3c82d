"""Discovery, checkpoint records and metrics on the files the real tools wrote (tests/fixtures/foreign:
Lightning's ModelCheckpoint + CSVLogger, the Hugging Face Trainer, torch's SummaryWriter, nanoGPT's
train.py, plain scripts), and no byte written by reading them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trees
from runctl.runs.discovery import find_runs, metrics_reader, run_checkpoints

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("real") / "foreign"
    shutil.copytree(FIXTURES, copy, symlinks=True)
    return copy


def test_every_run_the_tools_wrote_is_found_with_its_layout(root: Path) -> None:
    before = trees.tree_state(root)
    runs = {run.name: run for run in find_runs(root)}
    assert {name: run.layout for name, run in runs.items()} == {
        "hf/out": "hf-trainer", "hf_bin/out": "hf-trainer", "hf/sharded": "plain",
        "lightning/lightning_logs/version_0": "lightning", "nanogpt/out-tiny": "nanogpt",
        "plain/checkpoints/cnn_deep_mnist": "plain", "plain/checkpoints/mlp_narrow_mnist": "plain",
        "plain/checkpoints_optimized": "plain", "plain/logs/691bd736-d91a-48bf-a7a9-4b17d3ec0733": "plain",
        "plain/logs/old-run": "plain", "plain/weights": "plain",
        "tensorboard/runs/Dec03_18-19-31_vm": "tensorboard"}
    hf = runs["hf/out"]
    assert (hf.step, hf.max_steps, hf.checkpoints, hf.state) == (6, 6, 3, "finished")
    nano = runs["nanogpt/out-tiny"]
    assert (nano.step, nano.max_steps, nano.state) == (20, 20, "finished")
    assert nano.best["metric"] == "val/loss" and 0 < nano.best["value"] < 10
    lightning = runs["lightning/lightning_logs/version_0"]
    assert (lightning.step, lightning.checkpoints) == (16, 2)  # last.ckpt is epoch=1-step=16 again
    assert runs["plain/checkpoints/mlp_narrow_mnist"].step == 2000
    assert trees.tree_state(root) == before


def test_steps_roles_and_copies_of_the_real_files(root: Path) -> None:
    lightning = {i.name: i for i in run_checkpoints(root / "lightning/lightning_logs/version_0", "quick")}
    assert lightning["checkpoints/last.ckpt"].copy_of == "checkpoints/epoch=1-step=16.ckpt"
    assert lightning["checkpoints/last.ckpt"].step == 16
    assert lightning["checkpoints/epoch=1-step=12.ckpt"].step == 12
    hf = {i.name: i.step for i in run_checkpoints(root / "hf/out", None)}
    assert {name for name in hf if name.startswith("checkpoint-6/")} == {
        "checkpoint-6/model.safetensors", "checkpoint-6/optimizer.pt", "checkpoint-6/scheduler.pt",
        "checkpoint-6/rng_state.pth", "checkpoint-6/training_args.bin"}
    assert hf["checkpoint-2/optimizer.pt"] == 2
    assert "checkpoint-6/pytorch_model.bin" in {i.name for i in run_checkpoints(root / "hf_bin/out", None)}
    plain = {i.name: (i.step, i.kind) for i in run_checkpoints(root / "plain/checkpoints_optimized", "quick")}
    assert plain["best_model.pt"][1] == "best" and plain["final_model.pt"][1] == "final"
    assert plain["checkpoint_step_5000.pt"] == (5000, None)
    assert [(i.name, i.step) for i in run_checkpoints(root / "nanogpt/out-tiny", None)] == [("ckpt.pt", 20)]


def _ls_row(root: Path, name: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "runctl", "ls", str(root)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return next(line.split() for line in result.stdout.splitlines() if line.split()[0] == name)


@pytest.mark.parametrize("last", ["copy", "link", "rotated"])
def test_lightning_last_ckpt_counts_once(tmp_path: Path, last: str) -> None:
    """ModelCheckpoint(save_last=True) writes last.ckpt as a copy of the newest epoch=E-step=S file
    (the real fixture), save_last="link" as a symlink to it; when save_top_k rotated that file out,
    last.ckpt is the only one of its step and a checkpoint of its own."""
    run = tmp_path / "root" / "lightning_logs" / "version_0"
    shutil.copytree(FIXTURES / "lightning" / "lightning_logs" / "version_0", run, symlinks=True)
    checkpoints = run / "checkpoints"
    size = (checkpoints / "last.ckpt").stat().st_size
    if last == "link":
        (checkpoints / "last.ckpt").unlink()
        (checkpoints / "last.ckpt").symlink_to("epoch=1-step=16.ckpt")
    elif last == "rotated":
        (checkpoints / "epoch=1-step=16.ckpt").unlink()
    count, total = {"copy": (2, 3 * size), "link": (2, 2 * size), "rotated": (2, 2 * size)}[last]
    (summary,) = find_runs(tmp_path / "root")
    assert (summary.checkpoints, summary.checkpoint_bytes, summary.step) == (count, total, 16)
    assert _ls_row(tmp_path / "root", "lightning_logs/version_0")[5] == str(count)
    records = {i.name: i for i in run_checkpoints(run, None)}
    assert (records["checkpoints/last.ckpt"].kind, records["checkpoints/last.ckpt"].step) == ("last", 16)
    listed = subprocess.run([sys.executable, "-m", "runctl", "verify", "--quick", str(run)], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if "checkpoints/last.ckpt" in line]
    if last == "rotated":
        assert "copy of" not in row
    else:
        assert "last (copy of checkpoints/epoch=1-step=16.ckpt)" in row


@pytest.mark.parametrize("run, train, val, lr", [
    ("hf/out", 6, 2, 6),                                   # trainer_state.json log_history
    ("lightning/lightning_logs/version_0", 8, 4, 0),       # metrics.csv
    ("nanogpt/out-tiny", 21, 3, 0),                        # train.log: iter N / step N lines
    ("tensorboard/runs/Dec03_18-19-31_vm", 10, 3, 10),     # events via tensorboard's reader
])
def test_each_tool_s_own_records_plot(root: Path, run: str, train: int, val: int, lr: int) -> None:
    reader = metrics_reader(root / run)
    reader.poll()
    counts = tuple(len(reader.series(name)[0]) for name in ("train/loss", "val/loss", "lr"))
    assert counts == (train, val, lr)
    steps, values = reader.series("train/loss")
    assert (steps[1:] > steps[:-1]).all() and all(0 < v < 100 for v in values)


def test_the_trainer_s_printed_dicts_are_not_numbered_by_print_order(tmp_path: Path) -> None:
    """The real Trainer's stdout (hf/out/train.log) beside checkpoint files in a plain folder: its
    dicts carry no step (Trainer.log prints `logs`, the step goes to log_history only), so none is
    plotted; numbered in print order, the two eval dicts would sit at steps 1 and 2. The same run's
    trainer_state.json places them where the Trainer logged them: eval_loss at steps 3 and 6."""
    hf = FIXTURES / "hf" / "out"
    folder = tmp_path / "script-out"
    folder.mkdir()
    shutil.copyfile(hf / "train.log", folder / "train.log")
    shutil.copyfile(hf / "checkpoint-6" / "model.safetensors", folder / "model.safetensors")
    printed = [line for line in (folder / "train.log").read_text().splitlines() if line.startswith("{")]
    assert sum("'eval_loss'" in line for line in printed) == 2 and not any("'step'" in line for line in printed)
    (run,) = find_runs(tmp_path)
    assert run.layout == "plain"
    reader = metrics_reader(folder)
    reader.poll()
    assert reader.names() == [] and reader.unplaced > 0
    assert len(reader.series("val/loss")[0]) == len(reader.series("train/loss")[0]) == 0
    state = metrics_reader(hf)
    state.poll()
    assert list(state.series("val/loss")[0]) == [3, 6]
    assert list(state.series("train/loss")[0]) == [1, 2, 3, 4, 5, 6]
