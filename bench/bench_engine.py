"""Engine overhead: steps/s of runctl's training against a bare hand-written PyTorch loop.

    python bench/bench_engine.py [--quick] [--task digits_mlp] [--wall-only | --cpu-only]

Whole process, wall clock (what the user waits for; the targets): `runctl train TASK` in a
subprocess against a subprocess running the bare loop below, each in a terminal (a pseudo-terminal
this process reads, as sshd would; runctl draws its progress line there, the bare loop prints only
the time its loop starts until its end), torch on OMP_NUM_THREADS threads, on the CPU. Each
process's own start-up (spawn to its loop's start: imports, data, model) comes off its wall time,
and an N-step run minus a 1-step run takes off the end (runctl's final evaluation and checkpoint,
the interpreter's exit). The target is on each side's fastest processes (bench_wall says why); the
median of the reps' ratios, the loop's speed second by second, each side's start-up and the CPU
time of every thread are printed beside it, for information. digits_mlp with 1 and 2 threads
(target >= 0.95), char_gpt with 1 (target >= 0.98).

In process, the training thread's CPU time (for information):

For each built-in task (digits_mlp, digits_cnn, digits_vit, char_gpt, their shipped configs):
- runctl: a real run (`new_run` + `train`), logging on (log.every 10, metrics.jsonl + status.json
  heartbeat + the on_metrics callback), checkpoints off (checkpoint.every and eval.every beyond
  max_steps; the final checkpoint and evaluation come after the timed window);
- baseline: a nanoGPT-style loop written out by hand: the same model (built by the task after the
  same seed), the same batches (the same per-epoch permutations), the same loss, AdamW with the
  same parameter groups and the same implementation (fused where the device has the kernel), the
  same cosine LR, the same gradient clipping (foreach calls), and `loss.item()` every 10 steps.
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
import json
import math
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from runctl.engine.api import new_run, train  # noqa: E402
from runctl.engine.config import load_config  # noqa: E402
from runctl.engine.tasks import build_task  # noqa: E402
from runctl.runs.events import read_events  # noqa: E402
from runctl.runs.metrics import MetricsReader  # noqa: E402

TASKS = ("digits_mlp", "digits_cnn", "digits_vit", "char_gpt")
LOG_EVERY = 10
WARMUP = 20  # steps before the timed window opens (allocator, autograd caches)
# CPU time of the training thread, not wall time: on a shared 2-core machine (load ~10 while this
# was written) wall-clock steps/s swung 0.8x-1.3x between identical runs; the thread's CPU time is
# the work each loop does per step, which is what the engine adds to. One torch thread keeps
# every op on this thread, so nothing is missed (the engine's heartbeat thread, one status.json
# write per 2 s, is the only work elsewhere).
CLOCK = time.thread_time
LOOP_START = "loop-start"  # what the bare-loop process prints before the time its loop starts
LOG_TIMES = "log-times"  # ... and before its log lines' times, {step: epoch seconds} as compact JSON
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


def _fused_kernel_available(params: list[torch.Tensor]) -> bool:
    """AdamW(fused=True) works: every parameter a floating-point tensor on a device with the
    fused kernel (a private torch helper; without it, the plain AdamW)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return False
    devices = _get_fused_kernels_supported_devices()
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)


