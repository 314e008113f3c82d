"""Shared by the training tests: tiny configs per built-in task family, and checkpoint comparison."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
RUNCTL = [sys.executable, "-m", "runctl"]

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


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a busy 2-core box: one intra-op thread is many times faster than two that
    spin against other processes (and the subprocesses get OMP_NUM_THREADS=1 likewise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def overrides(family: str, *extra: str) -> list[str]:
    return [*FAMILIES[family], *COMMON, *extra]


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.pop("RUNCTL_TEST_SLOW_WRITE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    if extra:
        env.update(extra)
    return env


def runctl(args: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNCTL, *map(str, args)], cwd=cwd, env=env or subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def runctl_here(args: Sequence[str | Path]) -> int:
    """`runctl ARGS` in this process (the same code path, without paying a Python + torch start-up):
    for the second half of tests whose first half ran in a subprocess."""
    from runctl.tui.cli import main

    return main([str(arg) for arg in args])


def start_runctl(args: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None,
                 stderr_file: Path | None = None) -> subprocess.Popen[str]:
    """`runctl ARGS` in the background; stderr to `stderr_file` when the test must watch it live."""
    stderr = open(stderr_file, "w") if stderr_file is not None else subprocess.PIPE
    try:
        return subprocess.Popen([*RUNCTL, *map(str, args)], cwd=cwd, env=env or subprocess_env(),
                                stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    finally:
        if stderr_file is not None:
            stderr.close()


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events(run_dir: Path, name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if name is None or e["event"] == name]


def status(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "status.json").read_text())


def manifest_files(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / "checkpoints" / "manifest.json"
    return json.loads(path.read_text())["files"] if path.exists() else {}


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def final_checkpoint(run_dir: Path, step: int) -> dict[str, Any]:
    path = run_dir / "checkpoints" / f"step_{step:08d}.pt"
    assert path.is_file(), f"{path} missing; have {sorted(p.name for p in path.parent.glob('*'))}"
    return load(path)


def tensors_of(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested state, by path."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        found[prefix] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            found.update(tensors_of(value, f"{prefix}/{key}"))
    elif isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            found.update(tensors_of(value, f"{prefix}/{index}"))
    return found


def assert_bit_identical(a: dict[str, Any], b: dict[str, Any], keys: Sequence[str] = ("model", "optimizer", "ema")) -> None:
    """Weights, optimizer state (and EMA) equal to the last bit."""
    assert a["step"] == b["step"]
    for key in keys:
        assert (key in a) == (key in b), key
        if key not in a:
            continue
        left, right = tensors_of(a[key]), tensors_of(b[key])
        assert left.keys() == right.keys(), key
        assert left, f"no tensors under {key}"
        differing = [name for name in left if not torch.equal(left[name], right[name])]
        assert not differing, f"{key}: {len(differing)} tensors differ, e.g. {differing[:3]}"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
