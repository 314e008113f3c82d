"""`runctl export` / `runctl import` through a subprocess, as a user moves a run between machines."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from support.cli import run_cli

TINY = ["--set", "max_steps=6", "--set", "checkpoint.every=3", "--set", "eval.every=3",
        "--set", "model.hidden=8", "--set", "model.depth=1", "--set", "eval.batches=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("archive")
    done = run_cli(["train", "digits_mlp", "--root", "a", "--name", "r1", *TINY], cwd=home, timeout=180)
    assert done.returncode == 0, done.stderr
    return home


def test_export_then_import_elsewhere_resumes_and_verifies(trained: Path) -> None:
    out = trained / "r1.zip"
    done = run_cli(["export", "r1", "--root", "a", "--out", out], cwd=trained, timeout=180)
    assert done.returncode == 0, done.stderr
    names = zipfile.ZipFile(out).namelist()
    assert "r1/run.yaml" in names and "r1/checkpoints/manifest.json" in names
    assert "r1/lock" not in names and not any(".tmp." in n for n in names)

    done = run_cli(["import", out, "--root", "b"], cwd=trained, timeout=180)
    assert done.returncode == 0, done.stderr
    assert run_cli(["verify", "b/r1"], cwd=trained, timeout=180).returncode == 0
    done = run_cli(["extend", "b/r1", "--steps", "3"], cwd=trained, timeout=180)
    assert done.returncode == 0, done.stderr
    assert (trained / "b" / "r1" / "checkpoints" / "step_00000009.pt").is_file()

    again = run_cli(["import", out, "--root", "b"], cwd=trained, timeout=180)
    assert again.returncode == 2 and "exists" in again.stderr and len(again.stderr.splitlines()) == 1


def test_export_refuses_to_overwrite_and_unknown_runs(trained: Path) -> None:
    existing = trained / "exists.zip"
    existing.write_bytes(b"keep me")
    done = run_cli(["export", "r1", "--root", "a", "--out", existing], cwd=trained, timeout=180)
    assert done.returncode == 2 and existing.read_bytes() == b"keep me"
    done = run_cli(["export", "nope", "--root", "a", "--out", trained / "n.zip"], cwd=trained, timeout=180)
    assert done.returncode == 2 and "unknown run 'nope'" in done.stderr
    assert not (trained / "n.zip").exists()


@pytest.mark.parametrize("member", ["../evil/run.yaml", "/abs/run.yaml"])
def test_import_refuses_paths_escaping_the_root_and_leaves_nothing(tmp_path: Path, member: str) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(member, "task: digits_mlp\n")
    done = run_cli(["import", bad, "--root", "dest"], cwd=tmp_path, timeout=180)
    assert done.returncode == 2 and "outside the run folder" in done.stderr
    assert not (tmp_path / "evil").exists()
    assert not any((tmp_path / "dest").glob("*")) if (tmp_path / "dest").exists() else True


def test_import_refuses_a_zip_that_is_not_an_export(tmp_path: Path) -> None:
    bad = tmp_path / "other.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x/readme.txt", "hello")
    done = run_cli(["import", bad, "--root", "dest"], cwd=tmp_path, timeout=180)
    assert done.returncode == 2 and "not a runctl export" in done.stderr
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    done = run_cli(["import", tmp_path / "junk.zip", "--root", "dest"], cwd=tmp_path, timeout=180)
    assert done.returncode == 2 and "not a zip file" in done.stderr
