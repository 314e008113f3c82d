"""`runctl diff CKPT_A CKPT_B [--json]` in a subprocess, on checkpoints a real training run wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.cli import run_cli
from support.configs import overrides

SETS = [arg for item in overrides("digits_mlp", "max_steps=20") for arg in ("--set", item)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 20-step run with checkpoints at steps 10 and 20."""
    root = tmp_path_factory.mktemp("diff")
    result = run_cli(["train", "digits_mlp", "--root", root, "--name", "base", *SETS], root)
    assert result.returncode == 0, result.stderr
    return root / "base"


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}.pt"


def test_json_matches_the_tensors_of_both_files(run: Path) -> None:
    a, b = ckpt(run, 10), ckpt(run, 20)
    result = run_cli(["diff", a, b, "--json"], run)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    model_a = torch.load(a, weights_only=True)["model"]
    model_b = torch.load(b, weights_only=True)["model"]
    assert {t["name"] for t in doc["tensors"]} == set(model_a)  # the model only: no optimizer state
    for item in doc["tensors"]:
        x, y = model_a[item["name"]].double().flatten(), model_b[item["name"]].double().flatten()
        assert item["shape"] == list(model_a[item["name"]].shape)
        assert item["rel_l2"] == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-9)
        assert item["cosine"] == pytest.approx(float(torch.nn.functional.cosine_similarity(x, y, dim=0)),
                                               abs=1e-9)
        assert item["max_abs"] == pytest.approx(float((y - x).abs().max()), rel=1e-9)
    rel = [item["rel_l2"] for item in doc["tensors"]]
    assert rel == sorted(rel, reverse=True) and rel[0] > 0
    xs = torch.cat([model_a[k].double().flatten() for k in model_a])
    ys = torch.cat([model_b[k].double().flatten() for k in model_a])
    assert doc["total"]["numel"] == xs.numel()
    assert doc["total"]["rel_l2"] == pytest.approx(float((ys - xs).norm() / xs.norm()), rel=1e-9)
    assert doc["total"]["max_abs"] == pytest.approx(max(item["max_abs"] for item in doc["tensors"]))


def test_table_ends_with_one_total_line(run: Path) -> None:
    result = run_cli(["diff", ckpt(run, 20), ckpt(run, 20)], run)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TENSOR", "SHAPE", "REL", "L2", "COSINE", "MAX", "|Δ|"]
    assert lines[-1].startswith("total: ") and "relative L2 0," in lines[-1] and "cosine 1," in lines[-1]
    body = lines[1:-1]
    assert body and all(line.split()[2] == "0" for line in body)


def test_another_model_is_one_line_naming_the_keys(run: Path, tmp_path: Path) -> None:
    state = torch.load(ckpt(run, 20), weights_only=True)
    model = state["model"]
    dropped = sorted(model)[0]
    reshaped = sorted(model)[-1]
    del model[dropped]
    model[reshaped] = torch.zeros(*model[reshaped].shape, 2)
    other = tmp_path / "other.pt"
    torch.save(state, other)
    result = run_cli(["diff", ckpt(run, 10), other], run)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert f"lacks {dropped}" in result.stderr and f"shape of {reshaped}" in result.stderr


@pytest.mark.parametrize("damage", ["bitflip", "missing"])
def test_a_damaged_file_is_refused_before_loading(run: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "checkpoints"
    copy.mkdir()
    target = copy / "step_00000020.pt"
    data = bytearray(ckpt(run, 20).read_bytes())
    (copy / "manifest.json").write_text((run / "checkpoints" / "manifest.json").read_text())
    if damage == "bitflip":
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    result = run_cli(["diff", ckpt(run, 10), target], run)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert str(target) in result.stderr
    assert ("corrupt" if damage == "bitflip" else "no such checkpoint file") in result.stderr