@torch.no_grad()
def _clip_with_foreach(params: list[torch.Tensor], clip: float | None) -> None:
    """clip_grad_norm_'s arithmetic (norm of the per-tensor norms; coefficient clip / (norm + 1e-6)
    clamped to 1, always multiplied) as three foreach calls, for parameters of one device and dtype."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    if clip:
        torch._foreach_mul_(grads, torch.clamp(clip / (total + 1e-6), max=1.0))


def bare_loop(cfg: dict[str, Any], task: Any, on_start: Callable[[], None] | None = None,
              clock: Callable[[], float] = CLOCK) -> dict[int, tuple[float, float]]:
    """The hand-written loop; {step: (clock() at that log line, loss averaged over the interval)}.
    `on_start()` is called once the model, optimizer and data are ready, before the first step (where
    the engine writes its `started` event)."""
    seed, steps, batch_size = cfg["seed"], cfg["max_steps"], cfg["data"]["batch_size"]
    optim, sched = cfg["optim"], cfg["schedule"]
    torch.manual_seed(seed)
    model = task.build_model()
    model.train()
    params = list(model.parameters())
    # The optimizer and the clipping a careful hand-written loop uses, as the engine does: AdamW's
    # fused kernel where the device has one, and the gradient norm and clipping as three foreach
    # calls (clip_grad_norm_'s arithmetic without its per-call grouping). The ratio then measures
    # what the engine adds around the step, not a faster step.
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": optim["weight_decay"]},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=optim["lr"], betas=tuple(optim["betas"]), fused=_fused_kernel_available(params))
    clip = optim["grad_clip"]
    clip_with_foreach = hasattr(torch, "_foreach_norm") and len({(p.device, p.dtype) for p in params}) == 1
    n = task.train_size
    batch_size = min(batch_size, n)
    epoch, position = 0, 0
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    loss_sum = torch.zeros(())
    logged: dict[int, tuple[float, float]] = {}
    if on_start is not None:
        on_start()
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
        if clip_with_foreach:
            _clip_with_foreach(params, clip)
        elif clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
            logged[step + 1] = (clock(), float(loss_sum / (step % LOG_EVERY + 1)))
            loss_sum = torch.zeros(())
    return logged


def bare_run(cfg: dict[str, Any], task: Any) -> tuple[float, float]:
    """(steps/s over the window, loss averaged over the last log interval) of the hand-written loop."""
    steps = cfg["max_steps"]
    logged = bare_loop(cfg, task)
    (start, _), (end, loss) = logged[WARMUP], logged[steps]
    return (steps - WARMUP) / (end - start), loss


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
            "ratio": ratio, "target": "info", "met": True,
            "unit": "steps/s"}


# ---------------------------------------------------------------- whole process, wall clock

# What the user waits for: the wall time of the `runctl train` process against a process running
# the bare loop, each measured as an N-step run minus a 1-step run, so interpreter start-up,
# imports, data loading and (for runctl) the final evaluation and checkpoint cancel out.
WALL_CASES = (("digits_mlp", 1), ("digits_mlp", 2), ("char_gpt", 1))
WALL_TARGETS = {"digits_mlp": 0.95, "char_gpt": 0.98}
# A process's start-up (imports, data) takes 3-4.3 s here and varies by up to a second between
# identical processes; with 2 torch threads, identical bare-loop processes ran from 770 to 1,390
# steps/s (2026-12-04). digits_mlp's loop therefore runs 3-6 s (4,001 steps) in the quick run,
# where 2,001 steps (1.5 s) gave 0.64 and 1.19 for the same code in two runs ten minutes apart.
WALL_STEPS = {"digits_mlp": 8001, "char_gpt": 201}
WALL_STEPS_QUICK = {"digits_mlp": 4001, "char_gpt": 81}
WALL_REPEATS, WALL_REPEATS_QUICK = 7, 5


@dataclass
class ProcessTime:
    wall: float  # seconds from spawn to exit
    cpu: float   # user + system seconds of the process, every thread
    loss: float  # the training loss logged at the last step
    start_up: float  # seconds from spawn to the loop's start (imports, data, model, optimizer)
    log_times: dict[int, float]  # {step: epoch seconds} of every log line, every LOG_EVERY steps

    def rates_per_second(self) -> list[float]:
        """Steps/s in each whole second of the loop after WARMUP, from the log lines in it: the
        loop's own speed, second by second, without the start-up and the end."""
        steps = sorted(step for step in self.log_times if step >= WARMUP)
        if not steps:  # a run shorter than WARMUP
            return []
        rates, window_start, first = [], self.log_times[steps[0]], 0
        for index, step in enumerate(steps):
            if self.log_times[step] >= window_start + 1.0:
                if index - 1 > first:
                    begin, end = steps[first], steps[index - 1]
                    rates.append((end - begin) / (self.log_times[end] - self.log_times[begin]))
                window_start, first = self.log_times[step], index
        return rates

    @property
    def from_loop(self) -> float:
        """Seconds from the loop's start to the process's exit: the training, the last evaluation
        and checkpoint (runctl) and the interpreter's exit."""
        return self.wall - self.start_up


