"""runs.events: incremental events.jsonl reading and resume points."""

from __future__ import annotations

import json
import math
from pathlib import Path

from runctl.runs.atomic import append_jsonl, atomic_write_text
from runctl.runs.events import EventsReader, ResumePoint, read_events, resume_point, resume_points


def test_reads_new_events_incrementally(tmp_path: Path) -> None:
    append_jsonl(tmp_path / "events.jsonl", {"time": 1.0, "event": "started", "step": 0})
    reader = EventsReader(tmp_path)
    assert [e["event"] for e in reader.poll()] == ["started"]
    assert reader.poll() == []
    append_jsonl(tmp_path / "events.jsonl", {"time": 2.0, "event": "checkpoint", "step": 10, "file": "a"})
    append_jsonl(tmp_path / "events.jsonl", {"time": 3.0, "event": "nan", "step": 11, "value": math.nan})
    new = reader.poll()
    assert [e["event"] for e in new] == ["checkpoint", "nan"]
    assert math.isnan(new[1]["value"])
    assert [e["event"] for e in reader.events] == ["started", "checkpoint", "nan"]


def test_garbage_and_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('not json\n[1]\n{"event": "started"}\n{"event": "fini')
    reader = EventsReader(path)
    assert [e["event"] for e in reader.poll()] == ["started"]
    assert reader.malformed == 2
    with open(path, "a", encoding="utf-8") as f:
        f.write('shed", "step": 5}\n')
    assert reader.poll() == [{"event": "finished", "step": 5}]


def test_replaced_file_starts_a_new_generation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for step in range(5):
        append_jsonl(path, {"event": "checkpoint", "step": step})
    reader = EventsReader(path)
    reader.poll()
    assert reader.generation == 0
    atomic_write_text(path, json.dumps({"event": "started", "step": 0}) + "\n")
    new = reader.poll()
    assert reader.generation == 1
    assert new == reader.events == [{"event": "started", "step": 0}]


def test_read_events_of_a_missing_run_is_empty(tmp_path: Path) -> None:
    assert read_events(tmp_path / "nope") == []
    assert EventsReader(tmp_path / "nope").poll() == []


def test_resume_points() -> None:
    events = [
        {"event": "started", "step": 0, "time": 1.0},
        {"event": "resumed", "step": 100, "from": "step_00000100.pt", "time": 5.0},
        {"event": "resumed", "step": 200.0},
        {"event": "resumed", "step": "x", "time": 6.0},
        {"event": "resumed", "step": True},
        {"event": "resumed", "step": -1},
        {"event": "resumed", "step": 300, "time": "late", "from": 3},
    ]
    points = resume_points(events)
    assert points[0] == ResumePoint(step=100, time=5.0, source="step_00000100.pt")
    assert points[1].step == 200 and math.isnan(points[1].time)
    assert points[2].step == 300 and math.isnan(points[2].time) and points[2].source is None
    assert len(points) == 3
    assert resume_point({"event": "stopped", "step": 1}) is None
