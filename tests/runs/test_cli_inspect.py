"""`runctl ls`, `runctl verify` and `runctl summary`, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from runctl.runs.layout import CHECKPOINT_DIR, checkpoint_name
from support.checkpoints import (
    flip_bit,
    malicious_checkpoint,
    member_data_offset,
    reduce_call,
    write_checkpoint,
)
from support.cli import cli_env, run_cli
from support.runs import make_run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "done", state="finished", step=100, max_steps=100, every=50, checkpoint_steps=(50, 100),
             losses=(2.0, 0.75))
    make_run(root, "short", state="finished", step=100, max_steps=100, every=50, checkpoint_steps=(50,))
    make_run(root, "killed", state="running", step=70, max_steps=100, checkpoint_steps=(50,),
             heartbeat_age=120)
    (root / "stray.txt").write_text("x")
    os.symlink(root / "nowhere", root / "gone")
    return root


def test_ls_through_a_pipe_prints_every_row_of_a_table_longer_than_the_console_queue(tmp_path: Path) -> None:
    """Output to a pipe waits in the console's bounded queue for its writer thread (1,000 writes by
    default, 3 here): the table is one write, so no row is left out however many runs there are."""
    root = tmp_path / "runs"
    names = [f"run-{i:02d}" for i in range(12)]
    for name in names:
        make_run(root, name, state="finished", step=10, max_steps=10)
    result = run_cli(["ls", str(root)], env=cli_env({"RUNCTL_TEST_CONSOLE_QUEUE": "3"}), no_traceback=True)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == names
    assert "not shown" not in result.stdout + result.stderr


def test_ls_table(root: Path) -> None:
    result = run_cli(["ls", str(root)], no_traceback=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "LAYOUT", "STATE", "STEP", "LOSS", "CKPTS", "SIZE", "AGE", "NOTE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["done"].split()[1:6] == ["runctl", "finished", "100/100", "0.75", "2"]
    assert "1 (1 missing)" in rows["short"] and "missing checkpoint(s) at step 100" in rows["short"]
    assert rows["killed"].split()[2] == "interrupted"
    assert "stray.txt" not in rows  # a file is nobody's run
    assert "broken symlink" in rows["gone"]


def test_ls_json_is_one_document_with_stable_fields(root: Path) -> None:
    result = run_cli(["ls", str(root), "--json"], no_traceback=True)
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["root"] == str(root)
    runs = {run["name"]: run for run in document["runs"]}
    done = runs["done"]
    assert {"path", "run_id", "name", "layout", "state", "step", "max_steps", "last_loss", "best",
            "checkpoints", "checkpoint_bytes", "created_at", "updated_at", "parent", "world_size",
            "error", "problems", "checkpoints_expected", "missing_steps"} <= set(done)
    assert (done["state"], done["checkpoints"], done["last_loss"]) == ("finished", 2, 0.75)
    assert runs["short"]["missing_steps"] == [100]


@pytest.mark.parametrize("args, message", [
    (["ls", "{tmp}/nope"], "{tmp}/nope: no such directory"),
    (["ls", "{tmp}/file"], "{tmp}/file: is a file, not a folder of runs"),
    (["verify", "{tmp}/nope"], "{tmp}/nope: no such file or directory"),
    (["summary", "{tmp}/nope"], "{tmp}/nope: no such directory"),
])
def test_bad_root_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "file").write_text("x")
    result = run_cli([*(a.format(tmp=tmp_path) for a in args)], no_traceback=True)
    assert result.returncode == 2
    assert result.stderr == f"runctl: {message.format(tmp=tmp_path)}\n"
    assert result.stdout == ""


def test_verify_root_reports_every_checkpoint_and_missing_ones(root: Path) -> None:
    result = run_cli(["verify", str(root)], no_traceback=True)
    assert result.returncode == 0, result.stdout + result.stderr  # missing is not corrupt
    rows = [line.split() for line in result.stdout.splitlines()[1:-1]]
    statuses = {(row[0], row[2]): row[4] for row in rows}
    assert statuses[("done", "50")] == statuses[("done", "100")] == "ok"
    assert statuses[("short", "100")] == "missing"
    assert result.stdout.splitlines()[-1].startswith("5 checkpoint(s) at level full")
    assert result.stderr == f"runctl: skipped {root / 'gone'}: broken symlink\n"
    document = json.loads(run_cli(["verify", str(root), "--quick", "--json"], no_traceback=True).stdout)
    assert document["skipped"] == [{"path": str(root / "gone"), "error": "broken symlink"}]


def test_verify_exit_1_on_corrupt_with_reason_and_sha256(root: Path) -> None:
    path = root / "done" / CHECKPOINT_DIR / checkpoint_name(100)
    offset, _ = member_data_offset(path, "data/0")
    flip_bit(path, offset)
    result = run_cli(["verify", str(root / "done"), "--json"], no_traceback=True)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["level"] == "full" and document["corrupt"] == 1
    by_step = {c["step"]: c for c in document["checkpoints"]}
    assert by_step[100]["status"] == "corrupt" and by_step[100]["reason"].startswith("crc mismatch")
    assert by_step[100]["run"] == "done" and len(by_step[100]["sha256"]) == 64
    assert by_step[50]["status"] == "ok"
    assert {"path", "name", "step", "kind", "bytes", "mtime", "status", "reason", "sha256",
            "level"} <= set(by_step[50])


def test_verify_one_file_quick_and_without_manifest(root: Path, tmp_path: Path) -> None:
    path = root / "done" / CHECKPOINT_DIR / checkpoint_name(50)
    result = run_cli(["verify", str(path), "--quick", "--json"], no_traceback=True)
    assert result.returncode == 0
    (item,) = json.loads(result.stdout)["checkpoints"]
    assert (item["status"], item["level"], item["sha256"]) == ("ok", "quick", None)
    loose = tmp_path / "copy.pt"
    loose.write_bytes(path.read_bytes())
    result = run_cli(["verify", str(loose)], no_traceback=True)
    assert result.returncode == 0 and " unverified " in result.stdout


def test_verify_deep_refuses_a_malicious_pickle_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = malicious_checkpoint(tmp_path / "evil.pt", reduce_call(os.system, f"touch {marker}"))
    for level in ("--quick", "--deep"):
        result = run_cli(["verify", str(path), level], no_traceback=True)
        assert result.returncode == 1 and "unsafe pickle" in result.stdout
    result = run_cli(["verify", str(path)], no_traceback=True)
    assert result.returncode == 1
    assert not marker.exists()


def test_verify_deep_one_file_compares_it_with_its_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", state="interrupted", step=100, checkpoint_steps=(50,))
    stranger = write_checkpoint(run / CHECKPOINT_DIR / checkpoint_name(100), 100, hidden=16)
    result = run_cli(["verify", str(stranger), "--deep", "--json"], no_traceback=True)
    (item,) = json.loads(result.stdout)["checkpoints"]
    assert item["status"] == "incompatible" and "shape" in item["reason"]
    assert result.returncode == 0  # incompatible is not corrupt


def test_verify_a_plain_folder_of_checkpoint_files(tmp_path: Path) -> None:
    # Like the seed's checkpoints/<experiment>/checkpoint_step_NNNNN.pt: no run around them.
    folder = tmp_path / "experiment"
    write_checkpoint(folder / "checkpoint_step_00100.pt", 100)
    write_checkpoint(folder / "checkpoint_step_01000.pt", 1000)
    (folder / "checkpoint_step_02000.pt").write_bytes(b"")
    (folder / "notes.txt").write_text("not a checkpoint")
    result = run_cli(["verify", str(folder), "--json"], no_traceback=True)
    assert result.returncode == 1
    statuses = {c["name"]: (c["status"], c["reason"]) for c in json.loads(result.stdout)["checkpoints"]}
    assert statuses == {"checkpoint_step_00100.pt": ("unverified", None),
                        "checkpoint_step_01000.pt": ("unverified", None),
                        "checkpoint_step_02000.pt": ("corrupt", "empty")}


def test_verify_bad_usage_is_exit_2(tmp_path: Path) -> None:
    result = run_cli(["verify", str(tmp_path), "--quick", "--deep"], no_traceback=True)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    result = run_cli(["verify", str(tmp_path)], no_traceback=True)
    assert result.returncode == 2 and result.stderr == f"runctl: {tmp_path}: no runs or checkpoints found\n"


def test_summary_table_and_json(root: Path) -> None:
    result = run_cli(["summary", str(root)], no_traceback=True)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "Total checkpoints: 4 (expected: 5)"
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:-1]}
    assert rows["done"][1:4] == ["finished", "100/100", "val/loss=1.75"]
    assert rows["short"][-2:] == ["1/2", "100"]
    document = json.loads(run_cli(["summary", str(root), "--json"], no_traceback=True).stdout)
    runs = {r["name"]: r for r in document["runs"]}
    assert runs["done"]["best"] == {"metric": "val/loss", "value": 1.75, "step": 20}
    assert (runs["short"]["checkpoints_present"], runs["short"]["checkpoints_expected"]) == (1, 2)
    assert runs["done"]["final_loss"] == 0.75


def test_on_a_run_written_by_the_engine(tmp_path: Path) -> None:
    from runctl.engine.api import (  # the engine writes the run in this process; the CLI reads it
        new_run,
        train,
    )

    root = tmp_path / "runs"
    run_dir = new_run("digits_mlp", root, "eng", ["max_steps=12", "checkpoint.every=4", "eval.every=6",
                                                  "eval.batches=1", "log.every=3", "device=cpu"])
    train(run_dir, resume_from=None)
    (run,) = json.loads(run_cli(["ls", str(root), "--json"], no_traceback=True).stdout)["runs"]
    assert (run["state"], run["step"], run["max_steps"]) == ("finished", 12, 12)
    assert run["checkpoints"] == run["checkpoints_expected"] == 3 and run["problems"] == []
    assert isinstance(run["last_loss"], float)
    result = run_cli(["verify", str(run_dir), "--json"], no_traceback=True)
    assert result.returncode == 0, result.stdout
    checkpoints = json.loads(result.stdout)["checkpoints"]
    assert [c["status"] for c in checkpoints] == ["ok"] * 3 and checkpoints[-1]["kind"] == "final"
    assert checkpoints[-1]["step"] == 12 and checkpoints[-1]["level"] == "full"
    # The seed's off-by-one, after the fact: without its final checkpoint the run is incomplete.
    (run_dir / CHECKPOINT_DIR / checkpoint_name(12)).unlink()
    (run,) = json.loads(run_cli(["ls", str(root), "--json"], no_traceback=True).stdout)["runs"]
    assert run["missing_steps"] == [12]
