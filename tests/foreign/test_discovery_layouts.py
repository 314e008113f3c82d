"""Discovery of runs other tools wrote, anywhere under a root, one detector per layout."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trees
from runctl.runs import discovery
from runctl.runs.discovery import find_runs, metrics_reader, resolve_run, run_checkpoints, summarize
from runctl.runs.layouts import common, textlog
from runctl.runs.pickle_peek import peek_checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("foreign")
    trees.foreign_root(root)
    return root


def test_every_layout_is_found_at_its_depth_and_named_by_its_path(root: Path) -> None:
    runs = {run.name: run for run in find_runs(root)}
    assert {name: run.layout for name, run in runs.items()} == {
        trees.NANOGPT: "nanogpt", trees.HF: "hf-trainer", trees.LIGHTNING: "lightning",
        trees.TENSORBOARD: "tensorboard", trees.PLAIN: "plain", trees.UUID_RUN: "plain"}
    assert all(run.error is None and not run.problems for run in runs.values()), runs


def test_what_each_listing_knows(root: Path) -> None:
    runs = {run.name: run for run in find_runs(root)}
    nano = runs[trees.NANOGPT]
    assert (nano.step, nano.max_steps, nano.checkpoints, nano.state) == (250, 500, 1, "unknown")
    assert nano.best == {"metric": "val/loss", "value": pytest.approx(1.4697), "step": None}
    assert nano.last_loss == pytest.approx(4.2 - 250 / 190, abs=1e-4)
    hf = runs[trees.HF]
    # checkpoint-4, checkpoint-8 and the final model at the top
    assert (hf.step, hf.max_steps, hf.checkpoints, hf.state) == (8, 8, 3, "finished")
    assert hf.last_loss == pytest.approx(0.3)
    lightning = runs[trees.LIGHTNING]
    assert (lightning.step, lightning.checkpoints, lightning.last_loss) == (8, 2, pytest.approx(0.65))  # last.ckpt: a copy
    plain = runs[trees.PLAIN]
    assert (plain.step, plain.checkpoints, plain.state) == (2000, 5, "finished")  # final_model.pt is there
    assert plain.last_loss == pytest.approx(2.0 - 2000 / 1500, abs=1e-3)
    assert runs[trees.UUID_RUN].step == 512
    assert runs[trees.TENSORBOARD].checkpoints == 0 and runs[trees.TENSORBOARD].updated_at == trees.MTIME


def test_checkpoint_records_steps_roles_and_the_copy_last_ckpt_is(root: Path) -> None:
    def by_name(run: str, level: str | None) -> dict[str, tuple]:
        return {i.name: (i.step, i.kind, i.copy_of, i.bytes > 0) for i in run_checkpoints(root / run, level)}

    assert by_name(trees.PLAIN, None) == {
        "checkpoint_step_00100.pt": (100, None, None, True), "checkpoint_step_01000.pt": (1000, None, None, True),
        "checkpoint_step_02000.pt": (2000, None, None, True), "best_model.pt": (None, "best", None, True),
        "final_model.pt": (None, "final", None, True)}
    # At a verify level the step of a file named without one is read from its content.
    assert by_name(trees.PLAIN, "quick")["best_model.pt"] == (1000, "best", None, True)
    lightning = by_name(trees.LIGHTNING, "quick")
    assert lightning["checkpoints/last.ckpt"] == (8, "last", "checkpoints/epoch=1-step=8.ckpt", True)
    assert lightning["checkpoints/epoch=0-step=4.ckpt"] == (4, None, None, True)
    hf = by_name(trees.HF, None)
    assert {name for name in hf if name.startswith("checkpoint-8/")} == {
        f"checkpoint-8/{f}" for f in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                      "training_args.bin")}
    assert hf["checkpoint-4/optimizer.pt"][:2] == (4, None)
    assert hf["model.safetensors"][:2] == (8, "final")
    assert by_name(trees.NANOGPT, None) == {"ckpt.pt": (250, "last", None, True)}


def test_last_ckpt_that_differs_is_no_copy(tmp_path: Path) -> None:
    run = trees.lightning_run(tmp_path / "lightning_logs" / "version_3")
    last = run / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[-30] ^= 1  # same size, other bytes
    last.write_bytes(bytes(data))
    copies = {i.name: i.copy_of for i in run_checkpoints(run, "quick")}
    assert copies["checkpoints/last.ckpt"] is None
    last.unlink()
    last.symlink_to("epoch=1-step=8.ckpt")
    copies = {i.name: i.copy_of for i in run_checkpoints(run, None)}
    assert copies["checkpoints/last.ckpt"] == "checkpoints/epoch=1-step=8.ckpt"


def test_tool_trees_are_skipped_and_depth_is_bounded(tmp_path: Path) -> None:
    trees.skipped_trees(tmp_path)
    assert find_runs(tmp_path) == []
    deep = tmp_path / "a" / "b" / "c" / "d" / "e"
    trees.uuid_run(deep)
    assert find_runs(tmp_path) == []  # depth 5 > 4
    assert [run.name for run in find_runs(tmp_path, depth=5)] == ["a/b/c/d/e"]
    trees.uuid_run(tmp_path / "a" / "b" / "c" / "d")
    # A folder recognised as a run is not searched further.
    assert [run.name for run in find_runs(tmp_path, depth=5)] == ["a/b/c/d"]


def test_symlink_loops_and_unreadable_folders_are_notes(tmp_path: Path) -> None:
    trees.uuid_run(tmp_path / "project" / "logs" / "r1")
    os.symlink(tmp_path / "project", tmp_path / "project" / "logs" / "up")  # a loop back up the tree
    os.symlink("self", tmp_path / "project" / "self")  # ELOOP
    os.symlink(tmp_path / "project" / "logs", tmp_path / "logs-link")  # the same runs again
    locked = tmp_path / "project" / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        runs = {run.name: run for run in find_runs(tmp_path)}
    finally:
        locked.chmod(stat.S_IRWXU)
    assert runs["project/logs/r1"].layout == "plain"
    assert runs["project/logs/up"].error == "symlink loop"
    assert runs["project/self"].error == "symlink loop"
    if os.geteuid() != 0:  # root reads any folder
        assert runs["project/locked"].error.startswith("unreadable")
    # The symlinked folder's run is listed once, under the path met first.
    assert len([run for run in runs.values() if run.layout == "plain"]) == 1


def test_a_run_given_as_root_and_resolved_by_its_relative_name(root: Path) -> None:
    (run,) = find_runs(root / trees.LIGHTNING)
    assert (run.name, run.layout) == ("version_0", "lightning")
    assert resolve_run(trees.LIGHTNING, root) == root / trees.LIGHTNING
    assert summarize(root / trees.LIGHTNING, root).name == trees.LIGHTNING


def test_the_newest_foreign_runs_are_handed_over_first(tmp_path: Path) -> None:
    for index in range(5):
        trees.uuid_run(tmp_path / f"run{index}")
        os.utime(tmp_path / f"run{index}", (1000.0 + index, 1000.0 + index))
    handed: list[list[str]] = []
    runs = find_runs(tmp_path, newest=2, on_newest=lambda head: handed.append([r.name for r in head]))
    assert handed == [["run4", "run3"]]
    assert [run.name for run in runs] == [f"run{i}" for i in range(5)]


def test_a_file_still_being_written_makes_a_running_run(tmp_path: Path) -> None:
    run = trees.plain_run(tmp_path / "exp")
    trees.set_mtimes(run, trees.MTIME)
    assert summarize(run).state == "finished"
    (run / "final_model.pt").unlink()
    assert summarize(run).state == "unknown"
    (run / "checkpoint_step_03000.pt.tmp").write_bytes(b"partial")
    os.utime(run / "checkpoint_step_03000.pt.tmp", (trees.MTIME, trees.MTIME))
    summary = summarize(run)
    assert summary.state == "running"
    partial = {i.name: i.status for i in run_checkpoints(run, None)}["checkpoint_step_03000.pt.tmp"]
    assert partial == "partial"
    (run / "checkpoint_step_03000.pt.tmp").unlink()
    (run / "training.log").write_text("step 2100 | loss 0.1\n")  # written just now
    assert summarize(run).state == "running"


def test_hf_save_in_progress_is_partial(tmp_path: Path) -> None:
    run = trees.hf_run(tmp_path / "out", finished=False)
    shutil.copytree(run / "checkpoint-4", run / "tmp-checkpoint-6")
    trees.set_mtimes(run, trees.MTIME)
    summary = summarize(run)
    assert (summary.state, summary.checkpoints, summary.step, summary.max_steps) == ("running", 1, 4, 8)
    statuses = {i.name: i.status for i in run_checkpoints(run, None)}
    assert statuses["tmp-checkpoint-6/model.safetensors"] == "partial"


@pytest.mark.parametrize("name, step, role", [
    ("checkpoint_step_01000.pt", 1000, None), ("model_step000256.pt", 256, None), ("step_500.pt", 500, None),
    ("checkpoint-500.pt", 500, None), ("iter_2000.pth", 2000, None), ("epoch=3-step=24.ckpt", 24, None),
    ("best_model.pt", None, "best"), ("final.pt", None, "final"), ("final_model.safetensors", None, "final"),
    ("last.ckpt", None, "last"), ("latest.pth", None, "last"), ("ckpt.pt", None, "last"),
    ("model.bin", None, None), ("best_step_300.pt", 300, "best"),
])
def test_step_and_role_from_names(name: str, step: int | None, role: str | None) -> None:
    assert (common.step_from_name(name), common.role_from_name(name)) == (step, role)


def test_peek_reads_nanogpt_values_without_unpickling(root: Path) -> None:
    values = peek_checkpoint(root / trees.NANOGPT / "ckpt.pt", ("iter_num", "best_val_loss", "config", "model"))
    assert values["iter_num"] == 250 and values["best_val_loss"] == pytest.approx(1.4697)
    assert values["config"]["max_iters"] == 500
    assert values["model"] == {"layer.weight": None, "layer.bias": None}  # tensors stay unread
    assert peek_checkpoint(root / trees.HF / "model.safetensors", ("step",)) == {}


def test_peek_runs_no_code(tmp_path: Path) -> None:
    import pickle
    import zipfile

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"step": 7, "payload": Evil()}, protocol=2))
    assert peek_checkpoint(path, ("step", "payload")) == {"step": 7, "payload": None}
    assert not marker.exists()


@pytest.mark.parametrize("line, points", [
    ("iter 100: loss 2.3456, time 12.34ms, mfu 1.23%", [("train/loss", 100, 2.3456)]),
    ("step 250: train loss 1.9000, val loss 2.0100", [("eval/train_loss", 250, 1.9), ("val/loss", 250, 2.01)]),
    ("Step 500/1000 | train loss 0.120 | val_loss 0.2 | lr 3e-4",
     [("train/loss", 500, 0.12), ("val/loss", 500, 0.2), ("lr", 500, 3e-4)]),
    ("[rank0] global_step=40 loss=0.5", [("train/loss", 40, 0.5)]),
    ("{'loss': 0.6931, 'grad_norm': 1.25, 'learning_rate': 4.5e-05, 'epoch': 0.5}",
     [("loss", None, 0.6931), ("grad_norm", None, 1.25), ("learning_rate", None, 4.5e-05)]),
    ("{'loss': '3.887', 'grad_norm': '0.8283', 'learning_rate': '0.001', 'epoch': '0.125'}",
     [("loss", None, 3.887), ("grad_norm", None, 0.8283), ("learning_rate", None, 0.001)]),
    ("{'train_runtime': 2.0, 'train_loss': 0.5, 'epoch': 2.0}", []),
    ("{'loss': __import__('os').system('true')}", []),
    ("loading data from step files", []),
])
def test_log_line_shapes(line: str, points: list) -> None:
    assert textlog.parse_line(line) == points


def test_each_layout_plots_its_own_records(root: Path) -> None:
    expected = {trees.NANOGPT: (26, 2), trees.HF: (8, 2), trees.LIGHTNING: (8, 2), trees.TENSORBOARD: (20, 4),
                trees.PLAIN: (20, 0)}
    for name, (train, val) in expected.items():
        reader = metrics_reader(root / name)
        assert reader.poll() is True, name
        counts = (len(reader.series("train/loss")[0]), len(reader.series("val/loss")[0]))
        assert counts == (train, val), name
        assert reader.poll() is False, name  # nothing new
    hf = metrics_reader(root / trees.HF)
    hf.poll()
    assert {"loss", "eval_loss", "learning_rate", "grad_norm"} <= set(hf.names())
    assert len(hf.series("lr")[0]) == 8


def test_readers_take_in_what_is_appended(tmp_path: Path) -> None:
    run = trees.nanogpt_run(tmp_path / "out")
    reader = metrics_reader(run)
    reader.poll()
    before = len(reader.series("train/loss")[0])
    with open(run / "train.log", "a") as log:
        log.write("iter 260: loss 1.0000, time 35.12ms, mfu 1.23%\niter 270: loss 0.9")  # a torn last line
    assert reader.poll() is True
    steps, values = reader.series("train/loss")
    assert (len(steps), int(steps[-1]), float(values[-1])) == (before + 1, 260, 1.0)
    with open(run / "train.log", "a") as log:
        log.write("000, time 1ms\n")
    reader.poll()
    assert reader.last("train/loss") == (270, 0.9)

    version = trees.lightning_run(tmp_path / "lightning_logs" / "version_0")
    csv_reader = metrics_reader(version)
    csv_reader.poll()
    with open(version / "metrics.csv", "a") as csv_file:
        csv_file.write("2,8,0.5,\n")
    csv_reader.poll()
    assert csv_reader.last("train/loss") == (8, 0.5)
    # Lightning rewrites the file with a new header when a metric first appears.
    (version / "metrics.csv").write_text("epoch,lr-Adam,step,train_loss,val_loss\n0,0.02,0,1.0,\n0,0.02,1,0.9,\n")
    csv_reader.poll()
    assert csv_reader.last("train/loss") == (1, 0.9) and csv_reader.last("lr") == (1, 0.02)


def test_without_tensorboard_one_note_says_what_to_install(root: Path) -> None:
    code = f"""
import sys
sys.modules["tensorboard"] = None  # as if not installed
from pathlib import Path
from runctl.runs.discovery import metrics_reader
reader = metrics_reader(Path({str(root / trees.TENSORBOARD)!r}))
print(reader.poll(), reader.note)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout == ("False TensorBoard scalars need the tensorboard package: "
                             "pip install 'runctl[tensorboard]'\n"), result.stderr


def test_detector_registry_order() -> None:
    assert [d.name for d in discovery.detectors()] == ["runctl", "hf-trainer", "lightning", "nanogpt",
                                                       "tensorboard", "plain"]
