"""tui.gc_policy in a training process: once a run trains in the app's process, the objects alive
then (torch, the engine, the model) leave the collector's full passes, once per process; `runctl
train` collects less until its run has started, then freezes the same way. Run in fresh
processes: the thresholds and the freeze are process-wide, and the test worker may have frozen
already."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from runctl.tui.gc_policy import ENGINE_START_THRESHOLD
from support.cli import cli_env

SCRIPT = textwrap.dedent("""
    import asyncio, gc, sys
    from pathlib import Path
    from support.configs import slow_root_and_config
    from support.listing import make_test_app
    from support.run_files import metrics_step
    from runctl.tui.gc_policy import freeze_engine_imports

    tmp = Path(sys.argv[1])
    root, config = slow_root_and_config(tmp)

    async def main():
        app = make_test_app(root, tmp)
        async with app.run_test() as pilot:
            before = gc.get_freeze_count()
            run_dir = app.engine_host.start_new(str(config), "slow", [])
            while metrics_step(run_dir) < 1:
                await asyncio.sleep(0.05)
            after_start = gc.get_freeze_count()
            kept = [[object()] for _ in range(1000)]
            freeze_engine_imports()  # a second run's start: no second snapshot
            print(before, after_start, gc.get_freeze_count(), len(kept))
            app.engine_host.stop_all()
            await asyncio.get_running_loop().run_in_executor(None, app.engine_host.wait_all, 60.0)
            await pilot.press("q")

    asyncio.run(main())
""")


def test_an_in_process_run_freezes_the_heap_once(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=cli_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after_start, after_second, _ = map(int, done.stdout.split())
    assert before == 0
    assert after_start > 100_000  # torch alone leaves more than that
    assert after_second == after_start


TRAIN_SCRIPT = textwrap.dedent("""
    import gc, sys
    from runctl.engine import api
    from runctl.tui import cli

    seen = {"default": gc.get_threshold()[0]}
    resume_run = api.resume_run

    def spy(*args, on_event, **kwargs):
        seen["building"] = gc.get_threshold()[0]  # torch and the engine imported, the run not built

        def on_event_spy(event):
            on_event(event)
            if event["event"] == "started":
                seen["started"] = (gc.get_threshold()[0], gc.get_freeze_count())
        return resume_run(*args, on_event=on_event_spy, **kwargs)

    api.resume_run = spy
    code = cli.main(["train", "digits_mlp", "--root", sys.argv[1], "--name", "r", "--set", "max_steps=2"])
    refused = cli.main(["train", "digits_mlp", "--root", sys.argv[1], "--name", "r"])  # exists: exit 2
    print(code, refused, seen["default"], seen["building"], *seen["started"], gc.get_threshold()[0])
""")


def test_runctl_train_collects_less_until_its_run_starts_then_freezes_the_heap(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path)], env=cli_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, refused, default, building, at_start, frozen, after_refusal = map(int, done.stdout.split()[-7:])
    assert (code, refused) == (0, 2)
    assert building == ENGINE_START_THRESHOLD > default
    assert at_start == default and frozen > 100_000  # torch alone leaves more than that
    assert after_refusal == default  # a command that never started a run leaves the thresholds as they were
