"""`runctl resume RUN --from OLDER`: a new timeline from an older checkpoint never loses the old one."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from support.checkpoints import load_state
from support.cli import run_cli
from support.configs import overrides
from support.run_files import events


def test_resume_from_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    args = [f"--set={o}" for o in overrides("digits_mlp", "checkpoint.keep_last=10")]
    done = run_cli(["train", "digits_mlp", "--root", root, "--name", "r", *args], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = root / "r"
    first_final = load_state(run_dir / "checkpoints" / "step_00000030.pt")

    done = run_cli(["resume", "r", "--root", root, "--from", "10"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    (moved,) = events(run_dir, "superseded")
    assert moved["step"] == 10 and moved["files"] == ["step_00000020.pt", "step_00000030.pt"]
    aside = run_dir / moved["folder"]
    assert sorted(p.name for p in aside.glob("*.pt")) == moved["files"]
    listed = json.loads((aside / "manifest.json").read_text())["files"]
    assert sorted(listed) == moved["files"]  # still verifiable: their sha256 travelled with them
    verify = run_cli(["verify", aside, "--json"], cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert {c["status"] for c in json.loads(verify.stdout)["checkpoints"]} == {"ok"}

    # The new timeline ends at 30 again, and a resume is exact: the same weights as the first time.
    again = load_state(run_dir / "checkpoints" / "step_00000030.pt")
    old = load_state(aside / "step_00000030.pt")
    for key, tensor in first_final["model"].items():
        assert torch.equal(tensor, again["model"][key]) and torch.equal(tensor, old["model"][key])
    assert run_cli(["verify", run_dir], cwd=tmp_path).returncode == 0
