"""Engine overhead: steps/s of `engine.api.train` against a bare hand-written PyTorch loop.

    python bench/bench_engine.py [--quick]

For each built-in task (digits_mlp, digits_cnn, digits_vit, char_gpt, their shipped configs):
- runctl: a real run (`new_run` + `train`), logging on (log.every 10, metrics.jsonl + status.json
  heartbeat + the on_metrics callback), checkpoints off (checkpoint.every and eval.every beyond
  max_steps; the final checkpoint and evaluation come after the timed window);
- baseline: a nanoGPT-style loop written out by hand: the same model (built by the task after the
  same seed), the same batches (the same per-epoch permutations), the same loss, AdamW with the
  same parameter groups, the same cosine LR, grad clipping, and `loss.item()` every 10 steps.
  Both loops must produce the same loss at the last logged step, or the comparison is void.

Torch runs on one intra-op thread for both (`--threads` changes it): on a shared 2-core machine
OpenMP threads spin against other processes' work (measured under load ~10: 200-430 ms/step for
digits_mlp at 2 threads, 6 ms at 1), and steps/s then measures the neighbours, not the engine.

Both are timed over the same window, from the log line at step WARMUP to the one at the last step,
on the training thread's CPU clock (see CLOCK), so start-up, the first steps and the final checkpoint are outside it. The two
alternate (engine, bare, bare, engine, ...) for several repetitions in one process, and the ratio
is the median of the per-pair ratios, so a noisy 2-core machine moves both sides alike.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from runctl.engine.api import new_run, train  # noqa: E402
from runctl.engine.config import load_config  # noqa: E402
from runctl.engine.tasks import build_task  # noqa: E402

TASKS = ("digits_mlp", "digits_cnn", "digits_vit", "char_gpt")
TARGET_RATIO = 0.97
LOG_EVERY = 10
WARMUP = 20  # steps before the timed window opens (allocator, autograd caches)
# CPU time of the training thread, not wall time: on a shared 2-core machine (load ~10 while this
# was written) wall-clock steps/s swung 0.8x-1.3x between identical runs; the thread's CPU time is
# the work each loop does per step, which is what the engine adds to. One torch thread keeps
# every op on this thread, so nothing is missed (the engine's heartbeat thread, one status.json
# write per 2 s, is the only work elsewhere).
CLOCK = time.thread_time
NEVER = 10**9  # checkpoint.every / eval.every beyond any max_steps: "off"

# Timed steps per repetition and repetitions (each repetition = one engine run + one bare run).
FULL = {"digits_mlp": (1500, 7), "digits_cnn": (600, 7), "digits_vit": (400, 7), "char_gpt": (200, 7)}
QUICK = {"digits_mlp": (600, 5), "digits_cnn": (150, 5), "digits_vit": (100, 5), "char_gpt": (50, 5)}


def _overrides(steps: int) -> list[str]:
    return [f"max_steps={steps}", f"log.every={LOG_EVERY}", f"eval.every={NEVER}", f"checkpoint.every={NEVER}"]


def engine_run(task_name: str, steps: int, root: Path, index: int) -> tuple[float, float]:
    """(steps/s over the window, loss logged at the last step) of one real engine run."""
    run_dir = new_run(task_name, root=root, name=f"{task_name}-{index}", overrides=_overrides(steps))
    seen: dict[int, tuple[float, float]] = {}

    def on_metrics(line: dict[str, Any]) -> None:
        if "train/loss" in line:
            seen[int(line["step"])] = (CLOCK(), float(line["train/loss"]))

    result = train(run_dir, on_metrics=on_metrics, resume_from=None)
    if result.state != "finished":
        raise RuntimeError(f"{run_dir}: engine run ended {result.state}: {result.error}")
    (start, _), (end, loss) = seen[WARMUP], seen[steps]
    return (steps - WARMUP) / (end - start), loss


def _cosine_lr(step: int, peak: float, warmup: int, max_steps: int, min_ratio: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    done, total = step - warmup, max_steps - warmup
    low = peak * min_ratio
    return low + 0.5 * (1.0 + math.cos(math.pi * min(done, total) / total)) * (peak - low)


def bare_run(cfg: dict[str, Any], task: Any) -> tuple[float, float]:
    """The hand-written loop; (steps/s over the window, loss averaged over the last log interval)."""
    seed, steps, batch_size = cfg["seed"], cfg["max_steps"], cfg["data"]["batch_size"]
    optim, sched = cfg["optim"], cfg["schedule"]
    torch.manual_seed(seed)
    model = task.build_model()
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": optim["weight_decay"]},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=optim["lr"], betas=tuple(optim["betas"]))
    n = task.train_size
    batch_size = min(batch_size, n)
    epoch, position = 0, 0
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    loss_sum = torch.zeros(())
    start = end = 0.0
    last_loss = float("nan")
    for step in range(steps):
        lr = _cosine_lr(step, optim["lr"], sched["warmup_steps"], steps, sched["min_lr_ratio"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        if position + batch_size > n:
            epoch, position = epoch + 1, 0
            permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        batch = task.get_batch("train", permutation[position:position + batch_size])
        position += batch_size
        loss = task.loss(model, batch, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, optim["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        if (step + 1) % LOG_EVERY == 0:
            last_loss = float(loss_sum / LOG_EVERY)
            loss_sum = torch.zeros(())
            if step + 1 == WARMUP:
                start = CLOCK()
            elif step + 1 == steps:
                end = CLOCK()
    return (steps - WARMUP) / (end - start), last_loss


def bench_task(task_name: str, steps: int, repeats: int, root: Path) -> dict:
    cfg = load_config(task_name, _overrides(steps))
    task = build_task(cfg)
    engine_rates, bare_rates, ratios = [], [], []
    engine_loss = bare_loss = float("nan")
    for index in range(repeats):
        # Alternate which goes first, so a drift in machine speed does not favour either side.
        if index % 2 == 0:
            engine_rate, engine_loss = engine_run(task_name, steps, root, index)
            bare_rate, bare_loss = bare_run(cfg, task)
        else:
            bare_rate, bare_loss = bare_run(cfg, task)
            engine_rate, engine_loss = engine_run(task_name, steps, root, index)
        engine_rates.append(engine_rate)
        bare_rates.append(bare_rate)
        ratios.append(engine_rate / bare_rate)
    if not math.isclose(engine_loss, bare_loss, rel_tol=1e-4, abs_tol=1e-6):
        raise RuntimeError(f"{task_name}: the bare loop is not the same training (loss at step {steps}: "
                           f"engine {engine_loss!r}, bare {bare_loss!r})")
    ratio = statistics.median(ratios)
    return {"name": f"engine steps/s {task_name} ({steps} steps x {repeats} alternating reps, logging on, "
                    f"checkpoints off, {torch.get_num_threads()} torch thread, CPU time) vs bare loop",
            "runctl": statistics.median(engine_rates), "baseline": statistics.median(bare_rates),
            "ratio": ratio, "target": f"ratio >= {TARGET_RATIO}", "met": ratio >= TARGET_RATIO,
            "unit": "steps/s"}


def run(quick: bool, threads: int = 1) -> list[dict]:
    torch.set_num_threads(threads)
    sizes = QUICK if quick else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="runctl-bench-engine-") as tmp:
        for task_name in TASKS:
            steps, repeats = sizes[task_name]
            rows.append(bench_task(task_name, steps + WARMUP, repeats, Path(tmp)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    parser.add_argument("--task", choices=TASKS, help="one task only")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    from run import print_rows  # bench/ is sys.path[0]: a script, or loaded by run.py
    if args.task:
        torch.set_num_threads(args.threads)
        steps, repeats = (QUICK if args.quick else FULL)[args.task]
        with tempfile.TemporaryDirectory(prefix="runctl-bench-engine-") as tmp:
            rows = [bench_task(args.task, steps + WARMUP, repeats, Path(tmp))]
    else:
        rows = run(args.quick, args.threads)

    return print_rows(rows)


if __name__ == "__main__":
    sys.exit(main())
