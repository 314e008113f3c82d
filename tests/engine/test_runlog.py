"""RunLog: when its log files cannot be written, the lines are lost, not the run; metrics lines
logged close together are written together, and never later than the next event, state change,
heartbeat or the end of the run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from runctl.engine import runlog as runlog_module
from runctl.engine.runlog import RunLog
from runctl.runs.layout import EVENTS_JSONL, METRICS_JSONL


def test_unwritable_logs_warn_once_and_training_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A directory where the file should be: open() fails with a real OSError, as on a full disk.
    (tmp_path / METRICS_JSONL).mkdir()
    (tmp_path / EVENTS_JSONL).mkdir()
    seen: list[dict] = []
    runlog = RunLog(tmp_path, max_steps=10, on_metrics=seen.append, heartbeat=60)
    for step in (1, 2):
        runlog.metrics({"step": step, "train/loss": 1.0})
    runlog.event("warning", message="kept")
    err = capsys.readouterr().err
    assert err.count(f"{tmp_path / METRICS_JSONL}: not written") == 1
    assert err.count(f"{tmp_path / EVENTS_JSONL}: not written") == 1
    assert [line["step"] for line in seen] == [1, 2]  # the in-process listener still hears them

    (tmp_path / METRICS_JSONL).rmdir()  # room again
    runlog.metrics({"step": 3, "train/loss": 0.5})
    runlog.close()
    assert "written again" in capsys.readouterr().err
    lines = [json.loads(line) for line in (tmp_path / METRICS_JSONL).read_text().splitlines()]
    assert [line["step"] for line in lines] == [3]


def _steps_on_disk(run_dir: Path) -> list[int]:
    path = run_dir / METRICS_JSONL
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def test_metrics_lines_logged_close_together_are_written_together_and_never_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runlog_module, "METRICS_WRITE_S", 3600.0)  # no line is due by time in this test
    seen: list[int] = []
    runlog = RunLog(tmp_path, max_steps=100, on_metrics=lambda line: seen.append(line["step"]), heartbeat=3600)
    runlog.metrics({"step": 10, "train/loss": 1.0})
    runlog.metrics({"step": 20, "train/loss": 0.5})
    runlog.metrics({"step": 30, "train/loss": 0.25})
    assert _steps_on_disk(tmp_path) == [10]  # the first is written at once, the next ones wait
    assert seen == [10, 20, 30]  # the in-process listener hears every line at once
    runlog.event("checkpoint", file="step_00000030.pt")  # an event writes the lines logged before it
    assert _steps_on_disk(tmp_path) == [10, 20, 30]
    runlog.metrics({"step": 40, "train/loss": 0.125})
    runlog.set_state("stopped")  # ... and so does a state change
    assert _steps_on_disk(tmp_path) == [10, 20, 30, 40]
    runlog.metrics({"step": 50, "train/loss": float("nan")})
    runlog.close()  # ... and the end
    assert _steps_on_disk(tmp_path) == [10, 20, 30, 40, 50]
    assert all(line.endswith("}") for line in (tmp_path / METRICS_JSONL).read_text().splitlines())


def test_the_heartbeat_writes_metrics_lines_a_stopped_loop_left_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runlog_module, "METRICS_WRITE_S", 3600.0)
    runlog = RunLog(tmp_path, max_steps=100, heartbeat=0.05)
    runlog.start()
    try:
        runlog.metrics({"step": 10, "train/loss": 1.0})
        runlog.metrics({"step": 20, "train/loss": 0.5})  # then the loop hangs: no line, no event
        deadline = time.monotonic() + 30
        while _steps_on_disk(tmp_path) != [10, 20] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _steps_on_disk(tmp_path) == [10, 20]
    finally:
        runlog.close()


def test_a_metrics_line_is_written_at_once_when_the_last_write_is_long_enough_ago(tmp_path: Path) -> None:
    runlog = RunLog(tmp_path, max_steps=100, heartbeat=3600)
    runlog.metrics({"step": 10, "train/loss": 1.0})
    time.sleep(runlog_module.METRICS_WRITE_S * 1.5)
    runlog.metrics({"step": 20, "train/loss": 0.5})  # a slow loop: every line written as it comes
    assert _steps_on_disk(tmp_path) == [10, 20]
    runlog.close()
