"""A log too large to read whole is read from its last GiB, and the user is told so: `runctl
summary` prints the note under its table (and in --json), and the run view shows it in the Events
tab, beside the plot of what was read.

One real run is trained; its metrics.jsonl is then moved 1.1 GiB into a sparse file (a hole of
zeros, no disk used, then the run's own lines), so the reader starts inside the hole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.cli import run_cli
from support.run_files import read_jsonl
from support.runs import train_finished_run

HOLE = int(1.1 * 2**30)
NOTE = "metrics.jsonl: 1126 MiB; only its last 1024 MiB are read (older lines are left out)"


def note_of(run: Path) -> str:
    return f"{run}/{NOTE}"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_finished_run(tmp_path_factory.mktemp("log-notes"), ["max_steps=6", "eval.every=3", "eval.batches=1"])


def huge_metrics_run(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "base"
    shutil.copytree(trained_run, run)
    lines = (run / "metrics.jsonl").read_bytes()
    with open(run / "metrics.jsonl", "wb") as file:
        file.seek(HOLE - len(lines) - 1)
        file.write(b"\n" + lines)
    assert (run / "metrics.jsonl").stat().st_size == HOLE
    return run


def test_summary_says_what_a_huge_metrics_log_leaves_out(trained_run: Path, tmp_path: Path) -> None:
    run = huge_metrics_run(trained_run, tmp_path)
    done = run_cli(["summary", tmp_path / "runs"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"base: {NOTE}" in done.stdout.splitlines(), done.stdout
    done = run_cli(["summary", tmp_path / "runs", "--json"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)["runs"][0]
    assert record["notes"] == [note_of(run)], record
    # What was read is still there: the run's own lines sit in the last GiB.
    losses = [line["train/loss"] for line in read_jsonl(trained_run / "metrics.jsonl") if "train/loss" in line]
    assert record["final_loss"] == losses[-1], record


def test_summary_of_an_ordinary_run_has_no_notes(trained_run: Path, tmp_path: Path) -> None:
    shutil.copytree(trained_run, tmp_path / "runs" / "base")
    done = run_cli(["summary", tmp_path / "runs", "--json"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"][0]["notes"] == []


@pytest.mark.timeout(180)
async def test_the_run_view_shows_the_note_in_its_events_tab(trained_run: Path, tmp_path: Path) -> None:
    from runctl.tui.app import make_app
    from runctl.tui.screens.run_view import RunViewScreen
    from runctl.tui.widgets.events_log import EventsLog
    from textual.widgets import TabbedContent

    run = huge_metrics_run(trained_run, tmp_path)
    app = make_app(tmp_path / "runs", watch=False, keymap_path=tmp_path / "no-keys.yaml")
    async with app.run_test(size=(120, 36)) as pilot:
        app.open_run(run)

        def events_log() -> EventsLog | None:
            screen = app.screen
            logs = screen.query(EventsLog) if isinstance(screen, RunViewScreen) else []
            return logs[0] if logs else None

        for _ in range(2400):
            log = events_log()
            if log is not None and log.notes and log.event_count:
                break
            await pilot.pause(0.05)
        log = events_log()
        assert log is not None and log.notes == [note_of(run)], log and log.notes
        app.screen.query_one(TabbedContent).active = "tab-events"
        await pilot.pause()
        shown = ["".join(segment.text for segment in strip) for strip in log.lines]
        assert any(f"note: {note_of(run)}" in line for line in shown), shown
        assert any("finished" in line for line in shown), shown  # the events themselves are shown too
        await pilot.press("q")
    assert app.return_code in (0, None)
