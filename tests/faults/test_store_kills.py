"""A SIGKILL at each point between two writes of runs/store.py leaves what its docstring says.

Each case starts a real runctl process with RUNCTL_TEST_PAUSE_AT naming one point; the store
announces the point on stderr and waits there; the test kills the process group with SIGKILL
and then checks the folder through the user's tools (`runctl verify --json`, `runctl ls --json`)
and the next start (`runctl resume`, the delete again, `runctl train` again).

One small run is trained once per module and copied for each case:
digits_mlp, 6 steps, a checkpoint every 2, keep_last 3: step_2, step_4, step_6 (final).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
from support.cli import cli_env, run_cli, start_cli, verify_json
from support.configs import TINY_MLP
from support.run_files import checkpoint_records, events, strict_json
from support.store_pauses import delete_checkpoint, delete_killed_at
from support.waiting import wait_for

BASE_SETTINGS = [*TINY_MLP, "max_steps=6", "checkpoint.every=2", "checkpoint.keep_last=3", "eval.every=100",
                 "eval.batches=1", "checkpoint.async=false"]
PAUSE_ENV = "RUNCTL_TEST_PAUSE_AT"


def step_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    return json.loads(path.read_text())["files"] if path.exists() else {}


def pt_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".pt")) if folder.is_dir() else []


def aside_folders(run_dir: Path, kind: str = "superseded") -> list[Path]:
    parent = run_dir / kind
    return sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store_kills") / "runs"
    done = run_cli(["train", "digits_mlp", "--root", root, "--name", "r",
                    *[f"--set={s}" for s in BASE_SETTINGS]], cwd=root.parent)
    assert done.returncode == 0, done.stderr
    run_dir = root / "r"
    assert pt_files(run_dir / "checkpoints") == [step_name(2), step_name(4), step_name(6)]
    return run_dir


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(trained, root / "r", ignore=shutil.ignore_patterns("lock"))
    return root / "r"


def kill_at(point: str, args: list[str | Path], cwd: Path) -> None:
    """Run `runctl ARGS` until the store pauses at `point`, then SIGKILL its process group."""
    engine = start_cli(args, cwd=cwd, log_dir=cwd / "logs", env=cli_env({PAUSE_ENV: point}))
    try:
        wait_for(lambda: f"paused at {point}" in engine.stderr(), timeout=120, what=f"the pause at {point}",
                 alive=engine)
        assert engine.kill9() == -signal.SIGKILL
    finally:
        engine.ensure_dead()


def verify(path: Path, cwd: Path) -> dict[str, str]:
    code, document = verify_json(path, cwd=cwd)
    statuses = {r["name"]: r["status"] for r in checkpoint_records(document)}
    assert code == (1 if "corrupt" in statuses.values() else 0), document
    return statuses


def assert_every_file_listed_once(run_dir: Path) -> None:
    """Every checkpoint under the run is listed by its own folder's manifest, with its sha256."""
    folders = [run_dir / "checkpoints", *aside_folders(run_dir, "superseded"), *aside_folders(run_dir, "quarantine")]
    for folder in folders:
        entries = listed(folder)
        assert sorted(entries) == pt_files(folder), folder
        for name, entry in entries.items():
            assert entry["sha256"] == sha256(folder / name), folder / name


# ------------------------------------------------------------------ create


