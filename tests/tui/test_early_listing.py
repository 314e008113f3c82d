"""The first listing read by a child forked at `runctl`'s start (tui.early_listing).

The fork is refused while other threads run, and a pytest worker has threads (xdist's), so what
`runctl ROOT` does is run where it does it: in a fresh single-threaded process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from runctl.tui.early_listing import EarlyListing
from support.listing import write_many_runs
from support.waiting import pilot_wait_for

CHILD_TIMEOUT = 120


# Prepended to each script: wait until the runs table of `app` holds `count` rows.
WAIT_FOR_ROWS = """
import asyncio

async def rows_shown(app, count, poll=0.01):
    from runctl.tui.widgets.runs_table import RunsTable
    for _ in range(int(60 / poll)):
        tables = app.screen.query(RunsTable)
        if tables and tables.first().row_count == count:
            return tables.first()
        await asyncio.sleep(poll)
    raise AssertionError(f"{count} rows never shown")
"""


def _run_script(script: str, *args: str) -> dict:
    code = WAIT_FOR_ROWS + textwrap.dedent(script)
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=CHILD_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_child_hands_over_the_newest_screenful_then_every_row_and_is_reaped(tmp_path: Path) -> None:
    root = write_many_runs(tmp_path / "runs", 25)
    report = _run_script("""
        import json, os, sys
        from pathlib import Path
        from runctl.tui.early_listing import EarlyListing
        from runctl.tui.run_rows import load_rows

        root = Path(sys.argv[1])
        early = EarlyListing.start(root, newest=10, depth=2)
        assert early is not None, "a single-threaded process on Linux forks"
        pid = early._pid
        messages = [(kind, [row.name for row in rows]) for kind, rows in early.messages()]
        try:
            os.waitpid(pid, os.WNOHANG)
            reaped = False
        except ChildProcessError:
            reaped = True
        head = []
        expected = [row.name for row in load_rows(root, newest=10, on_newest=head.extend, depth=2)]
        print(json.dumps({"messages": messages, "head": [row.name for row in head], "expected": expected,
                          "reaped": reaped}))
    """, str(root))
    (first, newest), (last, every) = report["messages"]
    assert (first, last) == ("newest", "all")
    # The same rows, in the same order, as the runs list's own call hands over.
    assert newest == report["head"] and len(newest) == 10
    assert every == report["expected"] and len(every) == 25
    assert report["reaped"], "the child is reaped once its listing is in"


def test_a_child_stopped_before_its_listing_leaves_the_runs_list_to_read_it(tmp_path: Path) -> None:
    # The app is given an early listing whose child is already gone: the first load falls back
    # to reading the root itself, and every run is listed.
    root = write_many_runs(tmp_path / "runs", 70)
    report = _run_script("""
        import asyncio, json, sys
        from pathlib import Path
        from runctl.tui.commands.open_ui import build_app

        root = Path(sys.argv[1])
        app = build_app(root, keymap_path=root.parent / "no-keys.yaml")
        early = app._early_listing
        assert early is not None
        early.close()  # SIGKILL before a row is sent

        async def main():
            async with app.run_test(size=(120, 30)) as pilot:
                count = (await rows_shown(app, 70)).row_count
                await pilot.press("q")
            print(json.dumps({"rows": count, "taken": app._early_listing is None}))

        asyncio.run(main())
    """, str(root))
    assert report == {"rows": 70, "taken": True}


def test_runctl_root_paints_every_run_from_the_early_listing(tmp_path: Path) -> None:
    # `runctl ROOT`'s own path (open_ui.build_app): the rows the table shows came from the child,
    # which is reaped before the UI exits.
    root = write_many_runs(tmp_path / "runs", 90)
    report = _run_script("""
        import asyncio, json, os, sys
        from pathlib import Path
        from runctl.tui import early_listing
        from runctl.tui.commands.open_ui import build_app

        received = []
        messages = early_listing.EarlyListing.messages

        def counted(self):
            for kind, rows in messages(self):
                received.append((kind, len(rows)))
                yield kind, rows

        early_listing.EarlyListing.messages = counted
        root = Path(sys.argv[1])
        app = build_app(root, keymap_path=root.parent / "no-keys.yaml")
        pid = app._early_listing._pid

        async def main():
            async with app.run_test(size=(120, 30)) as pilot:
                names = sorted((await rows_shown(app, 90)).visible_names())
                await pilot.press("q")
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped = False
            except ChildProcessError:
                reaped = True
            print(json.dumps({"received": received, "names": names, "reaped": reaped}))

        asyncio.run(main())
    """, str(root))
    assert report["received"] == [["newest", 60], ["all", 90]]
    assert report["names"] == [f"run-{i:04d}" for i in range(90)]
    assert report["reaped"]


def test_no_fork_while_another_thread_runs(tmp_path: Path) -> None:
    # A fork copies only the calling thread: a lock another thread holds at that moment stays
    # held in the child forever. With threads running, the runs list reads the listing itself.
    release = threading.Event()
    worker = threading.Thread(target=release.wait, daemon=True)
    worker.start()
    try:
        assert EarlyListing.start(tmp_path, newest=10, depth=2) is None
    finally:
        release.set()
        worker.join()
    assert not os.listdir(tmp_path), "nothing written into the root"


def test_q_pressed_as_the_listing_paints_ends_the_process(tmp_path: Path) -> None:
    # The runs list starts the watcher and the alert scanner after its first full paint. A `q`
    # in that instant used to start them while the app was closing: nothing cancelled the
    # scanner's worker, and the process never exited.
    root = write_many_runs(tmp_path / "runs", 200)
    for attempt in range(3):
        report = _run_script("""
            import asyncio, json, sys
            from pathlib import Path
            from runctl.tui.commands.open_ui import build_app

            root = Path(sys.argv[1])
            app = build_app(root, keymap_path=root.parent / "no-keys.yaml")

            async def main():
                async with app.run_test(size=(120, 30)) as pilot:
                    await (await rows_shown(app, 200, poll=0.002)).wait_for_refresh()
                    await pilot.press("q")
                print(json.dumps({"rows": 200, "alerts_started": app._alerts_started}))

            asyncio.run(main())
        """, str(root))
        assert report["rows"] == 200, attempt


async def test_nothing_starts_watching_once_the_app_has_stopped(tmp_path: Path) -> None:
    from runctl.tui.alerts import AlertSettings
    from runctl.tui.app import make_app

    root = write_many_runs(tmp_path / "runs", 3)
    app = make_app(root, watch=True, keymap_path=tmp_path / "no-keys.yaml", alerts=AlertSettings())
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert app._alerts_started and app._watch_requested, "started after the first paint"
    app._alerts_started = app._watch_requested = False
    threads = threading.active_count()
    app.start_watching()  # the first paint's callback, arriving after the app ended
    assert threading.active_count() == threads
    assert not app._alerts_started and not app._watch_requested


async def test_a_watch_worker_that_never_ran_does_not_hold_the_exit(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch worker cancelled before it ran (the app closing as the first paint lands) never
    sets watch_ready: the exit must not wait for it (it waited 10 s)."""
    from runctl.tui.app import RunctlApp, make_app

    monkeypatch.setattr(RunctlApp, "_start_watching", lambda self: None)  # requested, never ran
    root = write_many_runs(tmp_path / "runs", 3)
    app = make_app(root, watch=True, keymap_path=tmp_path / "no-keys.yaml")
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot_wait_for(pilot, lambda: app._watch_requested, "the first paint to ask for the watcher")
        started = time.monotonic()
    assert time.monotonic() - started < 5.0
    assert not app.watch_ready.is_set()
