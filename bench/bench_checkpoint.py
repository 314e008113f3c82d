"""Checkpoint cost on the training thread, and resume time with a large checkpoint.

    python bench/bench_checkpoint.py [--quick]

Figures (one row each: name, runctl, baseline, ratio, target, met):
- stall: how long one async checkpoint blocks the training thread, with a real model and AdamW
  whose state (weights + two moments) is 256 MiB and 1 GiB (--quick: 64 MiB and 256 MiB):
  `CheckpointManager.save()` plus the wait in the next step's fence (wait_for_staging, before the
  optimizer step; the writer thread copies the weights and moments while that step's forward and
  backward run). Baselines in the same run: a synchronous `torch.save` + fsync of the same state
  (target ratio <= 0.10), and a plain clone of every tensor of the state, the copy any snapshot
  must make (target ratio <= 2.0). For information: how much slower that next step is, because on
  a CPU machine the writer's copy, pickling and hashing compete with training for the cores (on a
  GPU machine the step runs on the device). The background write is waited for (untimed) before
  the baselines and the next repetition.
- resume: `runctl resume RUN` (a fresh process with an empty verification cache: interpreter,
  imports, full verification of the checkpoint - CRC of every zip record + sha256 against the
  manifest, on a thread while the model is built - then torch.load, load_state_dict, one training
  step) until the first step's metrics line is in metrics.jsonl, with a ~1 GiB
  checkpoint (--quick: ~256 MiB). Baseline: a hand-written resume in a fresh process - import
  torch, build the same model and optimizer, `torch.load(weights_only=True)` +
  `load_state_dict` of the same file, one training step. Target ratio <= 1.3. For information:
  the bare torch.load + load_state_dict alone, in process.
Page cache warm for every side (the file is read once before timing).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from runctl.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointManager  # noqa: E402
from runctl.runs.layout import METRICS_JSONL  # noqa: E402

MIB = 1 << 20
STALL_VS_SYNC_TARGET = 0.10
STALL_VS_CLONE_TARGET = 2.0
RESUME_TARGET = 1.3


class TrainingSetup:
    """A real model and AdamW whose checkpoint state (weights + two moments) is ~total_bytes."""

    def __init__(self, total_bytes: int, depth: int = 4, batch: int = 64) -> None:
        width = int((total_bytes / 12 / depth) ** 0.5)
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for _ in range(depth):
            layers += [torch.nn.Linear(width, width, bias=False), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1])
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x = torch.randn(batch, width)
        self.step_count = 0
        self.step(fence=None)  # creates the AdamW moments: the state is now full size

    def step(self, fence: Any) -> None:
        loss = self.model(self.x).square().mean()
        loss.backward()
        if fence is not None:
            fence()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1

    def state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "run_id": "bench", "step": self.step_count, "config": {"seed": 0},
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()}, "data": {"epoch": 0, "position": 0},
        }

    def deferrable(self) -> set[int]:
        """What the trainer lets the manager copy late: weights and moments (Trainer._written_only_by_the_update)."""
        tensors = [*self.model.parameters()]
        for per_param in self.optimizer.state.values():
            tensors.extend(v for v in per_param.values() if isinstance(v, torch.Tensor))
        return {t.untyped_storage().data_ptr() for t in tensors}


def state_bytes(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(state_bytes(v) for v in state)
    return 0


def clone_state(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: clone_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [clone_state(v) for v in state]
    return state


def sync_save(state: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_stall(tmp: Path, total_bytes: int, repeats: int) -> list[dict]:
    """The stall is the time the training thread is blocked by a checkpoint: save() plus the wait
    in the next step's fence (CheckpointManager.wait_for_staging, before the optimizer step)."""
    setup = TrainingSetup(total_bytes)
    mib = state_bytes(setup.state()) / MIB
    run_dir = tmp / f"stall-{int(mib)}"
    run_dir.mkdir()
    manager = CheckpointManager(run_dir, "bench", {"every": 1, "keep_last": 1, "keep_best": False, "async": True})
    stalls, syncs, clones, writes, plains, slowdowns = [], [], [], [], [], []
    fenced: list[float] = []

    def fence() -> None:
        started = time.perf_counter()
        manager.wait_for_staging()
        fenced.append(time.perf_counter() - started)

    try:
        for _ in range(repeats):
            gc.collect()
            plain = statistics.median(timed(lambda: setup.step(manager.wait_for_staging)) for _ in range(3))
            plains.append(plain)
            started = time.perf_counter()
            manager.save(setup.state(), setup.step_count, "periodic", defer=setup.deferrable())
            saved = time.perf_counter()
            setup.step(fence)
            stepped = time.perf_counter()
            stalls.append(saved - started + fenced[-1])
            slowdowns.append(stepped - saved - fenced[-1] - plain)
            manager.wait()
            writes.append(time.perf_counter() - started)
            state, path = setup.state(), tmp / "sync.pt"
            started = time.perf_counter()
            sync_save(state, path)
            syncs.append(time.perf_counter() - started)
            path.unlink()
            started = time.perf_counter()
            copy = clone_state(state)
            clones.append(time.perf_counter() - started)
            del state, copy
    finally:
        manager.close()
    stall, sync, clone = (statistics.median(v) * 1e3 for v in (stalls, syncs, clones))
    label = f"async checkpoint: training thread blocked, {mib:.0f} MiB state ({repeats} reps, median)"
    return [
        {"name": f"{label} vs torch.save + fsync", "runctl": stall, "baseline": sync, "ratio": stall / sync,
         "target": f"<= {STALL_VS_SYNC_TARGET}", "met": stall / sync <= STALL_VS_SYNC_TARGET, "unit": "ms"},
        {"name": f"{label} vs clone of the state", "runctl": stall, "baseline": clone, "ratio": stall / clone,
         "target": f"<= {STALL_VS_CLONE_TARGET}", "met": stall / clone <= STALL_VS_CLONE_TARGET, "unit": "ms"},
        {"name": f"the step after save(), {mib:.0f} MiB: slower by (the writer's copy, pickling and hashing "
                 "compete for the CPU cores) vs a plain step (info)",
         "runctl": statistics.median(slowdowns) * 1e3, "baseline": statistics.median(plains) * 1e3,
         "ratio": statistics.median(slowdowns) / statistics.median(plains), "target": "info", "met": True,
         "unit": "ms"},
        {"name": f"async checkpoint, {mib:.0f} MiB: save() until durable, a training step included (info)",
         "runctl": statistics.median(writes) * 1e3, "baseline": sync, "ratio": statistics.median(writes) * 1e3 / sync,
         "target": "info", "met": True, "unit": "ms"},
    ]


