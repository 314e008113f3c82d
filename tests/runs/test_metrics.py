"""runs.metrics: incremental reading of metrics.jsonl, resume handling, and the plot helpers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from runctl.runs.atomic import append_jsonl, atomic_write_text
from runctl.runs.jsonl_tail import JsonlTail
from runctl.runs.metrics import MetricsReader, downsample_minmax, ema_smooth

T0 = 1_700_000_000.0


def write_lines(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line)


def train(path: Path, step: int, loss: float, when: float | None = None, **extra: float) -> None:
    record = {"step": step, "time": T0 + step if when is None else when, "train/loss": loss, "lr": 0.1}
    record.update(extra)
    append_jsonl(path, record)


def resumed(run_dir: Path, step: int, when: float | None) -> None:
    event = {"event": "resumed", "step": step, "from": f"step_{step:08d}.pt"}
    if when is not None:
        event["time"] = when
    append_jsonl(run_dir / "events.jsonl", event)


def steps_of(reader: MetricsReader, name: str) -> list[int]:
    return [int(step) for step in reader.series(name)[0]]


def values_of(reader: MetricsReader, name: str) -> list[float]:
    return [float(value) for value in reader.series(name)[1]]


# -- reading ------------------------------------------------------------------------------------


def test_reads_columns_names_and_last(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in (10, 20, 30):
        train(path, step, 1.0 / step)
    append_jsonl(path, {"step": 30, "time": T0 + 31, "val/loss": 0.5, "val/acc": 0.9})
    reader = MetricsReader(path)

    assert reader.poll() is True
    assert reader.names() == ["train/loss", "lr", "val/loss", "val/acc"]
    steps, values = reader.series("train/loss")
    assert steps.dtype == np.int64 and values.dtype == np.float64
    assert steps.tolist() == [10, 20, 30]
    assert values.tolist() == pytest.approx([0.1, 0.05, 1 / 30])
    assert reader.last("val/acc") == (30, 0.9)
    assert reader.last("nope") is None
    assert len(reader.series("nope")[0]) == 0
    assert reader.times("train/loss").tolist() == [T0 + 10, T0 + 20, T0 + 30]
    assert reader.lines == 4 and reader.malformed == 0
    assert reader.poll() is False  # nothing new


def test_accepts_a_run_directory_and_a_missing_file(tmp_path: Path) -> None:
    reader = MetricsReader(tmp_path)
    assert reader.poll() is False and reader.names() == [] and reader.error is None
    train(tmp_path / "metrics.jsonl", 1, 2.0)
    assert reader.poll() is True
    assert steps_of(reader, "train/loss") == [1]


def test_series_are_read_only_views(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 2.0)
    reader = MetricsReader(path)
    reader.poll()
    steps, values = reader.series("train/loss")
    with pytest.raises(ValueError):
        values[0] = 3.0


def test_torn_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 1.0)
    line = json.dumps({"step": 2, "time": T0, "train/loss": 0.5}) + "\n"
    write_lines(path, line[:17])
    reader = MetricsReader(path)
    reader.poll()
    assert steps_of(reader, "train/loss") == [1]
    assert reader.malformed == 0

    write_lines(path, line[17:-1])  # still no newline
    assert reader.poll() is False
    write_lines(path, "\n")
    assert reader.poll() is True
    assert steps_of(reader, "train/loss") == [1, 2]
    assert reader.malformed == 0


def test_garbage_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 1.0)
    write_lines(
        path,
        "this is not json\n",
        "[1, 2, 3]\n",
        "42\n",
        '"a string"\n',
        '{"no_step": 1}\n',
        '{"step": "seven", "train/loss": 1}\n',
        '{"step": 2.5, "train/loss": 1}\n',
        '{"step": 1e300, "train/loss": 1}\n',
        '{"step": NaN, "train/loss": 1}\n',
        '{"step": 3, "train/loss": \n',  # truncated object, newline added by a later writer
        "\xff\xfe binary \n",
        "\n",
        "   \n",
    )
    train(path, 4, 0.25)
    write_lines(path, '{"step": 5, "train/loss": 0.2}\r\n')  # written on Windows
    reader = MetricsReader(path)
    reader.poll()
    assert steps_of(reader, "train/loss") == [1, 4, 5]
    assert reader.malformed == 11
    assert reader.lines == 3


def test_non_numeric_values_skip_only_that_metric(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    write_lines(
        path,
        '{"step": 1, "train/loss": 1.0, "note": "warmup", "acc": null}\n',
        '{"step": 2, "train/loss": 0.5, "note": "x", "acc": 0.7, "flag": true}\n',
        '{"step": 3, "train/loss": [1], "acc": 1e999}\n',
    )
    reader = MetricsReader(path)
    reader.poll()
    assert steps_of(reader, "train/loss") == [1, 2]
    assert steps_of(reader, "acc") == [2, 3]
    assert values_of(reader, "acc")[1] == math.inf  # 1e999 overflows to inf in JSON parsers
    assert reader.series("note")[0].size == 0
    assert values_of(reader, "flag") == [1.0]


def test_nan_and_infinity_are_floats(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 1.0)
    train(path, 2, math.nan)  # written with allow_nan=True, as the engine does
    train(path, 3, math.inf, grad_norm=-math.inf)
    reader = MetricsReader(path)
    reader.poll()
    values = values_of(reader, "train/loss")
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == math.inf
    assert values_of(reader, "grad_norm") == [-math.inf]
    assert reader.malformed == 0


def test_interleaved_line_shapes_keep_file_order(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in range(1, 31):
        train(path, step, 1.0)
        if step % 10 == 0:
            record = {"step": step, "time": T0 + step, "val/loss": float(step)}
            if step == 20:
                record["val/extra"] = 1.0  # a differently shaped line carrying the same metric
            append_jsonl(path, record)
    reader = MetricsReader(path)
    reader.poll()
    assert steps_of(reader, "val/loss") == [10, 20, 30]
    assert steps_of(reader, "train/loss") == list(range(1, 31))


def test_truncated_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in range(1, 11):
        train(path, step, 1.0)
    reader = MetricsReader(path)
    reader.poll()
    with open(path, "w", encoding="utf-8"):
        pass
    train(path, 5, 2.0)
    assert reader.poll() is True
    assert steps_of(reader, "train/loss") == [5]
    assert values_of(reader, "train/loss") == [2.0]


def test_replaced_file_is_read_again_even_when_longer(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 1.0)
    reader = MetricsReader(path)
    reader.poll()
    lines = "".join(json.dumps({"step": s, "train/loss": 9.0}) + "\n" for s in range(100, 110))
    atomic_write_text(path, lines)  # a new inode, larger than what was read
    reader.poll()
    assert steps_of(reader, "train/loss") == list(range(100, 110))
    assert set(values_of(reader, "train/loss")) == {9.0}


def test_rewritten_in_place_is_detected_by_the_line_end(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 1.0)
    reader = MetricsReader(path)
    reader.poll()
    inode = path.stat().st_ino
    long_line = json.dumps({"step": 7, "train/loss": 7.0, "pad": "x" * 200}) + "\n"
    with open(path, "r+", encoding="utf-8") as f:  # same inode, bigger, offset lands mid-line
        f.write(long_line)
    assert path.stat().st_ino == inode
    reader.poll()
    assert steps_of(reader, "train/loss") == [7]


def test_removed_file_clears_the_store(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 1.0)
    reader = MetricsReader(path)
    reader.poll()
    path.unlink()
    assert reader.poll() is True
    assert reader.names() == []
    train(path, 3, 1.0)
    reader.poll()
    assert steps_of(reader, "train/loss") == [3]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_reports_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    train(path, 1, 1.0)
    path.chmod(0)
    reader = MetricsReader(path)
    assert reader.poll() is False
    assert reader.error is not None and "metrics.jsonl" in reader.error


def test_appending_reads_only_the_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for step in range(20_000):
            f.write(json.dumps({"step": step, "time": T0 + step, "train/loss": 1.0, "lr": 0.1}) + "\n")
    reader = MetricsReader(path)
    reader.poll()
    size_before = path.stat().st_size

    seen: list[int] = []
    ingest = reader._ingest
    reader._ingest = lambda lines: (seen.append(len(lines)), ingest(lines))  # type: ignore[method-assign]
    for step in range(20_000, 20_100):
        train(path, step, 0.5)
    reader.poll()

    assert sum(seen) == 100
    assert reader._tail.offset == path.stat().st_size
    assert path.stat().st_size - size_before < 10_000
    steps = reader.series("train/loss")[0]
    assert len(steps) == 20_100 and steps[-1] == 20_099


def test_tail_hands_out_each_complete_line_once_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl"
    text = "".join(f'{{"i": {i}, "pad": "{"y" * (i % 50)}"}}\n' for i in range(500))
    path.write_text(text + '{"i": 500')
    tail = JsonlTail(path, chunk_bytes=64)  # smaller than most lines
    got: list[bytes] = []
    consumed = tail.poll(lambda: None, got.extend)
    assert consumed == len(text.encode())
    assert [json.loads(line)["i"] for line in got] == list(range(500))


# -- resumed runs -------------------------------------------------------------------------------


def killed_attempt(run_dir: Path) -> None:
    """Attempt 1 logs steps 10..130 (val every 50) and is killed; its last checkpoint was 100."""
    path = run_dir / "metrics.jsonl"
    for step in range(10, 140, 10):
        train(path, step, 1.0)
        if step % 50 == 0:
            append_jsonl(path, {"step": step, "time": T0 + step, "val/loss": 1.0})


def resumed_attempt(run_dir: Path, upto: int, start: int = 110) -> None:
    """Attempt 2 resumes from step 100 a long time later (wall time T0 + 10_000 + step)."""
    path = run_dir / "metrics.jsonl"
    for step in range(start, upto + 1, 10):
        train(path, step, 2.0, when=T0 + 10_000 + step)
        if step % 50 == 0:
            append_jsonl(path, {"step": step, "time": T0 + 10_000 + step, "val/loss": 2.0})


def assert_one_curve(reader: MetricsReader, last: int) -> None:
    steps = steps_of(reader, "train/loss")
    values = values_of(reader, "train/loss")
    assert steps == list(range(10, last + 1, 10))
    assert values == [1.0 if step <= 100 else 2.0 for step in steps]


def test_resume_seen_at_first_load(tmp_path: Path) -> None:
    killed_attempt(tmp_path)
    resumed(tmp_path, 100, T0 + 10_000)
    resumed_attempt(tmp_path, 200)
    reader = MetricsReader(tmp_path / "metrics.jsonl")
    reader.poll()
    assert_one_curve(reader, 200)
    assert steps_of(reader, "val/loss") == [50, 100, 150, 200]
    assert values_of(reader, "val/loss") == [1.0, 1.0, 2.0, 2.0]
    assert reader.resumes[0].step == 100


def test_resume_event_after_the_dead_points_were_read(tmp_path: Path) -> None:
    killed_attempt(tmp_path)
    reader = MetricsReader(tmp_path)
    reader.poll()
    assert steps_of(reader, "train/loss")[-1] == 130

    resumed(tmp_path, 100, T0 + 10_000)
    assert reader.poll() is True
    assert steps_of(reader, "train/loss")[-1] == 100
    assert reader.dropped == 6  # train/loss and lr at 110, 120, 130

    resumed_attempt(tmp_path, 160)
    reader.poll()
    assert_one_curve(reader, 160)


def test_resume_event_seen_after_the_new_attempt_logged(tmp_path: Path) -> None:
    # The dead attempt reached val at step 150; the new one has not, so only the event can
    # tell that the old val point is gone.
    path = tmp_path / "metrics.jsonl"
    for step in range(10, 170, 10):
        train(path, step, 1.0)
        if step % 50 == 0:
            append_jsonl(path, {"step": step, "time": T0 + step, "val/loss": 1.0})
    reader = MetricsReader(tmp_path)
    reader.poll()
    resumed_attempt(tmp_path, 130)  # steps 110..130 re-logged: a step going backwards
    reader.poll()
    assert_one_curve(reader, 130)
    assert steps_of(reader, "val/loss") == [50, 100, 150]  # not yet known to be dead

    resumed(tmp_path, 100, T0 + 10_000)
    reader.poll()
    assert_one_curve(reader, 130)  # the new attempt's points stay
    assert steps_of(reader, "val/loss") == [50, 100]


def test_resume_without_events_file_still_gives_one_curve(tmp_path: Path) -> None:
    killed_attempt(tmp_path)
    resumed_attempt(tmp_path, 200)
    reader = MetricsReader(tmp_path)
    reader.poll()
    assert_one_curve(reader, 200)


def test_resume_event_without_time_drops_what_was_read_before_it(tmp_path: Path) -> None:
    killed_attempt(tmp_path)
    reader = MetricsReader(tmp_path)
    reader.poll()
    resumed(tmp_path, 100, None)
    reader.poll()
    assert steps_of(reader, "train/loss")[-1] == 100
    resumed_attempt(tmp_path, 140)
    reader.poll()
    assert_one_curve(reader, 140)


def test_two_resumes_in_a_row(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in range(10, 140, 10):  # attempt 1: killed after 130, checkpoint at 100
        train(path, step, 1.0, when=T0 + step)
    resumed(tmp_path, 100, T0 + 1_000)
    for step in range(110, 260, 10):  # attempt 2: killed after 250, checkpoint at 200
        train(path, step, 2.0, when=T0 + 1_000 + step)
    resumed(tmp_path, 200, T0 + 5_000)
    for step in range(210, 310, 10):
        train(path, step, 3.0, when=T0 + 5_000 + step)
    reader = MetricsReader(tmp_path)
    reader.poll()
    steps = steps_of(reader, "train/loss")
    assert steps == list(range(10, 310, 10))
    expected = [1.0 if s <= 100 else 2.0 if s <= 200 else 3.0 for s in steps]
    assert values_of(reader, "train/loss") == expected


def test_replaced_events_file_rebuilds_the_store(tmp_path: Path) -> None:
    killed_attempt(tmp_path)
    resumed(tmp_path, 100, T0 + 10_000)
    reader = MetricsReader(tmp_path)
    reader.poll()
    assert steps_of(reader, "train/loss")[-1] == 100
    atomic_write_text(tmp_path / "events.jsonl", json.dumps({"event": "started", "time": T0}) + "\n")
    reader.poll()
    assert steps_of(reader, "train/loss")[-1] == 130  # no resume any more: nothing is dead


# -- downsampling and smoothing -----------------------------------------------------------------


def test_downsample_keeps_spikes_and_bounds_the_output() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(100_000, dtype=np.int64)
    values = rng.normal(1.0, 0.01, size=len(steps))
    values[54_321] = 50.0
    values[77_777] = -3.0
    xs, ys = downsample_minmax(steps, values, 120)
    assert len(xs) <= 240
    assert ys.max() == 50.0 and xs[ys.argmax()] == 54_321
    assert ys.min() == -3.0 and xs[ys.argmin()] == 77_777
    assert np.all(np.diff(xs) > 0)  # min and max of each column in the order they occur
    assert xs[0] >= 0 and xs[-1] <= 99_999


def test_downsample_gives_each_columns_min_and_max() -> None:
    steps = np.arange(12)
    values = np.array([3, 1, 2, 9, 5, 4, 4, 4, 4, 0, 8, 7], dtype=float)
    xs, ys = downsample_minmax(steps, values, 3)  # columns of 4 steps each
    assert xs.tolist() == [1, 3, 4, 5, 9, 10]
    assert ys.tolist() == [1, 9, 5, 4, 0, 8]


def test_downsample_ignores_non_finite_values_and_all_nan_columns() -> None:
    steps = np.arange(1000)
    values = np.linspace(0, 1, 1000)
    values[:500] = np.nan
    values[700] = np.inf
    xs, ys = downsample_minmax(steps, values, 10)
    assert np.all(np.isfinite(ys)) and len(xs) <= 20
    assert xs.min() >= 500
    xs, ys = downsample_minmax(steps, np.full(1000, np.nan), 10)
    assert len(xs) == 0 and len(ys) == 0


def test_downsample_small_input_is_returned_as_is() -> None:
    xs, ys = downsample_minmax(np.array([1, 2, 3]), np.array([1.0, np.nan, 3.0]), 80)
    assert xs.tolist() == [1, 3] and ys.tolist() == [1.0, 3.0]
    xs, ys = downsample_minmax(np.array([], dtype=np.int64), np.array([]), 80)
    assert len(xs) == 0
    with pytest.raises(ValueError):
        downsample_minmax(np.arange(3), np.arange(4.0), 10)


def ema_reference(values: np.ndarray, alpha: float) -> np.ndarray:
    out = values.copy()
    state = None
    for i, value in enumerate(values):
        if not math.isfinite(value):
            continue
        state = value if state is None else alpha * value + (1 - alpha) * state
        out[i] = state
    return out


@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.4, 0.99, 0.999999])
def test_ema_matches_the_recurrence(alpha: float) -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(0, 2, size=20_000) * rng.choice([-1, 1], size=20_000)
    values[[5, 600, 19_000]] = [np.nan, np.inf, np.nan]
    got = ema_smooth(values, alpha)
    want = ema_reference(values, alpha)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    scale = np.abs(values[np.isfinite(values)]).max()
    assert np.max(np.abs(got[finite] - want[finite])) <= 1e-9 * scale
    assert got[600] == np.inf  # non-finite inputs pass through


def test_ema_edge_cases() -> None:
    values = np.array([1.0, 2.0, 3.0])
    assert ema_smooth(values, 1.0).tolist() == [1.0, 2.0, 3.0]
    assert ema_smooth(np.array([]), 0.5).size == 0
    assert ema_smooth(np.array([np.nan, 4.0]), 0.5)[1] == 4.0
    with pytest.raises(ValueError):
        ema_smooth(values, 0.0)
    with pytest.raises(ValueError):
        ema_smooth(values, 1.5)
