"""engine.tasks: the built-in tasks on real data, the IDX reader, custom task loading."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import runctl.engine.tasks.base as task_base
import torch
from runctl.engine.config import load_config
from runctl.engine.data import EpochSampler
from runctl.engine.tasks import build_task
from runctl.engine.tasks.base import PROTOCOL_MEMBERS, Task
from runctl.engine.tasks.char_gpt import bundled_text
from runctl.engine.tasks.idx import IdxError, parse_idx, read_idx, write_idx
from runctl.runs.errors import RunctlError

TINY = {
    "digits_mlp": ["model.hidden=16"],
    "digits_cnn": ["model.channels=8"],
    "digits_vit": ["model.dim=16", "model.heads=2", "model.depth=1"],
    "char_gpt": ["model.n_layer=1", "model.n_embd=32", "model.n_head=2", "model.block_size=16"],
}


def tiny_cfg(name: str, *extra: str) -> dict:
    return load_config(name, [*TINY[name], "data.batch_size=8", *extra])


def first_batch(task: Task, split: str = "train", size: int = 8) -> tuple[torch.Tensor, ...]:
    return task.get_batch(split, torch.arange(size))


@pytest.mark.parametrize("name", list(TINY))
def test_builtin_task_follows_the_protocol(name: str) -> None:
    cfg = tiny_cfg(name)
    task = build_task(cfg)
    assert isinstance(task, Task)
    assert all(hasattr(task, member) for member in PROTOCOL_MEMBERS)
    assert task.train_size > task.val_size > 0
    torch.manual_seed(0)
    model = task.build_model()
    batch = first_batch(task)
    assert all(t.device.type == "cpu" for t in batch)
    loss = task.loss(model, batch, cfg)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        metrics = task.eval_step(model, first_batch(task, "val"))
    assert set(metrics) == {"val/loss", "val/acc"}
    assert 0.0 <= float(metrics["val/acc"]) <= 1.0
    expected_units = 8 * 16 if name == "char_gpt" else 8
    assert task.units(batch) == expected_units
    assert task.unit == ("tokens" if name == "char_gpt" else "samples")


@pytest.mark.parametrize("name", list(TINY))
def test_aux_weight_changes_the_loss(name: str) -> None:
    cfg = tiny_cfg(name)
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    batch = first_batch(task)
    plain = task.loss(model, batch, cfg)
    with_aux = task.loss(model, batch, load_config(name, [*TINY[name], "loss.aux_weight=0.5"]))
    assert float(with_aux.detach()) > float(plain.detach())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch's own compile imports
@pytest.mark.parametrize("name", list(TINY))
def test_state_dict_keys_survive_torch_compile(name: str) -> None:
    task = build_task(tiny_cfg(name))
    model = task.build_model()
    compiled = torch.compile(model)  # wrapping only; nothing is compiled until a forward
    keys = {k.removeprefix("_orig_mod.") for k in compiled.state_dict()}
    assert keys == set(model.state_dict())


@pytest.mark.parametrize("name", ["digits_mlp", "digits_vit", "char_gpt"])
def test_same_seed_same_model_and_losses(name: str) -> None:
    def run() -> list[float]:
        cfg = tiny_cfg(name)
        task = build_task(cfg)
        torch.manual_seed(cfg["seed"])
        model = task.build_model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sampler = EpochSampler(task.train_size, 8, seed=0)
        losses = []
        for _ in range(5):
            loss = task.loss(model, task.get_batch("train", sampler.next_indices()), cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    assert run() == run()


def test_digits_mlp_learns() -> None:
    cfg = load_config("digits_mlp", ["data.batch_size=64"])
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sampler = EpochSampler(task.train_size, 64, seed=0)
    for _ in range(100):
        loss = task.loss(model, task.get_batch("train", sampler.next_indices()), cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        metrics = task.eval_step(model, task.get_batch("val", torch.arange(task.val_size)))
    assert float(metrics["val/acc"]) > 0.9


def test_digits_split_is_fixed_and_disjoint() -> None:
    a = build_task(tiny_cfg("digits_mlp", "seed=1"))
    b = build_task(tiny_cfg("digits_mlp", "seed=2"))
    assert torch.equal(a.data.val_x, b.data.val_x)  # the run's seed does not move the split
    assert a.train_size + a.val_size == 1797
    assert a.val_size == round(1797 * 0.2)
    train_rows = {tuple(row.flatten().tolist()) for row in a.data.train_x}
    overlap = sum(tuple(row.flatten().tolist()) in train_rows for row in a.data.val_x)
    assert overlap < a.val_size * 0.05  # (a few digits images are exact duplicates in the dataset)


# ---------------------------------------------------------------- IDX (MNIST format)

def idx_folder(root: Path, train: int = 60, test: int | None = 20, compress: bool = True, side: int = 28) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, count in (("train", train), ("t10k", test)):
        if count is None:
            continue
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(count, side, side), dtype=np.uint8)
        for i, label in enumerate(labels):  # a bright stripe whose row encodes the label
            images[i, (2 + 2 * label) % side] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return root


def test_idx_round_trip_and_header_checks(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "plain", array)
    write_idx(tmp_path / "packed.gz", array.astype(np.int32), compress=True)
    assert np.array_equal(read_idx(tmp_path / "plain"), array)
    assert np.array_equal(read_idx(tmp_path / "packed.gz"), array)
    raw = (tmp_path / "plain").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 3])
    with pytest.raises(IdxError, match="bad magic"):
        parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(IdxError, match="needs"):
        parse_idx(raw[:-1])
    with pytest.raises(IdxError, match="unknown IDX data type"):
        parse_idx(bytes([0, 0, 0x42, 1, 0, 0, 0, 0]))
    (tmp_path / "broken.gz").write_bytes(gzip.compress(raw)[:-6])
    with pytest.raises(IdxError, match="corrupt gzip"):
        read_idx(tmp_path / "broken.gz")


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_vit"])
def test_digits_tasks_train_on_28x28_idx(tmp_path: Path, name: str) -> None:
    folder = idx_folder(tmp_path / "mnist")
    cfg = tiny_cfg(name, f"data.path={folder}")
    task = build_task(cfg)
    assert (task.train_size, task.val_size) == (60, 20)  # t10k-* is the validation split
    x, y = first_batch(task)
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32
    torch.manual_seed(0)
    model = task.build_model()
    assert model(x).shape == (8, 10)
    task.loss(model, (x, y), cfg).backward()
    if name == "digits_vit":
        assert model.pos_embed.shape[1] == 7 * 7 + 1  # patch 4 chosen for 28x28


def test_idx_without_t10k_splits_train(tmp_path: Path) -> None:
    folder = idx_folder(tmp_path / "f", train=50, test=None, compress=False)
    task = build_task(tiny_cfg("digits_mlp", f"data.path={folder}", "data.val_fraction=0.2"))
    assert (task.train_size, task.val_size) == (40, 10)


def test_idx_errors_name_data_path(tmp_path: Path) -> None:
    cfg = tiny_cfg("digits_mlp")  # load_config refuses a missing path; a run.yaml's data can vanish later
    cfg["data"]["path"] = str(tmp_path / "missing")
    with pytest.raises(RunctlError, match=r"^data\.path: .*missing: not a folder"):
        build_task(cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunctlError, match=r"^data\.path: .*no train-images-idx3-ubyte"):
        build_task(tiny_cfg("digits_mlp", f"data.path={empty}"))
    folder = idx_folder(tmp_path / "nolabels", test=None)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(RunctlError, match=r"^data\.path: .*no train-labels-idx1-ubyte"):
        build_task(tiny_cfg("digits_mlp", f"data.path={folder}"))
    folder = idx_folder(tmp_path / "mismatch", test=None, compress=False)
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(RunctlError, match=r"^data\.path: .*train-labels-idx1-ubyte: \(7,\) labels for 60 images"):
        build_task(tiny_cfg("digits_mlp", f"data.path={folder}"))
    folder = idx_folder(tmp_path / "corrupt", test=None, compress=False)
    header = bytes([0, 0, 0x08, 3]) + np.array([60, 28, 28], dtype=">u4").tobytes()
    (folder / "train-images-idx3-ubyte").write_bytes(header + b"too short")
    with pytest.raises(RunctlError, match=r"^data\.path: .*train-images-idx3-ubyte: IDX data has"):
        build_task(tiny_cfg("digits_mlp", f"data.path={folder}"))
    folder = idx_folder(tmp_path / "oddpatch", side=10, test=None)
    with pytest.raises(RunctlError, match=r"^model\.patch: 4 does not divide the image side 10"):
        build_task(tiny_cfg("digits_vit", f"data.path={folder}", "model.patch=4"))


# ---------------------------------------------------------------- char_gpt

def test_bundled_text_is_large_prose() -> None:
    text = bundled_text()
    assert len(text) > 400_000
    assert bundled_text() == text  # deterministic


def test_char_windows_follow_the_stride(tmp_path: Path) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path = tmp_path / "abc.txt"
    path.write_text(text)
    cfg = tiny_cfg("char_gpt", f"data.path={path}", "data.stride=16")
    task = build_task(cfg)
    assert task.vocab_size == 26
    assert task.train_size == (900 - 17) // 16 + 1  # last 10% is val
    assert task.val_size == (100 - 17) // 16 + 1
    x, y = task.get_batch("train", torch.tensor([0, 1, 2]))
    assert task.decode(x[1]) == text[16:32] and task.decode(y[1]) == text[17:33]
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    starts = [task.decode(row)[:1] for row in x]
    assert starts == [text[0], text[16], text[32]]  # stride = block_size: disjoint windows
    vx, _ = task.get_batch("val", torch.tensor([0]))
    assert task.decode(vx[0]) == text[900:916]


def test_char_default_stride_overlaps_by_half(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("héllo wörld, " * 100)  # non-ASCII is fine
    task = build_task(tiny_cfg("char_gpt", f"data.path={path}"))
    assert task.stride == 8
    x, _ = task.get_batch("train", torch.tensor([0, 1]))
    assert torch.equal(x[0, 8:], x[1, :8])


def test_char_gpt_weights_are_tied() -> None:
    model = build_task(tiny_cfg("char_gpt")).build_model()
    assert model.lm_head.weight is model.transformer.wte.weight


def test_char_data_errors_name_data_path(tmp_path: Path) -> None:
    cfg = tiny_cfg("char_gpt")  # load_config refuses a missing file; a run.yaml's data can vanish later
    cfg["data"]["path"] = str(tmp_path / "nope.txt")
    with pytest.raises(RunctlError, match=r"^data\.path: .*nope\.txt: no such text file"):
        build_task(cfg)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"abc\xff\xfe" * 10)
    with pytest.raises(RunctlError, match=r"^data\.path: .*bin\.txt: not UTF-8 text \(bad byte at offset 3\)"):
        build_task(tiny_cfg("char_gpt", f"data.path={binary}"))
    short = tmp_path / "short.txt"
    short.write_text("x" * 60)
    with pytest.raises(RunctlError, match=r"^data\.path: .*the val split has 6 characters"):
        build_task(tiny_cfg("char_gpt", f"data.path={short}"))


# ---------------------------------------------------------------- custom tasks

SQUARES = '''
import torch
import torch.nn.functional as F
from torch import nn


class Squares:
    unit = "samples"

    def __init__(self, cfg):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(120, 1, generator=gen) * 4 - 2
        self.y = self.x ** 2
        self.width = cfg["model"].get("width", 8)
        self.train_size, self.val_size = 100, 20

    def build_model(self):
        return nn.Sequential(nn.Linear(1, self.width), nn.Tanh(), nn.Linear(self.width, 1))

    def get_batch(self, split, indices):
        offset = 0 if split == "train" else self.train_size
        return self.x[indices + offset], self.y[indices + offset]

    def units(self, batch):
        return batch[0].shape[0]

    def loss(self, model, batch, settings):
        x, y = batch
        return F.mse_loss(model(x), y) * settings["loss"].get("scale", 1.0)

    def eval_step(self, model, batch):
        x, y = batch
        return {"val/loss": F.mse_loss(model(x), y)}


def factory(cfg):
    return Squares(cfg)


def broken(cfg):
    return object()
'''


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "usertasks_e1"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "squares.py").write_text(textwrap.dedent(SQUARES))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "usertasks_e1.squares"


def test_custom_task_loads_and_trains(tmp_path: Path, user_package: str) -> None:
    path = tmp_path / "squares.yaml"
    path.write_text(f'task: "{user_package}:factory"\nmodel: {{width: 12}}\nloss: {{scale: 2.0}}\n')
    cfg = load_config(path)
    task = build_task(cfg)
    assert task.train_size == 100
    model = task.build_model()
    assert model[0].out_features == 12
    batch = task.get_batch("train", torch.arange(4))
    assert task.units(batch) == 4
    task.loss(model, batch, cfg).backward()


def test_custom_task_errors_name_the_task(user_package: str) -> None:
    def cfg(task: str) -> dict:
        return {"task": task, "model": {}, "loss": {"aux_weight": 0.0}}

    with pytest.raises(RunctlError, match=r"^task: no_such_pkg_e1\.mod:factory: cannot import no_such_pkg_e1\.mod"):
        build_task(cfg("no_such_pkg_e1.mod:factory"))
    with pytest.raises(RunctlError, match=rf"^task: {user_package}:missing: module {user_package} has no missing"):
        build_task(cfg(f"{user_package}:missing"))
    with pytest.raises(RunctlError, match=r"lacks train_size, val_size, unit, build_model"):
        build_task(cfg(f"{user_package}:broken"))


def test_the_documented_example_task_trains_from_the_cli(tmp_path: Path) -> None:
    """The example in engine/tasks/base.py, copied out verbatim, trains through `runctl train`."""
    doc = task_base.__doc__ or ""
    start = doc.index("mytasks/squares.py:") + len("mytasks/squares.py:")
    example = textwrap.dedent(doc[start : doc.index("and the config:")])
    package = tmp_path / "mytasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "squares.py").write_text(example)
    (tmp_path / "squares.yaml").write_text(
        'task: "mytasks.squares:factory"\nmodel: {width: 16}\nmax_steps: 12\n'
        "data: {batch_size: 10}\neval: {every: 6, batches: 2}\ncheckpoint: {every: 6}\n"
    )
    repo = Path(__file__).resolve().parents[2]
    # tmp_path is not on PYTHONPATH: the task module is found in the current directory
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    script = Path(sys.executable).with_name("runctl")  # the console script: cwd is not on its sys.path
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "runctl"]
    result = subprocess.run(
        [*command, "train", "squares.yaml", "--root", "runs", "--name", "sq"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "runs" / "sq" / "metrics.jsonl").read_text().splitlines()
    assert any('"val/loss"' in line for line in lines)
    assert (tmp_path / "runs" / "sq" / "checkpoints" / "step_00000012.pt").is_file()
