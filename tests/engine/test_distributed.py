"""`runctl train --nproc 2` on CPU: torchrun + gloo, rank 0 writes, data sharded from one sampler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from training_helpers import events, final_checkpoint, one_torch_thread, overrides, read_jsonl, runctl, status

from engine import api

SETS = overrides("digits_mlp", "max_steps=20", "device=cpu")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def test_two_processes_train_like_one_and_write_once(tmp_path: Path) -> None:
    result = runctl(["train", "digits_mlp", "--root", tmp_path, "--name", "ddp", "--nproc", "2",
                     *[a for s in SETS for a in ("--set", s)]], tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "ddp"
    assert status(run_dir)["world_size"] == 2 and status(run_dir)["state"] == "finished"
    assert len(events(run_dir, "started")) == 1 and events(run_dir, "started")[0]["world_size"] == 2
    train_steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in m]
    assert train_steps == [5, 10, 15, 20]  # rank 0 alone logs
    ddp_final = final_checkpoint(run_dir, 20)
    assert ddp_final["data"]["world_size"] == 2

    # Each rank takes half of the same global batch: the run matches a single process up to rounding.
    single = api.new_run("digits_mlp", tmp_path, name="single", overrides=SETS)
    assert api.train(single).state == "finished"
    single_final = final_checkpoint(single, 20)
    assert ddp_final["data"]["position"] == single_final["data"]["position"]
    for key, value in single_final["model"].items():
        torch.testing.assert_close(ddp_final["model"][key], value, rtol=1e-4, atol=1e-5)

    # A checkpoint written by two ranks continues in one process.
    extended = runctl(["extend", run_dir, "--steps", "5"], tmp_path)
    assert extended.returncode == 0, extended.stderr
    assert status(run_dir)["world_size"] == 1 and final_checkpoint(run_dir, 25)["step"] == 25
