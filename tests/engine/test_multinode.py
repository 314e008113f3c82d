"""`runctl train --nnodes 2 --node-rank K --rdzv HOST:PORT` on one machine: two launchers join one
c10d rendezvous on the loopback (gloo on CPU) and train one run as two nodes; every rank beats its
ranks/<rank>.json, a rank that stops beating is named in status.json and the UI's summary, a stop
from the control folder reaches both nodes, and the run resumes as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from runctl.engine import api
from runctl.runs.discovery import summarize
from support.checkpoints import final_checkpoint
from support.cli import cli_env, end_process, free_port, run_cli, runctl_here, start_runctl
from support.configs import set_args, task_sets
from support.run_files import events, read_jsonl, status
from support.waiting import wait_for

SETS = task_sets(max_steps=400, checkpoint_every=100)



def start_two_nodes(tmp_path: Path) -> list[subprocess.Popen[str]]:
    """The launchers of nodes 0 and 1 of the run `two`, meeting at a rendezvous on the loopback;
    each step sleeps 0.1 s, so the run is still training when the test acts on it."""
    rdzv = f"127.0.0.1:{free_port()}"
    env = cli_env({"TEST_TASK_STEP_SLEEP": "0.1"})
    return [start_runctl(["train", "digits_mlp", "--root", tmp_path, "--name", "two", *set_args(SETS),
                          "--nnodes", "2", "--node-rank", str(node), "--rdzv", rdzv], tmp_path, env=env)
            for node in (0, 1)]


def test_two_launchers_train_one_run_as_two_nodes_a_silent_rank_is_named_and_one_process_resumes(
        tmp_path: Path) -> None:
    launchers = start_two_nodes(tmp_path)
    run_dir = tmp_path / "two"
    try:
        single = api.new_run("digits_mlp", tmp_path, name="single", overrides=SETS)
        assert api.train(single).state == "finished"  # the reference, while the nodes meet

        wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 3, 180, "three steps on two nodes")
        st = status(run_dir)
        assert st["world_size"] == 2 and st["nodes"] == 2 and st["silent_ranks"] == []
        beats = {rank: json.loads((run_dir / "ranks" / f"{rank}.json").read_text()) for rank in (0, 1)}
        assert {b["node"] for b in beats.values()} == {0, 1} and beats[0]["pid"] == st["pid"]

        # A rank that hangs (its whole process stopped, as on a frozen machine) stops beating;
        # rank 0 waits for it in the next all-reduce but keeps beating and names it.
        os.kill(beats[1]["pid"], signal.SIGSTOP)
        try:
            silent = wait_for(lambda: status(run_dir)["silent_ranks"], 60, "rank 1 named silent")
            assert [s["rank"] for s in silent] == [1] and silent[0]["node"] == beats[1]["node"]
            summary = summarize(run_dir)
            assert summary.state == "running" and summary.nodes == 2
            assert summary.silent_ranks and summary.silent_ranks[0].startswith("rank 1 on ")
        finally:
            os.kill(beats[1]["pid"], signal.SIGCONT)
        wait_for(lambda: status(run_dir)["silent_ranks"] == [], 60, "rank 1 beating again")

        stop = run_cli(["stop", run_dir], tmp_path)  # the control folder: rank 0 reads it, every rank stops
        assert stop.returncode == 0, stop.stderr
        for launcher in launchers:
            out, err = launcher.communicate(timeout=120)
            assert launcher.returncode == 0, err
    finally:
        for launcher in launchers:
            end_process(launcher)
    st = status(run_dir)
    assert st["state"] == "stopped" and 3 <= st["step"] < 400
    assert [e["world_size"] for e in events(run_dir, "started")] == [2]
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, st["step"] + 1))
    assert {json.loads((run_dir / "ranks" / f"{r}.json").read_text())["state"] for r in (0, 1)} == {"stopped"}
    assert final_checkpoint(run_dir, st["step"])["data"]["world_size"] == 2

    assert runctl_here(["resume", run_dir]) == 0  # one process on one node
    st = status(run_dir)
    assert st["state"] == "finished" and st["world_size"] == 1 and st["nodes"] == 1
    # Each node took half of the same global batch: one process up to the reduction's rounding.
    two_nodes, one = final_checkpoint(run_dir, 400), final_checkpoint(single, 400)
    assert two_nodes["data"]["position"] == one["data"]["position"]
    for key, value in one["model"].items():
        torch.testing.assert_close(two_nodes["model"][key], value, rtol=1e-4, atol=1e-5)


def test_a_signal_to_one_nodes_runctl_interrupts_every_rank_and_the_other_node_does_not_hang(tmp_path: Path) -> None:
    launchers = start_two_nodes(tmp_path)
    run_dir = tmp_path / "two"
    try:
        wait_for(lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 3, 180, "three steps on two nodes")
        launchers[1].send_signal(signal.SIGTERM)  # Ctrl-C, an SSH drop or SLURM's SIGTERM on one node
        # The other node's torchrun agent would wait 300 s in torch's exit barrier for the
        # signalled one; its runctl ends that wait once the run has ended.
        results = [launcher.communicate(timeout=120) for launcher in launchers]
    finally:
        for launcher in launchers:
            end_process(launcher)
    assert launchers[1].returncode == 128 + signal.SIGTERM, results[1][1]
    assert launchers[0].returncode == 1 and "the run ended interrupted at step" in results[0][1], results[0][1]
    st = status(run_dir)
    assert st["state"] == "interrupted" and 3 <= st["step"] < 400
    assert final_checkpoint(run_dir, st["step"])["data"]["world_size"] == 2
    assert [e["signal"] for e in events(run_dir, "interrupted")] == ["SIGTERM"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--nnodes", "2", "--name", "x"], "--nnodes 2: needs --rdzv HOST:PORT"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv", "h:1", "--name", "x"], "--node-rank 2: must be 0 to 1"),
    (["--nnodes", "2", "--rdzv", "no-port", "--name", "x"], "--rdzv no-port: expected HOST:PORT"),
    (["--nnodes", "2", "--rdzv", "h:29500"], "--nnodes 2: give the run a --name"),
    (["--rdzv", "h:29500"], "--rdzv: only for a run on many machines"),
])
def test_bad_launch_flags_are_one_line_and_exit_2_with_nothing_created(
        tmp_path: Path, flags: list[str], message: str) -> None:
    result = run_cli(["train", "digits_mlp", "--root", tmp_path / "root", *flags], tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "root").exists()