# -------------------------------------------------------------------- resume

def _mlp_hidden_for(total_bytes: int, depth: int) -> int:
    """digits_mlp hidden width whose checkpoint (weights + 2 AdamW moments, 12 bytes/param) is ~total_bytes."""
    params = total_bytes / 12
    return int((params / (depth - 1)) ** 0.5)


def make_resume_run(root: Path, total_bytes: int) -> tuple[Path, Path, list[str]]:
    """A digits_mlp run trained 1 step (its final checkpoint is ~total_bytes), extended by 1 step."""
    from runctl.engine.api import extend_run, new_run, train

    depth = 4
    overrides = [f"model.hidden={_mlp_hidden_for(total_bytes, depth)}", f"model.depth={depth}",
                 "data.batch_size=16", "max_steps=1", "log.every=1", "eval.every=1000", "eval.batches=1",
                 "schedule.warmup_steps=1", "checkpoint.every=1000"]
    run_dir = new_run("digits_mlp", root=root, name="resume-big", overrides=overrides)
    result = train(run_dir, resume_from=None)
    if result.state != "finished":
        raise RuntimeError(f"{run_dir}: setup run ended {result.state}: {result.error}")
    extend_run(run_dir, steps=1)
    checkpoint = run_dir / "checkpoints" / "step_00000001.pt"
    return run_dir, checkpoint, overrides


BARE_RESUME = textwrap.dedent("""
    import sys, time
    import torch
    sys.path.insert(0, {root!r})
    from runctl.engine.config import load_config
    from runctl.engine.tasks import build_task
    cfg = load_config("digits_mlp", {overrides!r})
    task = build_task(cfg)
    model = task.build_model()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01}},
         {{"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}}], lr=1e-3)
    state = torch.load({checkpoint!r}, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    del state
    batch = task.get_batch("train", torch.arange(cfg["data"]["batch_size"]))
    loss = task.loss(model, batch, cfg)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    print("step", float(loss), flush=True)
""")


