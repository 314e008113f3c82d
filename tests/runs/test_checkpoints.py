"""runs.checkpoints: listing, expected vs present, and the one newest-valid rule resume uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from runctl.runs import integrity
from runctl.runs.checkpoints import (
    expected_checkpoints,
    list_checkpoints,
    missing_checkpoints,
    newest_valid,
    tally_checkpoints,
)
from runctl.runs.layout import CHECKPOINT_DIR, checkpoint_name
from runctl.runs.manifest import read_manifest, write_manifest
from support.checkpoints import flip_bit, member_data_offset, save_checkpoint, write_checkpoint
from support.runs import make_run


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    integrity.clear_cache()


def _cfg(every: int = 500, max_steps: int = 2000, keep_last: int | None = 3, **extra: object) -> dict:
    return {"max_steps": max_steps, "checkpoint": {"every": every, "keep_last": keep_last}, **extra}


def test_expected_periodic_up_to_the_current_step_within_keep_last() -> None:
    assert expected_checkpoints(_cfg(), "interrupted", 1700) == [500, 1000, 1500]
    assert expected_checkpoints(_cfg(keep_last=2), "crashed", 1700) == [1000, 1500]
    # running: the save at 1500 may still be in flight at step 1700
    assert expected_checkpoints(_cfg(), "running", 1700) == [500, 1000]
    assert expected_checkpoints(_cfg(), "running", 2000) == [500, 1000, 1500]
    assert expected_checkpoints(_cfg(keep_last=None), "interrupted", 1700) == [500, 1000, 1500]
    assert expected_checkpoints(_cfg(), "running", 300) == []


def test_expected_final_checkpoint_of_a_finished_run() -> None:
    # The seed's off-by-one: a finished run must end with a checkpoint at max_steps.
    assert expected_checkpoints(_cfg(every=1000, keep_last=None), "finished", 2000) == [1000, 2000]
    assert expected_checkpoints(_cfg(every=300, max_steps=1000), "finished", 1000) == [600, 900, 1000]
    assert expected_checkpoints(_cfg(every=1000), "crashed", 1999) == [1000]


def test_expected_respects_extensions_and_stop_checkpoints() -> None:
    cfg = _cfg(every=1000, keep_last=None, extensions=[{"at_step": 2000, "max_steps": 3000}])
    assert expected_checkpoints(cfg, "finished", 3000) == [1000, 2000, 3000]
    assert expected_checkpoints(_cfg(every=1000, keep_last=None), "stopped", 1234) == [1000, 1234]
    # keep_last 0 still keeps the newest, like the engine's retention
    assert expected_checkpoints(_cfg(every=100, keep_last=0), "interrupted", 450) == [400]


def test_expected_counts_other_checkpoints_against_keep_last() -> None:
    # A best checkpoint saved at an eval (step 6) took one of the keep_last=3 places: the engine
    # rightly deleted step 4, which must not be reported missing.
    cfg = _cfg(every=4, max_steps=12, keep_last=3)
    assert expected_checkpoints(cfg, "finished", 12, present=[6, 8, 12]) == [6, 8, 12]
    assert expected_checkpoints(cfg, "finished", 12, present=[6, 8]) == [6, 8, 12]
    # ... and the final checkpoint is always kept, even when newer files crowd keep_last.
    assert expected_checkpoints(_cfg(every=4, max_steps=12, keep_last=1), "finished", 12,
                                present=[13, 14]) == [12, 14]


def test_expected_tolerates_garbage_config() -> None:
    assert expected_checkpoints({"checkpoint": "nope", "max_steps": "x"}, "running", 100) == []
    assert expected_checkpoints({}, "finished", None) == []


def test_missing_checkpoints_names_the_absent_steps(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", state="finished", step=100, max_steps=100, every=50,
                   checkpoint_steps=(50,))
    present = list_checkpoints(run)
    missing = missing_checkpoints(expected_checkpoints(_cfg(every=50, max_steps=100), "finished", 100),
                                  present, run / CHECKPOINT_DIR)
    assert [(m.step, m.status, m.name) for m in missing] == [(100, "missing", checkpoint_name(100))]


def test_list_reports_temp_files_partial_and_vanished_files_missing(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", checkpoint_steps=(50, 100))
    ckpt_dir = run / CHECKPOINT_DIR
    (ckpt_dir / "step_00000150.pt.tmp.4242").write_bytes(b"PK\x03\x04partial")
    (ckpt_dir / "manifest.json.tmp.4242").write_text("{")  # not a checkpoint at all
    (ckpt_dir / checkpoint_name(50)).unlink()
    infos = {i.name: i for i in list_checkpoints(run, level="quick")}
    assert set(infos) == {checkpoint_name(50), checkpoint_name(100), "step_00000150.pt.tmp.4242"}
    assert infos[checkpoint_name(50)].status == "missing"
    assert infos[checkpoint_name(100)].status == "ok" and infos[checkpoint_name(100)].kind == "final"
    assert infos["step_00000150.pt.tmp.4242"].status == "partial"


def test_list_without_reading_uses_stat_and_manifest(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", checkpoint_steps=(50, 100))
    ckpt_dir = run / CHECKPOINT_DIR
    write_checkpoint(ckpt_dir / checkpoint_name(75), 75)  # no manifest entry
    path = ckpt_dir / checkpoint_name(100)
    path.write_bytes(path.read_bytes()[:100])
    infos = {i.step: i for i in list_checkpoints(run, level=None)}
    assert infos[50].status == "ok" and infos[50].level is None
    assert infos[75].status == "unverified"
    assert infos[100].status == "corrupt" and infos[100].reason.startswith("truncated")


def test_newest_valid_skips_damaged_newer_checkpoints(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", state="interrupted", step=150, max_steps=200,
                   checkpoint_steps=(50, 100, 150))
    ckpt_dir = run / CHECKPOINT_DIR
    offset, _ = member_data_offset(ckpt_dir / checkpoint_name(150), "data/0")
    flip_bit(ckpt_dir / checkpoint_name(150), offset)
    (ckpt_dir / "step_00000200.pt.tmp.999").write_bytes(b"PK")
    chosen, skipped = newest_valid(run)
    assert chosen is not None and chosen.step == 100 and chosen.status == "ok"
    assert [(s.name, s.status) for s in skipped] == [("step_00000200.pt.tmp.999", "partial"),
                                                     (checkpoint_name(150), "corrupt")]
    assert skipped[1].reason.startswith("crc mismatch")


def test_newest_valid_accepts_a_complete_file_the_manifest_missed(tmp_path: Path) -> None:
    # A crash between the rename and the manifest update leaves an intact, unlisted file.
    run = make_run(tmp_path, "r", state="interrupted", step=150, checkpoint_steps=(50, 100))
    write_checkpoint(run / CHECKPOINT_DIR / checkpoint_name(150), 150)
    chosen, skipped = newest_valid(run)
    assert (chosen.step, chosen.status, skipped) == (150, "unverified", [])


@pytest.mark.parametrize("stranger", [{"hidden": 16}, {"run_id": "another-run"}])
def test_newest_valid_skips_an_unlisted_file_from_elsewhere(tmp_path: Path, stranger: dict) -> None:
    # An intact checkpoint copied in from another run or model, with no manifest entry: full
    # verification cannot tell it from a save whose manifest update was cut off; a deep look can.
    run = make_run(tmp_path, "r", state="interrupted", step=150, checkpoint_steps=(50, 100))
    write_checkpoint(run / CHECKPOINT_DIR / checkpoint_name(150), 150, **stranger)
    chosen, skipped = newest_valid(run)
    assert chosen.step == 100 and chosen.status == "ok"
    assert [(s.step, s.status) for s in skipped] == [(150, "incompatible")]
    assert ("shape" if "hidden" in stranger else "saved by run 'another-run'") in skipped[0].reason


def test_newest_valid_deep_skips_an_incompatible_checkpoint(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", state="interrupted", step=100, checkpoint_steps=(50,))
    save_checkpoint(run, 100, format="something-else")
    chosen, skipped = newest_valid(run, level="deep")
    assert chosen.step == 50
    assert skipped[0].status == "incompatible" and "format" in skipped[0].reason
    chosen, _ = newest_valid(run, level="full")
    assert chosen.step == 100  # full does not load, so it cannot know


def test_newest_valid_none_when_nothing_is_usable(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", checkpoint_steps=(50,))
    (run / CHECKPOINT_DIR / checkpoint_name(50)).write_bytes(b"")
    chosen, skipped = newest_valid(run)
    assert chosen is None and skipped[0].reason == "empty"
    assert newest_valid(tmp_path / "no-such-run") == (None, [])


def test_deep_list_marks_a_checkpoint_whose_model_differs(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", checkpoint_steps=(50, 100))
    save_checkpoint(run, 150, hidden=16)  # the run's other checkpoints have hidden=8
    infos = {i.step: i for i in list_checkpoints(run, level="deep")}
    assert infos[50].status == "ok" and infos[100].status == "ok"
    assert infos[150].status == "incompatible" and "shape" in infos[150].reason


def test_garbage_manifest_makes_files_unverified_not_fatal(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", checkpoint_steps=(50,))
    (run / CHECKPOINT_DIR / "manifest.json").write_text("{not json")
    assert read_manifest(run / CHECKPOINT_DIR).error
    (info,) = list_checkpoints(run, level="full")
    assert info.status == "unverified" and info.step == 50


def test_manifest_step_wins_over_the_file_name(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", checkpoint_steps=(50,))
    manifest = read_manifest(run / CHECKPOINT_DIR)
    manifest.files[checkpoint_name(50)].step = 49
    write_manifest(run / CHECKPOINT_DIR, manifest)
    (info,) = list_checkpoints(run, level="quick")
    assert info.step == 49


def test_tally_counts_without_reading_checkpoint_bytes(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", checkpoint_steps=(50, 100, 150))
    ckpt_dir = run / CHECKPOINT_DIR
    (ckpt_dir / "step_00000200.pt.tmp.77").write_bytes(b"PK")
    (ckpt_dir / checkpoint_name(50)).unlink()
    path = ckpt_dir / checkpoint_name(150)
    path.write_bytes(path.read_bytes()[:-5])
    tally = tally_checkpoints(run)
    sizes = [p.stat().st_size for p in (ckpt_dir / checkpoint_name(100), path)]
    assert (tally.count, tally.bytes, tally.steps, tally.partial, tally.gone) == (2, sum(sizes), {100, 150}, 1, [50])
    assert [name for name, _ in tally.corrupt] == [checkpoint_name(150)]
    assert tally.corrupt[0][1].startswith("truncated")


@pytest.mark.parametrize("level", [None, "full"])
def test_a_checkpoint_deleted_between_scan_and_stat_is_gone_not_unreadable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str | None) -> None:
    """Retention rewrites the manifest, then deletes: a reader that scanned just before must not
    report the deleted file as an unreadable (corrupt) checkpoint."""
    import runctl.runs.checkpoints as checkpoints_module

    run = make_run(tmp_path, "r", checkpoint_steps=(50, 100))
    doomed = run / CHECKPOINT_DIR / checkpoint_name(50)
    scan = checkpoints_module._scan

    def scan_then_retention_deletes(folder: Path) -> list:
        entries = scan(folder)
        manifest = read_manifest(folder)
        manifest.files.pop(doomed.name, None)
        write_manifest(folder, manifest)
        doomed.unlink()
        return entries

    monkeypatch.setattr(checkpoints_module, "_scan", scan_then_retention_deletes)
    tally = tally_checkpoints(run, read_manifest(run / CHECKPOINT_DIR))
    assert (tally.count, tally.corrupt) == (1, [])
    doomed.write_bytes((run / CHECKPOINT_DIR / checkpoint_name(100)).read_bytes())  # put one back to delete again
    infos = list_checkpoints(run, level=level, manifest=read_manifest(run / CHECKPOINT_DIR))
    assert [(i.name, i.status) for i in infos] == [(checkpoint_name(100), "ok")]
