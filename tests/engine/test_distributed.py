"""`runctl train --nproc 2` on CPU: torchrun + gloo, rank 0 writes, data sharded from one sampler,
signals relayed once to every rank, and a two-rank checkpoint resumed by one process."""

from __future__ import annotations

import signal
from pathlib import Path

import torch
from runctl.engine import api
from support.checkpoints import final_checkpoint
from support.cli import cli_env, runctl_here, start_runctl
from support.configs import set_args, task_sets
from support.run_files import events, manifest_files, read_jsonl, status
from support.waiting import wait_for

SETS = task_sets(max_steps=30, checkpoint_every=100)




def test_two_ranks_train_like_one_stop_on_a_signal_and_resume_in_one_process(
        tmp_path: Path) -> None:
    args = ["train", "digits_mlp", "--root", tmp_path, "--name", "ddp", "--nproc", "2",
            *set_args(SETS)]
    launcher = start_runctl(args, tmp_path, env=cli_env({"TEST_TASK_STEP_SLEEP": "0.05"}))
    run_dir = tmp_path / "ddp"

    single = api.new_run("digits_mlp", tmp_path, name="single", overrides=SETS)
    assert api.train(single).state == "finished"  # the reference, while the ranks start up

    wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 5, 120, "five steps on two ranks")
    assert status(run_dir)["world_size"] == 2
    launcher.send_signal(signal.SIGTERM)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 128 + signal.SIGTERM, err
    st = status(run_dir)
    assert st["state"] == "interrupted" and 5 <= st["step"] < 30
    assert manifest_files(run_dir)[f"step_{st['step']:08d}.pt"]["kind"] == "interrupt"
    assert len(events(run_dir, "interrupted")) == 1 and len(events(run_dir, "started")) == 1
    steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, st["step"] + 1))  # rank 0 alone logs
    interrupted = final_checkpoint(run_dir, st["step"])
    assert interrupted["data"]["world_size"] == 2

    assert runctl_here(["resume", run_dir]) == 0  # one process, in this one
    assert status(run_dir)["world_size"] == 1
    # Each rank took half of the same global batch: equal to one process up to float rounding.
    ddp_final, single_final = final_checkpoint(run_dir, 30), final_checkpoint(single, 30)
    assert ddp_final["data"]["position"] == single_final["data"]["position"]
    for key, value in single_final["model"].items():
        torch.testing.assert_close(ddp_final["model"][key], value, rtol=1e-4, atol=1e-5)


def test_one_rank_crashing_ends_the_run_crashed_and_names_the_rank_and_its_error(tmp_path: Path) -> None:
    args = ["train", "digits_mlp", "--root", tmp_path, "--name", "ddp", "--nproc", "2",
            *set_args(SETS), "--set", "checkpoint.every=5"]
    launcher = start_runctl(args, tmp_path, env=cli_env({"TEST_TASK_CRASH_RANK_AT": "1:8"}))
    out, err = launcher.communicate(timeout=180)
    assert launcher.returncode == 1, err
    assert "rank 1 crashed at step 7: RuntimeError: rank 1 poisoned at its loss call 8" in err
    st = status(tmp_path / "ddp")
    assert st["state"] == "crashed" and st["step"] == 7
    assert "step_00000005.pt" in manifest_files(tmp_path / "ddp")