def time_runctl_resume(run_dir: Path) -> float:
    """Seconds from launching `runctl resume` until the step-2 metrics line appears; then let it finish."""
    metrics = run_dir / METRICS_JSONL
    baseline_size = metrics.stat().st_size
    # An empty verification cache of its own: the resume verifies the whole file, as the first
    # resume after training does (a warm cache would skip the sha256).
    cache = tempfile.mkdtemp(prefix="runctl-bench-cache-")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "runctl", "resume", str(run_dir)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "XDG_CACHE_HOME": cache})
    reached = None
    while reached is None:
        if metrics.stat().st_size > baseline_size and b'"step":2' in metrics.read_bytes()[baseline_size:]:
            reached = time.perf_counter() - started
        elif process.poll() is not None:
            raise RuntimeError(f"runctl resume ended before step 2: {process.stderr.read().decode()[-500:]}")
        else:
            time.sleep(0.002)
    _, stderr = process.communicate(timeout=600)
    shutil.rmtree(cache, ignore_errors=True)
    if process.returncode != 0:
        raise RuntimeError(f"runctl resume failed: {stderr.decode()[-500:]}")
    return reached


def rewind_run(run_dir: Path) -> None:
    """Back to the state before the resume: only the step-1 checkpoint, metrics up to step 1."""
    from runctl.runs.manifest import read_manifest, write_manifest

    ckpt_dir = run_dir / "checkpoints"
    for path in ckpt_dir.iterdir():
        if path.name.startswith("step_") and path.name != "step_00000001.pt":
            path.unlink()
    manifest = read_manifest(ckpt_dir)
    manifest.files = {k: v for k, v in manifest.files.items() if k == "step_00000001.pt"}
    write_manifest(ckpt_dir, manifest)
    metrics = run_dir / METRICS_JSONL
    lines = [line for line in metrics.read_text().splitlines(keepends=True) if '"step":2' not in line]
    metrics.write_text("".join(lines))


def time_bare_resume(script: str) -> float:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    line = process.stdout.readline()
    reached = time.perf_counter() - started
    _, stderr = process.communicate(timeout=600)
    if process.returncode != 0 or not line.startswith(b"step"):
        raise RuntimeError(f"bare resume failed: {stderr.decode()[-500:]}")
    return reached


def bench_resume(tmp: Path, total_bytes: int, repeats: int) -> list[dict]:
    run_dir, checkpoint, overrides = make_resume_run(tmp / "runs", total_bytes)
    mib = checkpoint.stat().st_size / MIB
    checkpoint.read_bytes()  # page cache warm for both sides
    script = BARE_RESUME.format(root=str(ROOT), overrides=[o for o in overrides if not o.startswith("max_steps")]
                                + ["max_steps=2"], checkpoint=str(checkpoint))
    runctl_times, bare_times = [], []
    for index in range(repeats):
        if index % 2 == 0:
            runctl_times.append(time_runctl_resume(run_dir))
            rewind_run(run_dir)
            bare_times.append(time_bare_resume(script))
        else:
            bare_times.append(time_bare_resume(script))
            runctl_times.append(time_runctl_resume(run_dir))
            rewind_run(run_dir)
    runctl_s, bare_s = statistics.median(runctl_times), statistics.median(bare_times)

    state_cpu = []
    for _ in range(max(1, repeats // 2)):
        started = time.perf_counter()
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state_cpu.append(time.perf_counter() - started)
        del state
    load_only = statistics.median(state_cpu)
    return [
        {"name": f"`runctl resume` to first step, {mib:.0f} MiB checkpoint, verify included ({repeats} reps) "
                 "vs hand-written torch.load + load_state_dict + step (fresh process each)",
         "runctl": runctl_s, "baseline": bare_s, "ratio": runctl_s / bare_s, "target": f"<= {RESUME_TARGET}",
         "met": runctl_s / bare_s <= RESUME_TARGET, "unit": "s"},
        {"name": f"torch.load alone of the {mib:.0f} MiB checkpoint, in process (info)", "runctl": None,
         "baseline": load_only, "ratio": None, "target": "info", "met": True, "unit": "s"},
    ]


def run(quick: bool) -> list[dict]:
    stall_sizes = (64 * MIB, 256 * MIB) if quick else (256 * MIB, 1024 * MIB)
    resume_size = 256 * MIB if quick else 1024 * MIB
    repeats = 3 if quick else 5
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="runctl-bench-ckpt-", dir=os.environ.get("RUNCTL_BENCH_TMP")) as tmp:
        for size in stall_sizes:
            rows += bench_stall(Path(tmp), size, repeats)
            gc.collect()
        rows += bench_resume(Path(tmp), resume_size, repeats)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller states (64/256 MiB) and fewer repeats")
    args = parser.parse_args(argv)
    from run import print_rows  # bench/ is sys.path[0]: a script, or loaded by run.py
    rows = run(args.quick)

    return print_rows(rows)


if __name__ == "__main__":
    sys.exit(main())
