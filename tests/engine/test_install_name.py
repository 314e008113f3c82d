"""runctl installs under one name: a user's own `engine.py`, `tui/` or `runs/` in the working
directory shadows nothing, in one process or under torchrun's `-m` target."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.run_files import read_jsonl, status

import runctl

CONSOLE_SCRIPT = Path(sys.executable).with_name("runctl")
TRAP = "raise ImportError('a user module named {name} was imported by runctl')\n"


def _user_folder(tmp_path: Path) -> Path:
    """A project folder as users have them: their own engine.py, a tui package and TensorBoard's
    default `runs/` folder (a date_host log folder)."""
    folder = tmp_path / "project"
    (folder / "tui").mkdir(parents=True)
    (folder / "engine.py").write_text(TRAP.format(name="engine"))
    (folder / "tui" / "__init__.py").write_text(TRAP.format(name="tui"))
    tb = folder / "runs" / "Dec03_10-00-00_gpu01"
    tb.mkdir(parents=True)
    (tb / "events.out.tfevents.1764756000.gpu01.1.0").write_bytes(b"\x00" * 64)
    (folder / "runs" / "__init__.py").write_text(TRAP.format(name="runs"))  # more hostile than TensorBoard
    return folder


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    return env


def _command() -> list[str]:
    if CONSOLE_SCRIPT.is_file():
        return [str(CONSOLE_SCRIPT)]
    return [sys.executable, "-m", "runctl"]


SETS = ["max_steps=12", "data.batch_size=16", "model.hidden=16", "model.depth=1", "log.every=4",
        "eval.every=6", "eval.batches=1", "checkpoint.every=6"]


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_folder_with_its_own_engine_tui_and_runs_changes_nothing(tmp_path: Path, nproc: int) -> None:
    folder = _user_folder(tmp_path)
    args = ["train", "digits_mlp", "--root", "out", "--name", "shadow", *[a for s in SETS for a in ("--set", s)]]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    result = subprocess.run([*_command(), *args], cwd=folder, env=_env(), capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr
    run_dir = folder / "out" / "shadow"
    assert status(run_dir)["state"] == "finished"
    assert status(run_dir)["world_size"] == nproc
    assert [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in m][-1] == 12


def test_only_the_runctl_name_is_installed() -> None:
    """engine/, runs/ and tui/ are reached as runctl.engine, runctl.runs and runctl.tui, from any folder."""
    code = ("import importlib.util, runctl.engine, runctl.runs, runctl.tui\n"
            "print([importlib.util.find_spec(n) is None for n in ('engine', 'runs', 'tui')])\n")
    cwd = Path("/")
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, True, True]"
    assert Path(runctl.__file__).parent.name == "runctl"