def test_kill_after_the_run_folder_is_made(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    args = ["train", "digits_mlp", "--root", root, "--name", "n", *[f"--set={s}" for s in BASE_SETTINGS]]
    kill_at("create:folder-made", args, tmp_path)
    # An empty folder, which is no run: listings skip it, the name stays taken.
    assert list((root / "n").iterdir()) == []
    listing = strict_json(run_cli(["ls", root, "--json"], cwd=tmp_path).stdout)
    assert listing["runs"] == []
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and again.stderr.count("\n") == 1
    assert list((root / "n").iterdir()) == []


# ------------------------------------------------------------------ commit


def train_args(root: Path, *settings: str) -> list[str | Path]:
    return ["train", "digits_mlp", "--root", root, "--name", "r",
            *[f"--set={s}" for s in (*BASE_SETTINGS, *settings)]]


def test_kill_inside_a_commit_before_the_rename(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    kill_at("commit:temp-written", train_args(root), tmp_path)
    # The first save (step 2) is a temp file of a dead pid; no checkpoint, no manifest yet.
    run_dir = root / "r"
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(names) == 1 and names[0].startswith(step_name(2) + ".tmp.")
    assert listed(run_dir / "checkpoints") == {}
    assert verify(run_dir, tmp_path) == {names[0]: "partial"}
    # The next start removes the temp file and trains from the beginning.
    done = run_cli(["resume", run_dir], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert events(run_dir, "resumed")[-1]["from"] is None
    assert pt_files(run_dir / "checkpoints") == [step_name(2), step_name(4), step_name(6)]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp." in p.name]
    assert set(verify(run_dir, tmp_path).values()) == {"ok"}
    assert_every_file_listed_once(run_dir)


def test_kill_between_the_rename_and_the_manifest(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    kill_at("commit:renamed", train_args(root), tmp_path)
    # The complete file, without a manifest entry: unverified, and the one the next resume uses.
    run_dir = root / "r"
    assert pt_files(run_dir / "checkpoints") == [step_name(2)]
    assert listed(run_dir / "checkpoints") == {}
    assert verify(run_dir, tmp_path) == {step_name(2): "unverified"}
    done = run_cli(["resume", run_dir], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert events(run_dir, "resumed")[-1]["from"] == step_name(2)
    assert verify(run_dir, tmp_path) == {step_name(2): "unverified", step_name(4): "ok", step_name(6): "ok"}


# ------------------------------------------------------------------ forget (retention) and delete


def test_kill_between_forgetting_and_deleting_an_old_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    kill_at("forget:manifest-written", train_args(root, "checkpoint.keep_last=1"), tmp_path)
    # Step 4 is saved; retention dropped step 2's entry but was killed before deleting the file.
    run_dir = root / "r"
    assert pt_files(run_dir / "checkpoints") == [step_name(2), step_name(4)]
    assert sorted(listed(run_dir / "checkpoints")) == [step_name(4)]
    assert verify(run_dir, tmp_path) == {step_name(2): "unverified", step_name(4): "ok"}
    # The next retention pass deletes it (and keeps step 4, the one the resume started from).
    done = run_cli(["resume", run_dir], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert pt_files(run_dir / "checkpoints") == [step_name(4), step_name(6)]
    assert set(verify(run_dir, tmp_path).values()) == {"ok"}
    assert_every_file_listed_once(run_dir)


def test_kill_between_the_manifest_and_the_unlink_of_a_delete(run_copy: Path, tmp_path: Path) -> None:
    delete_killed_at(run_copy, step_name(4), "delete:manifest-written")
    # The entry is gone, the file not yet: an unverified file, never a listed one that is missing.
    assert step_name(4) not in listed(run_copy / "checkpoints")
    assert verify(run_copy, tmp_path)[step_name(4)] == "unverified"
    # Deleting it again finishes the job.
    done = delete_checkpoint(run_copy, step_name(4))
    assert done.returncode == 0, done.stderr
    assert pt_files(run_copy / "checkpoints") == [step_name(2), step_name(6)]
    assert_every_file_listed_once(run_copy)


# ------------------------------------------------------------------ set aside (resume --from)


@pytest.mark.parametrize("point, in_aside, aside_lists", [
    ("set_aside:folder-made", [], []),
    ("set_aside:moved-one", [step_name(4)], []),
    ("set_aside:moved", [step_name(4), step_name(6)], []),
    ("set_aside:aside-manifest-written", [step_name(4), step_name(6)], [step_name(4), step_name(6)]),
])
def test_kill_while_setting_newer_checkpoints_aside(run_copy: Path, tmp_path: Path, point: str,
                                                    in_aside: list[str], aside_lists: list[str]) -> None:
    original = {name: sha256(run_copy / "checkpoints" / name) for name in pt_files(run_copy / "checkpoints")}
    kill_at(point, ["resume", run_copy, "--from", "2"], tmp_path)
    (aside,) = aside_folders(run_copy)
    assert pt_files(aside) == in_aside and sorted(listed(aside)) == aside_lists
    # The run's manifest still lists every file (moved or not): nothing is unlisted anywhere.
    assert sorted(listed(run_copy / "checkpoints")) == sorted(original)
    # Readers do not call a moved file missing: it is in the aside folder, where verify sees it.
    assert set(verify(run_copy, tmp_path).values()) == {"ok"}
    if in_aside:
        assert set(verify(aside, tmp_path)) == set(in_aside)

    # The next start finishes the bookkeeping (the moved files' entries go with them), then
    # sets aside what the killed one had not moved yet.
    done = run_cli(["resume", run_copy, "--from", "2"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_every_file_listed_once(run_copy)
    moved = {name: sha256(folder / name) for folder in aside_folders(run_copy) for name in pt_files(folder)}
    assert moved == {name: digest for name, digest in original.items() if name != step_name(2)}
    assert [not pt_files(folder) for folder in aside_folders(run_copy)].count(True) == 0  # no empty folder
    for folder in aside_folders(run_copy):
        assert set(verify(folder, tmp_path).values()) == {"ok"}
    assert set(verify(run_copy, tmp_path).values()) == {"ok"}