def _process_env(threads: int) -> dict[str, str]:
    # CPU only: the bare loop trains on the CPU, so the engine must too (device auto would pick a GPU).
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def _timed_process(command: list[str], threads: int) -> tuple[float, float, str, float]:
    """(wall s, CPU s, output, spawn time on the epoch clock) of one process run as a user runs
    it: in a terminal. Its stdin, stdout and stderr are a pseudo-terminal whose other end this
    process reads as it comes, as sshd or a terminal emulator would (runctl then draws its
    progress line, through its console thread)."""
    controller, terminal = pty.openpty()
    output = bytearray()
    try:
        spawned, started = time.time(), time.perf_counter()
        process = subprocess.Popen(command, env=_process_env(threads), stdin=terminal, stdout=terminal,
                                   stderr=terminal, start_new_session=True)
        os.close(terminal)
        terminal = -1
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            output += chunk
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    text = output.decode("utf-8", "replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {process.returncode}: {text[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, text, spawned


def runctl_process(task_name: str, steps: int, threads: int, scratch: Path, index: int) -> ProcessTime:
    """`runctl train TASK` with logging on and no checkpoint or evaluation before the last step."""
    root, name = scratch / "runs", f"{task_name}-{steps}-{threads}-{index}"
    overrides = [arg for o in _overrides(steps) for arg in ("--set", o)]
    wall, cpu, _, spawned = _timed_process([sys.executable, "-m", "runctl", "train", task_name, "--root",
                                            str(root), "--name", name, *overrides], threads)
    metrics = MetricsReader(root / name)
    metrics.poll()
    logged_steps, losses = metrics.series("train/loss")
    log_times = dict(zip(logged_steps.tolist(), metrics.times("train/loss").tolist(), strict=True))
    loss = float(losses[-1]) if len(logged_steps) and logged_steps[-1] == steps else float("nan")
    started = next(event["time"] for event in read_events(root / name) if event["event"] == "started")
    return ProcessTime(wall, cpu, loss, started - spawned, log_times)


def bare_process(task_name: str, steps: int, threads: int) -> ProcessTime:
    """This file run as `--bare-process TASK STEPS`: a process that only imports torch, builds the
    task and runs the bare loop, printing the time its loop starts and, at the end, its log lines'
    times and the loss."""
    wall, cpu, out, spawned = _timed_process([sys.executable, str(Path(__file__).resolve()), "--bare-process",
                                              task_name, str(steps)], threads)
    words = out.split()  # a warning (torch's, say) may come before, between or after what it prints
    started, loss = float(words[words.index(LOOP_START) + 1]), float(words[-1])
    log_times = {int(step): at for step, at in json.loads(words[words.index(LOG_TIMES) + 1]).items()}
    return ProcessTime(wall, cpu, loss, started - spawned, log_times)


def _bare_process_main(task_name: str, steps: int) -> int:
    cfg = load_config(task_name, _overrides(steps))
    logged = bare_loop(cfg, build_task(cfg), on_start=lambda: print(LOOP_START, repr(time.time()), flush=True),
                       clock=time.time)
    print(LOG_TIMES, json.dumps({step: at for step, (at, _) in logged.items()}, separators=(",", ":")))
    print(repr(logged[steps][1]))
    return 0


def bench_wall(task_name: str, threads: int, steps: int, repeats: int, scratch: Path) -> list[dict]:
    """steps/s of `runctl train` against the bare loop's process: the wall clock from each
    process's loop start to its exit, N-step minus 1-step; the CPU time of every thread of the
    whole process, N-step minus 1-step (information).

    Each process's own start-up (spawn to the loop's first step: imports, data, model, optimizer;
    runctl's `started` event, a time the bare loop prints) comes off its wall time, and the 1-step
    processes then take off the end (runctl's last evaluation and checkpoint, the interpreter's
    exit). Start-up varies by up to 0.4 s between identical processes here, 7% of digits_mlp's
    loop, so taking another process's start-up off moved the figure by several percent. Each
    side's median start-up is its own row (information).

    The target is on each side's fastest processes. On this VM, two busy threads run for seconds
    to minutes at a time at ~0.71x their speed (a bare `torch.mm` loop on 2 threads: 26,400
    against 37,100 products/s, in phases, with no runctl code in the process; on 1 thread it holds
    at 22,900), so a process's time is its code's plus what the machine's phase added while it
    ran. The machine only ever adds time, and the fastest of several processes is the one it
    slowed least, as `timeit` takes the minimum. Beside it, for information: the median of the
    reps' ratios (each rep runs its two N-step processes back to back), what a typical run gives
    here; and the loop's own speed second by second, from the log lines' times, as the 90th
    percentile of every second of each side's N-step loops: the seconds the machine's slow phase
    left alone, start-up and end excluded."""
    timed: dict[tuple[str, int], list[ProcessTime]] = {}
    engine_loss = bare_loss = float("nan")
    for index in range(repeats):
        # Alternate the order, so a drift in machine speed does not favour either side.
        runs = [("engine", steps), ("bare", steps), ("bare", 1), ("engine", 1)]
        for side, n in runs if index % 2 == 0 else runs[::-1]:
            process = runctl_process(task_name, n, threads, scratch, index) if side == "engine" \
                else bare_process(task_name, n, threads)
            timed.setdefault((side, n), []).append(process)
        engine_loss, bare_loss = timed["engine", steps][-1].loss, timed["bare", steps][-1].loss
    if not math.isclose(engine_loss, bare_loss, rel_tol=1e-4, abs_tol=1e-6):
        raise RuntimeError(f"{task_name}: the bare loop is not the same training (loss at step {steps}: "
                           f"engine {engine_loss!r}, bare {bare_loss!r})")

    def fastest(side: str, clock: str) -> float:
        def least(n: int) -> float:
            return min(getattr(process, clock) for process in timed[side, n])
        return (steps - 1) / (least(steps) - least(1))

    def paired() -> tuple[float, float, float]:
        def rates(side: str) -> list[float]:
            end = statistics.median(process.from_loop for process in timed[side, 1])
            return [(steps - 1) / (process.from_loop - end) for process in timed[side, steps]]
        engine, bare = rates("engine"), rates("bare")
        ratio = statistics.median(e / b for e, b in zip(engine, bare, strict=True))
        return statistics.median(engine), statistics.median(bare), ratio

    def start_up(side: str) -> float:
        return statistics.median(process.start_up for kind, processes in timed.items() if kind[0] == side
                                 for process in processes)

    engine_rate, bare_rate = fastest("engine", "from_loop"), fastest("bare", "from_loop")
    engine_cpu_rate, bare_cpu_rate = fastest("engine", "cpu"), fastest("bare", "cpu")
    engine_typical, bare_typical, typical_ratio = paired()
    engine_start, bare_start = start_up("engine"), start_up("bare")
    engine_seconds, bare_seconds = (sorted(rate for process in timed[side, steps] for rate in process.rates_per_second())
                                    for side in ("engine", "bare"))
    # Each process's times, in run order within its kind, for reading the noise afterwards.
    for (side, n), processes in sorted(timed.items()):
        print(f"# {task_name}, {threads} thread(s), {side} {n}-step processes, start-up + from the loop, s: "
              + " ".join(f"{process.start_up:.3f}+{process.from_loop:.3f}" for process in processes),
              file=sys.stderr, flush=True)
    for side, seconds in (("engine", engine_seconds), ("bare", bare_seconds)):
        print(f"# {task_name}, {threads} thread(s), {side} {steps}-step loops, steps/s in each second, sorted: "
              + " ".join(f"{rate:.0f}" for rate in seconds), file=sys.stderr, flush=True)
    target = WALL_TARGETS[task_name]
    what = (f"`runctl train {task_name}` whole process, {threads} torch thread{'s' if threads > 1 else ''} "
            f"({steps} - 1 steps, {repeats} alternating reps, logging on, checkpoints off)")
    wall_ratio, cpu_ratio = engine_rate / bare_rate, engine_cpu_rate / bare_cpu_rate
    rows = [
        {"name": f"{what}: wall clock from the loop's start to exit, fastest processes, vs bare-loop process",
         "runctl": engine_rate, "baseline": bare_rate, "ratio": wall_ratio, "target": f"ratio >= {target}",
         "met": wall_ratio >= target, "unit": "steps/s"},
        {"name": f"{what}: the same, median of the reps' ratios and of each side (info)",
         "runctl": engine_typical, "baseline": bare_typical, "ratio": typical_ratio, "target": "info", "met": True,
         "unit": "steps/s"},
        {"name": f"{what}: start-up, spawn to the loop's start, median of every process (info)",
         "runctl": engine_start, "baseline": bare_start, "ratio": engine_start / bare_start, "target": "info",
         "met": True, "unit": "s"},
        {"name": f"{what}: CPU time of every thread, whole process, fastest processes, vs bare-loop process (info)",
         "runctl": engine_cpu_rate, "baseline": bare_cpu_rate, "ratio": cpu_ratio, "target": "info", "met": True,
         "unit": "steps/s"},
    ]
    if len(engine_seconds) >= 2 and len(bare_seconds) >= 2:  # a loop shorter than two seconds has no such figure
        engine_p90, bare_p90 = (statistics.quantiles(seconds, n=10)[-1] for seconds in (engine_seconds, bare_seconds))
        rows.insert(2, {"name": f"{what}: the loop's speed second by second, 90th percentile of every N-step "
                                f"process's seconds (info)",
                        "runctl": engine_p90, "baseline": bare_p90, "ratio": engine_p90 / bare_p90, "target": "info",
                        "met": True, "unit": "steps/s"})
    return rows


def run_wall(quick: bool, cases: tuple[tuple[str, int], ...] = WALL_CASES) -> list[dict]:
    sizes, repeats = (WALL_STEPS_QUICK, WALL_REPEATS_QUICK) if quick else (WALL_STEPS, WALL_REPEATS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="runctl-bench-engine-wall-") as tmp:
        for task_name, threads in cases:
            rows.extend(bench_wall(task_name, threads, sizes[task_name], repeats, Path(tmp)))
    return rows


def run(quick: bool, threads: int = 1) -> list[dict]:
    torch.set_num_threads(threads)
    sizes = QUICK if quick else FULL
    rows = run_wall(quick)
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
    parser.add_argument("--wall-only", action="store_true", help="only the whole-process wall-clock figures")
    parser.add_argument("--cpu-only", action="store_true", help="only the in-process CPU-time figures")
    parser.add_argument("--bare-process", nargs=2, metavar=("TASK", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_process:
        return _bare_process_main(args.bare_process[0], int(args.bare_process[1]))
    from run import print_rows  # bench/ is sys.path[0]: a script, or loaded by run.py
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    if not args.cpu_only:
        cases = tuple(c for c in WALL_CASES if args.task in (None, c[0]))
        rows += run_wall(args.quick, cases)
    if not args.wall_only:
        sizes = QUICK if args.quick else FULL
        with tempfile.TemporaryDirectory(prefix="runctl-bench-engine-") as tmp:
            for task_name in (args.task,) if args.task else TASKS:
                steps, repeats = sizes[task_name]
                rows.append(bench_task(task_name, steps + WARMUP, repeats, Path(tmp)))
    return print_rows(rows)


if __name__ == "__main__":
    sys.exit(main())
