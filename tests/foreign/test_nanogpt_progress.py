"""A nanoGPT run's progress in `runctl ls` and `runctl summary`: max_iters from ckpt.pt's config is
the last step, as a Hugging Face run's max_steps is; the log its stdout went to says how far the
run got between evaluations; ckpt.pt can hold at most the last evaluation up to max_iters.

The ckpt.pt of each case is the real fixture's dict (written by nanoGPT's own train.py) with
iter_num and config values changed, saved back as train.py saves it; the log is the real log cut
or continued with train.py's own line shape."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "foreign" / "nanogpt" / "out-tiny"
NAME = "out-tiny"


def nanogpt_run(root: Path, iter_num: int, max_iters: int, log_to: int | None,
                always_save_checkpoint: bool = True) -> Path:
    """The fixture with ckpt.pt at `iter_num` of `max_iters` (eval_interval 10 as written), and its
    train.log ending at `iter log_to` (None: no log)."""
    out = root / NAME
    shutil.copytree(FIXTURE, out)
    checkpoint = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert checkpoint["config"]["eval_interval"] == 10
    checkpoint["iter_num"] = iter_num
    checkpoint["config"].update(max_iters=max_iters, lr_decay_iters=max_iters,
                                always_save_checkpoint=always_save_checkpoint)
    torch.save(checkpoint, out / "ckpt.pt")
    log = out / "train.log"
    if log_to is None:
        log.unlink()
        return out
    lines = log.read_text().splitlines()
    kept = []
    for line in lines:
        if line.startswith("iter ") and int(line.split()[1].rstrip(":")) > log_to:
            break
        kept.append(line)
    last = max(int(line.split()[1].rstrip(":")) for line in kept if line.startswith("iter "))
    kept += [f"iter {it}: loss 3.4{it % 10}00, time 700.00ms, mfu 0.00%" for it in range(last + 1, log_to + 1)]
    log.write_text("\n".join(kept) + "\n")
    return out


def summary_of(root: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "runctl", "summary", str(root), "--json"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    return run


def ls_row(root: Path) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "runctl", "ls", str(root)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return next(line.split() for line in result.stdout.splitlines() if line.startswith(NAME))


@pytest.mark.parametrize("iter_num, max_iters, log_to, step, state", [
    (20, 20, 20, 20, "finished"),   # the fixture as train.py left it
    (20, 25, 25, 25, "finished"),   # iterations 21-25 ran after the last evaluation (20): logged, not saved
    (20, 25, 23, 23, "running"),    # still in those iterations: the log says where (just written)
    (20, 25, None, 20, "finished"),  # no log: ckpt.pt holds the last evaluation there is
    (10, 25, None, 10, "running"),  # no log, ckpt.pt short of it (just written)
])
def test_progress_and_state(tmp_path: Path, iter_num: int, max_iters: int, log_to: int | None, step: int,
                            state: str) -> None:
    nanogpt_run(tmp_path, iter_num, max_iters, log_to)
    run = summary_of(tmp_path)
    assert (run["step"], run["max_steps"], run["state"]) == (step, max_iters, state)
    assert (run["checkpoints_present"], run["checkpoints_expected"], run["missing_steps"]) == (1, 1, [])
    assert ls_row(tmp_path)[1:4] == ["nanogpt", state, f"{step}/{max_iters}"]


def test_a_finished_run_whose_ckpt_missed_the_last_evaluation(tmp_path: Path) -> None:
    nanogpt_run(tmp_path, iter_num=10, max_iters=25, log_to=25)
    run = summary_of(tmp_path)
    assert (run["step"], run["state"], run["missing_steps"]) == (25, "finished", [20])
    assert any("ckpt.pt holds iter 10, not the last evaluation's 20" in p for p in run["problems"])


def test_without_always_save_checkpoint_an_older_ckpt_is_the_best_one(tmp_path: Path) -> None:
    nanogpt_run(tmp_path, iter_num=10, max_iters=25, log_to=25, always_save_checkpoint=False)
    run = summary_of(tmp_path)
    assert (run["step"], run["state"], run["checkpoints_expected"], run["missing_steps"]) == (25, "finished", None, [])
