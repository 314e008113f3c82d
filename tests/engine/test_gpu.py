"""The CUDA paths: run where a GPU is present, skipped here (tests/conftest.py skips `gpu` without CUDA).

On CPU the same code runs with the scaler disabled and pageable copies (tests/engine/test_trainer.py);
these prove the GPU side: device auto picks CUDA, AMP in bf16 and fp16 with a live GradScaler,
the scaler's state in the checkpoint, pinned-memory snapshots, and a resume on the GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runctl.engine import api
from support.checkpoints import final_checkpoint, load_state
from support.configs import overrides

pytestmark = pytest.mark.gpu


def _train(tmp_path: Path, name: str, *extra: str) -> tuple[Path, api.TrainResult]:
    run_dir = api.new_run("digits_mlp", tmp_path, name=name, overrides=overrides("digits_mlp", *extra))
    return run_dir, api.train(run_dir)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_trains_on_cuda_in_every_precision(tmp_path: Path, precision: str) -> None:
    run_dir, result = _train(tmp_path, precision, "device=auto", f"precision={precision}")
    assert (result.state, result.step) == ("finished", 30)
    state = final_checkpoint(run_dir, 30)
    assert all(t.device.type == "cpu" for t in state["model"].values())  # snapshots land on the host
    if precision == "fp16":
        assert state["scaler"] and state["scaler"]["scale"] > 0  # a live GradScaler was saved


def test_resume_on_cuda_continues_from_the_checkpoint(tmp_path: Path) -> None:
    run_dir, _ = _train(tmp_path, "a", "device=cuda", "precision=bf16", "max_steps=20")
    api.extend_run(run_dir, to=30)
    result = api.train(run_dir, resume_from="auto")
    assert (result.state, result.step) == ("finished", 30)
    assert load_state(run_dir / "checkpoints" / "step_00000030.pt")["step"] == 30


def test_cuda_is_what_auto_picks() -> None:
    from runctl.engine.config import load_config
    from runctl.engine.runtime import make_runtime

    assert make_runtime(load_config("digits_mlp", ["device=auto"])).device.type == "cuda"
    assert torch.cuda.is_available()
