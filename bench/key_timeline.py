"""Where a key's time goes: the keys of bench_ui's key figure, each on a timeline.

    python bench/key_timeline.py [--keys N] [--task digits_mlp] [--engine thread] [--rounds 2]

Runs bench_ui's key measurement in this process, on an idle run and then with TASK training,
ROUNDS times, with these timed: every screen frame (Screen._on_timer_update), the loss chart's
render, the plot's redraw for a key and for new data, the new points and file updates reaching the
run view, and the garbage collector's passes (generation 1 and 2, and any pass over 0.5 ms; "u" on
the UI thread, "e" on another). For the slowest tenth of the keys it prints everything that ran
between the key and the frame that showed it, as (ms after the key, ms it took, what), then each
kind's count a second and p50 / p95 / max. Information for a person reading it, no verdict; it
found the frames held behind the live view's own (tui/frame_timer.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import bench_ui  # noqa: E402
import numpy as np  # noqa: E402

# (start, end, what), perf_counter seconds.
Timeline = list[tuple[float, float, str]]
KINDS = ("frame", "chart", "key draw", "data draw", "points", "files")


class Recorder:
    """Wraps the timed methods (class attributes, so every instance) and the collector's callback."""

    def __init__(self) -> None:
        self.events: Timeline = []
        self._restore: list[Callable[[], None]] = []
        self._gc_started: float | None = None

    def time_method(self, owner: type, name: str, what: str) -> None:
        original = getattr(owner, name)
        events = self.events

        def timed(self_, *args, **kwargs):
            started = time.perf_counter()
            try:
                return original(self_, *args, **kwargs)
            finally:
                events.append((started, time.perf_counter(), what))

        setattr(owner, name, timed)
        self._restore.append(lambda: setattr(owner, name, original))

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        started, self._gc_started = self._gc_started, None
        if started is None:
            return
        ended = time.perf_counter()
        if info["generation"] >= 1 or ended - started > 0.0005:
            thread = "u" if threading.current_thread() is threading.main_thread() else "e"
            self.events.append((started, ended, f"gc{info['generation']}{thread}"))

    def __enter__(self) -> Recorder:
        from runctl.tui.screens.run_view import RunViewScreen
        from runctl.tui.widgets.loss_plot import LossPlot, PlotextChart
        from textual.screen import Screen

        self.time_method(Screen, "_on_timer_update", "frame")
        self.time_method(PlotextChart, "build_lines", "chart")
        self.time_method(LossPlot, "redraw_now", "key draw")
        self.time_method(LossPlot, "_draw_pending", "data draw")
        self.time_method(LossPlot, "on_loss_plot_points", "points")
        self.time_method(RunViewScreen, "_apply_update", "files")
        expect = bench_ui._FrameClock.expect
        events = self.events

        def timed_expect(clock, options):
            shown = expect(clock, options)
            events.append((time.perf_counter(), time.perf_counter(), "key"))
            return shown

        bench_ui._FrameClock.expect = timed_expect
        self._restore.append(lambda: setattr(bench_ui._FrameClock, "expect", expect))
        gc.callbacks.append(self._on_gc)
        self._restore.append(lambda: gc.callbacks.remove(self._on_gc))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for restore in reversed(self._restore):
            restore()


def report(label: str, latencies: list[float], events: Timeline) -> None:
    events = sorted(events)
    keys = [start for start, _, what in events if what == "key"][-len(latencies):]
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    print(f"{label}: {len(latencies)} keys, key -> screen p50 {p50:.1f} p95 {p95:.1f} p99 {p99:.1f} ms")
    slow = np.percentile(latencies, 90)
    for pressed, latency in zip(keys, latencies, strict=True):
        if latency < slow:
            continue
        shown = pressed + latency / 1e3
        inside = [(round((start - pressed) * 1e3, 1), round((end - start) * 1e3, 1), what)
                  for start, end, what in events
                  if what != "key" and pressed - 0.02 <= start <= shown]
        print(f"  {latency:5.1f} ms: {inside}")
    span = events[-1][0] - events[0][0] if events else 0.0
    counts = Counter(what for _, _, what in events if what != "key")
    for what in sorted(counts, key=lambda name: (name not in KINDS, name)):
        durations = [(end - start) * 1e3 for start, end, kind in events if kind == what]
        print(f"  {what:9s} {counts[what] / span if span else 0:5.1f}/s  p50 {np.percentile(durations, 50):6.2f}  "
              f"p95 {np.percentile(durations, 95):6.2f}  max {max(durations):6.1f} ms")


async def run(keys: int, task: str, engine: str, rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="runctl-key-timeline-")) / "keys"
    root.mkdir(parents=True)
    with Recorder() as recorder:
        for _ in range(rounds):
            for training in (None, task):
                recorder.events.clear()
                latencies = await bench_ui._key_latencies(root, keys, training, rates=[], engine=engine)
                report("idle" if training is None else f"{task} training ({engine})", latencies,
                       list(recorder.events))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=150, help="keys a block (default 150)")
    parser.add_argument("--task", choices=bench_ui.KEY_TASKS, default="digits_mlp")
    parser.add_argument("--engine", choices=bench_ui.ENGINES, default="thread")
    parser.add_argument("--rounds", type=int, default=2, help="idle and training blocks, alternating")
    args = parser.parse_args()
    asyncio.run(run(args.keys, args.task, args.engine, args.rounds))


if __name__ == "__main__":
    main()
