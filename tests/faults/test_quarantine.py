"""Resume never destroys a checkpoint it skipped.

The newest checkpoint of a finished run is damaged, once in its manifest entry only (the file is
healthy) and once by a flipped byte. `runctl resume` (a subprocess) skips it, continues from the
one before and trains through the skipped step again, which writes a new file of the same name. The skipped
file must still exist, byte for byte, in RUN/quarantine/<time>-from-<step>/ with its manifest
entry, named by a `quarantined` event with the reason, and `runctl verify` and `runctl ls` must
show it as quarantined.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from support.cli import run_cli, verify_json
from support.configs import TINY_MLP
from support.run_files import checkpoint_records, events, strict_json

SETTINGS = [*TINY_MLP, "max_steps=6", "checkpoint.every=2", "checkpoint.keep_last=3", "eval.every=100",
            "eval.batches=1"]
NEWEST = "step_00000006.pt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quarantine") / "runs"
    done = run_cli(["train", "digits_mlp", "--root", root, "--name", "r", *[f"--set={s}" for s in SETTINGS]],
                   cwd=root.parent)
    assert done.returncode == 0, done.stderr
    return root / "r"


def damage_manifest_entry(run_dir: Path) -> None:
    path = run_dir / "checkpoints" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][NEWEST]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))


def flip_a_byte(run_dir: Path) -> None:
    path = run_dir / "checkpoints" / NEWEST
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [damage_manifest_entry, flip_a_byte], ids=["manifest_entry", "flipped_byte"])
def test_resume_moves_the_skipped_newest_checkpoint_aside_and_keeps_it(trained: Path, tmp_path: Path,
                                                                        damage) -> None:
    run_dir = tmp_path / "runs" / "r"
    shutil.copytree(trained, run_dir, ignore=shutil.ignore_patterns("lock"))
    damage(run_dir)
    before = (run_dir / "checkpoints" / NEWEST).read_bytes()
    entry_before = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())["files"][NEWEST]

    done = run_cli(["resume", run_dir], cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    # It skipped the newest, resumed from the one before and trained through the skipped step
    # again, which saved a new file of the same name.
    (skipped,) = events(run_dir, "skipped_checkpoint")
    assert skipped["file"] == NEWEST and skipped["reason"]
    assert events(run_dir, "resumed")[-1]["from"] == "step_00000004.pt"
    assert [e["step"] for e in events(run_dir, "checkpoint")][-1] == 6
    assert (run_dir / "checkpoints" / NEWEST).is_file()

    # The skipped file is in quarantine/, byte for byte, with the manifest entry it had.
    (moved,) = events(run_dir, "quarantined")
    assert moved["files"] == [NEWEST] and moved["reasons"] == {NEWEST: skipped["reason"]}
    folder = run_dir / moved["folder"]
    assert folder.parent == run_dir / "quarantine"
    assert (folder / NEWEST).read_bytes() == before
    assert json.loads((folder / "manifest.json").read_text())["files"] == {NEWEST: entry_before}
    new_entry = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())["files"][NEWEST]
    assert new_entry["sha256"] == hashlib.sha256((run_dir / "checkpoints" / NEWEST).read_bytes()).hexdigest()

    # `runctl verify` of the run lists it as quarantined with the reason (exit 0: the run is sound).
    code, document = verify_json(run_dir, cwd=tmp_path)
    assert code == 0, document
    records = {r["name"]: r for r in checkpoint_records(document)}
    quarantined = records[f"quarantine/{folder.name}/{NEWEST}"]
    assert quarantined["status"] == "quarantined" and skipped["reason"] in quarantined["reason"]
    assert {r["status"] for name, r in records.items() if not name.startswith("quarantine/")} == {"ok"}
    # ... and, verified where it lies, it is what its kept entry says (damaged), nothing else.
    _, aside = verify_json(folder, cwd=tmp_path)
    assert [(r["name"], r["status"]) for r in checkpoint_records(aside)] == [(NEWEST, "corrupt")]

    # `runctl ls` names it.
    listing = strict_json(run_cli(["ls", run_dir.parent, "--json"], cwd=tmp_path).stdout)
    (run,) = listing["runs"]
    assert any("1 quarantined checkpoint(s)" in problem and NEWEST in problem for problem in run["problems"])
    assert run["missing_steps"] == []

    # A second resume of the finished run changes nothing and moves nothing more.
    again = run_cli(["resume", run_dir], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(list((run_dir / "quarantine").iterdir())) == 1
