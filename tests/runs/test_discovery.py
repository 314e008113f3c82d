"""runs.discovery: finding runs, summarizing them, resolving references, and surviving bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from runctl.runs import discovery, integrity, run_yaml
from runctl.runs.checkpoints import list_checkpoints
from runctl.runs.discovery import (
    Detector,
    find_runs,
    last_train_loss,
    register_detector,
    resolve_run,
    run_checkpoints,
    summarize,
)
from runctl.runs.errors import RunctlError
from runctl.runs.layout import CHECKPOINT_DIR, checkpoint_name
from runctl.runs.lock import RunLock
from runctl.runs.model import RunSummary
from support.runs import make_run


def test_summary_of_a_finished_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "alpha", state="finished", step=100, max_steps=100, every=50,
                   checkpoint_steps=(50, 100), losses=(2.0, 1.5, 1.25))
    summary = summarize(run)
    assert (summary.run_id, summary.name, summary.layout, summary.state) == ("alpha", "alpha", "runctl", "finished")
    assert (summary.step, summary.max_steps, summary.last_loss) == (100, 100, 1.25)
    assert summary.checkpoints == 2 and summary.checkpoints_expected == 2 and summary.missing_steps == []
    assert summary.checkpoint_bytes == sum(i.bytes for i in list_checkpoints(run, level=None))
    assert summary.created_at is not None and summary.updated_at is not None
    assert summary.problems == [] and summary.error is None


def test_missing_final_checkpoint_is_reported(tmp_path: Path) -> None:
    # The seed's bug: the loop stopped one step short of max_steps and never saved the final.
    run = make_run(tmp_path, "offbyone", state="finished", step=2000, max_steps=2000, every=1000,
                   keep_last=None, checkpoint_steps=(1000,))
    summary = summarize(run)
    assert summary.checkpoints == 1 and summary.checkpoints_expected == 2
    assert summary.missing_steps == [2000]
    assert any("missing checkpoint" in p and "2000" in p for p in summary.problems)


def test_killed_engine_shows_interrupted_and_crash_carries_its_last_line(tmp_path: Path) -> None:
    killed = make_run(tmp_path, "killed", state="running", step=60, max_steps=100, checkpoint_steps=(50,))
    assert summarize(killed).state == "interrupted"
    live = make_run(tmp_path, "live", state="running", step=60, max_steps=100, checkpoint_steps=(50,))
    with RunLock(live):
        assert summarize(live).state == "running"
    crashed = make_run(tmp_path, "crashed", state="crashed", step=60, checkpoint_steps=(50,),
                       error="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory")
    assert summarize(crashed).error == "RuntimeError: CUDA out of memory"


def test_best_and_parent_come_from_manifest_and_run_yaml(tmp_path: Path) -> None:
    run = make_run(tmp_path, "b", checkpoint_steps=(50,))
    manifest_path = run / CHECKPOINT_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["best"] = {"file": checkpoint_name(50), "metric": "val/loss", "value": 0.5, "step": 50}
    manifest_path.write_text(json.dumps(manifest))
    cfg = json.loads((run / "run.yaml").read_text())
    cfg["parent"] = {"run_id": "a", "checkpoint": checkpoint_name(50)}
    (run / "run.yaml").write_text(json.dumps(cfg))
    summary = summarize(run)
    assert summary.best == {"metric": "val/loss", "value": 0.5, "step": 50}
    assert summary.parent == {"run_id": "a", "checkpoint": checkpoint_name(50)}


def test_find_runs_survives_every_kind_of_bad_entry(tmp_path: Path) -> None:
    make_run(tmp_path, "good", checkpoint_steps=(50, 100))
    (tmp_path / "a_file").write_text("not a run")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / ".hidden").mkdir()
    garbage = make_run(tmp_path, "garbage", checkpoint_steps=(50,))
    (garbage / "status.json").write_text("{{{")
    (garbage / "run.yaml").write_text("key: [unclosed")
    (garbage / CHECKPOINT_DIR / "manifest.json").write_text("garbage")
    (garbage / "metrics.jsonl").write_bytes(b"\x00\xff garbage\nmore garbage\n")
    ckpt_file = make_run(tmp_path, "ckptfile", checkpoint_steps=())
    (ckpt_file / CHECKPOINT_DIR).write_text("oops")
    looped = make_run(tmp_path, "looped", checkpoint_steps=())
    os.symlink(looped / CHECKPOINT_DIR, looped / CHECKPOINT_DIR)
    empty_ckpt = make_run(tmp_path, "zero", checkpoint_steps=())
    (empty_ckpt / CHECKPOINT_DIR).mkdir()
    (empty_ckpt / CHECKPOINT_DIR / checkpoint_name(50)).write_bytes(b"")

    runs = {r.name: r for r in find_runs(tmp_path)}
    # A stray file is nobody's run: not listed (a root is often a project folder full of files).
    assert set(runs) == {"good", "loop", "dangling", "garbage", "ckptfile", "looped", "zero"}
    assert runs["good"].state == "finished" and not runs["good"].problems
    assert runs["loop"].error == "symlink loop"
    assert runs["dangling"].error == "broken symlink"
    bad = runs["garbage"]
    assert bad.state == "unknown"
    text = " | ".join(bad.problems)
    assert "status.json: not valid JSON" in text and "run.yaml: not valid YAML" in text
    assert "manifest" in text and "metrics.jsonl" in text
    assert any("is a file, not a folder" in p for p in runs["ckptfile"].problems)
    assert runs["looped"].state == "finished"
    assert any(p.endswith("checkpoints: symlink loop") for p in runs["looped"].problems)
    assert any("corrupt" in p and "empty" in p for p in runs["zero"].problems)


def test_unreadable_run_does_not_stop_the_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run(tmp_path, "a", checkpoint_steps=())
    make_run(tmp_path, "b", checkpoint_steps=())
    real = discovery._summarize_runctl

    def fail_on_a(run_dir: Path) -> RunSummary:
        if run_dir.name == "a":
            raise PermissionError(13, "Permission denied")
        return real(run_dir)

    monkeypatch.setattr(discovery, "_DETECTORS", [Detector("runctl", discovery.is_run_dir, fail_on_a,
                                                           discovery.run_checkpoints)])
    runs = {r.name: r for r in find_runs(tmp_path)}
    assert runs["a"].state == "unknown" and "Permission denied" in runs["a"].error
    assert runs["b"].state == "finished"


def test_root_errors(tmp_path: Path) -> None:
    with pytest.raises(RunctlError, match="no such directory"):
        find_runs(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunctlError, match="is a file"):
        find_runs(tmp_path / "file")
    assert find_runs(tmp_path) == []


def test_a_run_given_as_root_lists_itself(tmp_path: Path) -> None:
    run = make_run(tmp_path, "solo", checkpoint_steps=())
    assert [r.name for r in find_runs(run)] == ["solo"]


def test_resolve_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, "r-123", checkpoint_steps=())
    cfg = json.loads((run / "run.yaml").read_text())
    cfg["name"] = "nice-name"
    (run / "run.yaml").write_text(json.dumps(cfg))
    assert resolve_run(str(run), tmp_path / "elsewhere") == run
    assert resolve_run("r-123", tmp_path) == run
    assert resolve_run("nice-name", tmp_path) == run
    with pytest.raises(RunctlError, match=f"unknown run 'nope' under {tmp_path}"):
        resolve_run("nope", tmp_path)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(RunctlError, match="plain.txt: is a file"):
        resolve_run("plain.txt", tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(RunctlError, match="folder: not a run directory"):
        resolve_run("folder", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert resolve_run("r-123", "runs").resolve() == run.resolve()  # a relative path from the cwd


def test_last_train_loss_reads_only_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "train/loss": float(i)}) for i in range(1, 20001)]
    lines += [json.dumps({"step": 20000, "val/loss": 0.1})] * 3
    path.write_text("\n".join(lines) + "\n" + '{"step": 20001, "train/lo')  # a torn last line
    assert last_train_loss(path) == (20000.0, None)
    assert last_train_loss(tmp_path / "none.jsonl") == (None, None)
    path.write_text("garbage\nmore\n")
    loss, problem = last_train_loss(path)
    assert loss is None and problem == f"{path}: 2 malformed line(s) at its end"
    path.write_text('{"step": 1, "train/loss": 0.5}\nnot json\n[1]\n{"train/loss": {}}\n{"step": 2, "val/loss": 1}\n')
    assert last_train_loss(path) == (0.5, f"{path}: 3 malformed line(s) at its end")


def test_a_new_layout_is_one_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a nanoGPT detector will look like: out/ckpt.pt marks the folder as a run.
    monkeypatch.setattr(discovery, "_DETECTORS", list(discovery.detectors()))
    (tmp_path / "nano" / "out").mkdir(parents=True)
    (tmp_path / "nano" / "out" / "ckpt.pt").write_bytes(b"x")
    register_detector(Detector(
        name="nanogpt",
        detect=lambda p: (p / "out" / "ckpt.pt").is_file(),
        summarize=lambda p: RunSummary(path=p, run_id=p.name, name=p.name, layout="nanogpt", state="unknown"),
        checkpoints=lambda p, level: [integrity.verify_file(p / "out" / "ckpt.pt", level or "quick")]))
    (run,) = find_runs(tmp_path)
    assert (run.name, run.layout) == ("nano", "nanogpt")
    assert resolve_run("nano", tmp_path) == tmp_path / "nano"
    (ckpt,) = run_checkpoints(tmp_path / "nano")
    assert (ckpt.name, ckpt.status) == ("ckpt.pt", "corrupt")


def test_listing_reads_the_same_run_yaml_values_as_a_full_parse(tmp_path: Path) -> None:
    # The listing parses only the top-level entries it shows; it must agree with a full parse,
    # and fall back to one for YAML the cut cannot handle.
    texts = {
        "engine": ("task: digits_mlp\nmax_steps: 30\nmodel: {hidden: 128}\n# a comment\n"
                   "checkpoint:\n  every: 10\n  keep_last: 3\nrun_id: e1\nname: 'my run'\n"
                   "created_at: 1795307497.27\nparent:\n  run_id: p0\n  checkpoint: step_00000010.pt\n"
                   "extensions:\n- {at_step: 30, max_steps: 60}\n"),
        "anchors": "base: &b {every: 5}\ncheckpoint: *b\nmax_steps: 10\nname: x\n",
        "flow": "{name: flowy, max_steps: 7, checkpoint: {every: 1}}\n",
        "tabs_and_tags": "name: !!str 123\nmax_steps: 9\n",
    }
    for label, text in texts.items():
        run = tmp_path / label
        run.mkdir()
        (run / "run.yaml").write_text(text)
        full, problem = discovery.read_run_yaml(run)
        assert problem is None
        listed, problem = run_yaml.run_yaml_for_listing(run)
        assert problem is None
        assert listed == {k: v for k, v in full.items() if k in run_yaml._LISTING_KEYS}, label
    assert summarize(tmp_path / "engine").parent == {"run_id": "p0", "checkpoint": "step_00000010.pt"}
