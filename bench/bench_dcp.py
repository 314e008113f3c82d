"""Sharded (DCP) checkpoint stall: async save vs synchronous DCP save, measured in the same run.

    python bench/bench_dcp.py [--quick]

One process (DCP without a process group, as `parallel.strategy: fsdp` saves with one process), a
real model and AdamW whose state (weights + two moments) is 256 MiB (--quick: 64 MiB), after one
optimizer step. For each repetition:
- async: `CheckpointManager.save()` (StepFolderWriter) with checkpoint.async on: the time the training thread
  is blocked (dcp.async_save stages the state into CPU memory, then returns; the write, the
  hashing, the manifest and the rename run in the background and are waited for untimed);
- sync: the same save with checkpoint.async off (dcp.save writes the folder, then rank 0 hashes,
  fsyncs, writes the manifest and renames) - the baseline.
Prints the median of each and the ratio async/sync (lower is better; target <= 0.5 on CPU, where
staging is a memcpy of the whole state; on CUDA it is a device-to-host copy into pinned memory).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from runctl.engine.checkpoint import CheckpointManager  # noqa: E402
from runctl.engine.sharded import StepFolderWriter, tensor_state  # noqa: E402

MIB = 1 << 20
TARGET = 0.5


def setup(total_bytes: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    depth = 4
    width = int((total_bytes / 12 / depth) ** 0.5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(depth)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(8, width)).pow(2).mean().backward()
    optimizer.step()
    return model, optimizer


def stall(manager: CheckpointManager, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          step: int) -> float:
    state = {"format": "runctl/1", "step": step, "rng": {}, "data": {}, **tensor_state(model, optimizer)}
    started = time.perf_counter()
    manager.save(state, step, "periodic")
    blocked = time.perf_counter() - started
    manager.wait()  # the background write, untimed
    return blocked


def run(quick: bool = False, repeats: int = 5) -> list[dict]:
    """The figure as bench/run.py collects it."""
    size = (64 if quick else 256) * MIB
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    model, optimizer = setup(size)
    times: dict[str, list[float]] = {"async": [], "sync": []}
    with tempfile.TemporaryDirectory() as tmp:
        managers = {mode: CheckpointManager(Path(tmp) / mode, "bench", {"keep_last": 1, "async": mode == "async"},
                                            writer=StepFolderWriter(rank=0, temp_tag=1))
                    for mode in ("async", "sync")}
        for repeat in range(repeats + 1):
            for mode in ("async", "sync"):
                blocked = stall(managers[mode], model, optimizer, repeat + 1)
                if repeat:  # the first round warms up DCP's planner and the page cache
                    times[mode].append(blocked)
        for manager in managers.values():
            manager.close()
    runctl, baseline = statistics.median(times["async"]) * 1e3, statistics.median(times["sync"]) * 1e3
    ratio = runctl / baseline
    return [{"name": f"sharded (DCP) checkpoint stall, {size // MIB} MiB state, async vs sync DCP save",
             "runctl": runctl, "baseline": baseline, "ratio": ratio, "target": f"<= {TARGET}",
             "met": ratio <= TARGET, "unit": "ms"}]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from run import print_rows

    return print_rows(run(quick=args.quick, repeats=args.repeats))


if __name__ == "__main__":
    sys.exit(main())
