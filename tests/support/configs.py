"""Configs for the tests: tiny settings per built-in task family, configs of the test task
(support.tasks), and `--set` arguments."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

TEST_TASK = "support.tasks:factory"

# Small enough that a run of 30 steps takes well under a second per family on a CPU.
FAMILIES: dict[str, list[str]] = {
    "digits_mlp": ["model.hidden=16", "model.depth=1"],
    "digits_cnn": ["model.channels=4", "model.depth=1"],
    "digits_vit": ["model.dim=16", "model.depth=1", "model.heads=2"],
    "char_gpt": ["model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.block_size=16",
                 "model.dropout=0.1"],  # dropout: the torch RNG matters for exactness
}
COMMON = ["data.batch_size=16", "max_steps=30", "log.every=5", "eval.every=10", "eval.batches=2",
          "checkpoint.every=10", "schedule.warmup_steps=5"]

# Small, quick digits_mlp settings (hidden 16: a checkpoint is ~20 kB).
TINY_MLP = ["model.hidden=16", "model.depth=1", "data.batch_size=32", "log.every=1",
            "schedule.warmup_steps=5"]


def overrides(family: str, *extra: str) -> list[str]:
    """The tiny settings of a built-in family, then `extra`."""
    return [*FAMILIES[family], *COMMON, *extra]


def set_args(values: Iterable[str]) -> list[str]:
    """["a=1", "b=2"] -> ["--set", "a=1", "--set", "b=2"]."""
    return [arg for value in values for arg in ("--set", value)]


def task_sets(*, max_steps: int, checkpoint_every: int, eval_every: int = 100) -> list[str]:
    """`--set` values that turn `runctl train digits_mlp` into a run of the test task on the CPU,
    one metrics line a step (for the multi-process tests: torchrun, nodes, FSDP)."""
    return [f"task={TEST_TASK}", "model={}", f"max_steps={max_steps}", f"checkpoint.every={checkpoint_every}",
            "log.every=1", f"eval.every={eval_every}", "eval.batches=2", "data.batch_size=16",
            "schedule.warmup_steps=5", "device=cpu"]


def tiny_config(max_steps: int = 40, **sections: Any) -> dict[str, Any]:
    """A resolved digits_mlp config small enough to train in about a second on CPU."""
    from runctl.engine.config import load_config

    cfg = load_config("digits_mlp", [
        f"max_steps={max_steps}", "model.hidden=16", "model.depth=1", "data.batch_size=32",
        "log.every=5", "eval.every=20", "eval.batches=2", "checkpoint.every=10", "checkpoint.async=false",
        "schedule.warmup_steps=2",
    ])
    for key, value in sections.items():
        cfg[key] = value
    return cfg


def write_yaml(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def write_tiny_config(path: Path, max_steps: int = 40) -> Path:
    """The tiny config as a YAML file a user could pass to `n` or `runctl train`."""
    return write_yaml(path, tiny_config(max_steps))


def write_task_config(path: Path, *, max_steps: int, step_sleep: float = 0.0, crash_at: int | None = None,
                      checkpoint_every: int = 10**6, log_every: int = 1, eval_every: int = 10**6,
                      keep_last: int = 5, checkpoint_async: bool = False) -> Path:
    """A config of the test task on synthetic data (quick to start) for the UI and terminal tests:
    each step sleeps `step_sleep` s, and the loss raises from step `crash_at` on."""
    cfg: dict[str, Any] = {
        "task": TEST_TASK, "seed": 0, "max_steps": max_steps,
        "model": {"data": "synthetic", "step_sleep": step_sleep}, "data": {"batch_size": 32},
        "log": {"every": log_every}, "eval": {"every": eval_every, "batches": 1},
        "checkpoint": {"every": checkpoint_every, "keep_last": keep_last, "keep_best": False,
                       "async": checkpoint_async},
        "schedule": {"name": "constant", "warmup_steps": 0},
        "loss": {"crash": 0},
    }
    if crash_at is not None:
        cfg["curriculum"] = [{"at_step": crash_at, "set": {"loss.crash": 1}}]
    return write_yaml(path, cfg)



def slow_root_and_config(tmp_path: Path) -> tuple[Path, Path]:
    """An empty runs root and an endless, sleep-paced test-task config beside it: a run the UI
    tests start, checkpoint, stop and resume while it is still training."""
    root = tmp_path / "runs"
    root.mkdir()
    return root, write_task_config(tmp_path / "slow.yaml", max_steps=100000, step_sleep=0.01)


def slow_made_run(tmp_path: Path, name: str = "made") -> tuple[Path, Path]:
    """(root, run folder) of a created, not yet started run of `slow_root_and_config`'s config."""
    from runctl.engine import api

    root, config = slow_root_and_config(tmp_path)
    return root, api.new_run(str(config), root=root, name=name)

def write_hang_config(path: Path, *, max_steps: int, checkpoint_every: int,
                      stall: dict[str, float] | None = None, **model: Any) -> Path:
    """A config of the test task on the digits whose `model` knobs (hang_at, release, nan_at,
    hang_rank) make a step hang or fail; `stall` sets the stall threshold and grace period."""
    cfg: dict[str, Any] = {
        "task": TEST_TASK, "device": "cpu", "max_steps": max_steps, "model": model,
        "data": {"batch_size": 32}, "schedule": {"warmup_steps": 1}, "log": {"every": 1},
        "eval": {"every": 100, "batches": 2}, "checkpoint": {"every": checkpoint_every},
    }
    if stall is not None:
        cfg["stall"] = stall
    return write_yaml(path, cfg)
