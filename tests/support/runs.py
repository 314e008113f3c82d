"""Run folders for the runs/ tests, written the way the engine writes them (real checkpoints with
manifest entries, on the real clock), and real runs made by the engine in this process."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from runctl.runs.atomic import atomic_write_json, atomic_write_text
from runctl.runs.layout import METRICS_JSONL, STATUS_JSON

from support.checkpoints import save_checkpoint
from support.cli import run_cli
from support.configs import TINY_MLP, set_args
from support.run_files import find_run_dir, status


def make_run(root: Path, name: str, *, state: str = "finished", step: int = 100, max_steps: int = 100,
             every: int = 50, keep_last: int | None = 3, checkpoint_steps: tuple[int, ...] = (50, 100),
             losses: tuple[float, ...] = (2.0, 1.5, 1.25), heartbeat_age: float = 0.0,
             error: str | None = None) -> Path:
    """A run folder as the engine leaves it, with real checkpoints at `checkpoint_steps`."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {"run_id": name, "name": name, "created_at": time.time() - 3600, "parent": None,
              "max_steps": max_steps, "task": "digits_mlp",
              "checkpoint": {"every": every, "keep_last": keep_last, "keep_best": True, "async": True},
              "eval": {"every": 50, "batches": 2, "metric": "val/loss", "mode": "min"}}
    atomic_write_text(run_dir / "run.yaml", json.dumps(config))  # JSON is valid YAML
    now = time.time()
    atomic_write_json(run_dir / STATUS_JSON, {
        "state": state, "pid": 1, "host": "h", "step": step, "max_steps": max_steps,
        "heartbeat_at": now - heartbeat_age, "started_at": now - 3600, "updated_at": now - heartbeat_age,
        "world_size": 1, "error": error, "checkpoint": None})
    with open(run_dir / METRICS_JSONL, "w") as f:
        for i, loss in enumerate(losses):
            f.write(json.dumps({"step": (i + 1) * 10, "time": now, "train/loss": loss, "lr": 1e-3}) + "\n")
        f.write(json.dumps({"step": len(losses) * 10, "time": now, "val/loss": 1.75, "val/acc": 0.5}) + "\n")
    for ckpt_step in checkpoint_steps:
        kind = "final" if state == "finished" and ckpt_step == max_steps else "periodic"
        save_checkpoint(run_dir, ckpt_step, kind)
    return run_dir


def engine_run(root: Path, name: str, max_steps: int = 30, *, stopped_at_first_step: bool = False,
               finished: bool = False, checkpoint_every: int = 10, heavy_steps: bool = False) -> Path:
    """A real run made by the engine on CPU: created only, stopped after step 1, or finished.

    heavy_steps: bigger matrices, so a step spends its time in torch kernels (which release the
    GIL) rather than in Python, and a long in-process run leaves the UI thread room to work.
    """
    from runctl.engine import api
    from runctl.engine.control import Control

    size = ["model.hidden=512", "model.depth=2", "data.batch_size=256", "log.every=50"] if heavy_steps \
        else ["model.hidden=16", "model.depth=1", "data.batch_size=32", "log.every=5"]
    run_dir = Path(api.new_run("digits_mlp", root=root, name=name, overrides=[
        f"max_steps={max_steps}", *size, "eval.every=10", "eval.batches=2",
        f"checkpoint.every={checkpoint_every}", "checkpoint.async=false", "schedule.warmup_steps=2",
        "device=cpu"]))
    if stopped_at_first_step:
        control = Control()
        control.request_stop()  # honoured at the first step boundary: a checkpoint at step 1
        api.train(run_dir, control, resume_from=None)
    elif finished:
        api.train(run_dir, resume_from=None)
    return run_dir


def train_finished_run(tmp: Path, sets: Sequence[str], timeout: float = 240.0) -> Path:
    """`runctl train digits_mlp --name base` under tmp/runs with TINY_MLP and `sets` (KEY=VALUE),
    to its end; the run's folder."""
    done = run_cli(["train", "digits_mlp", "--root", tmp / "runs", "--name", "base", *set_args([*TINY_MLP, *sets])],
                   cwd=tmp, timeout=timeout)
    assert done.returncode == 0, done.stderr
    run_dir = find_run_dir(tmp / "runs")
    assert run_dir is not None and status(run_dir)["state"] == "finished"
    return run_dir
