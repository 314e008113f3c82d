"""RunLog when its log files cannot be written: the lines are lost, the run is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
