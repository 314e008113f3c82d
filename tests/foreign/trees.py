"""Small trees of the layouts other tools write, built as those tools lay them out (the file names,
the dict keys their torch.save writes, trainer_state.json's fields, the CSVLogger's columns, a real
SummaryWriter), with fixed mtimes so listings and snapshots are stable.

`foreign_root(root)` makes one of each under `root`, plus what discovery must skip; the committed
files under tests/fixtures/foreign/ are written by the real tools (see test_real_fixtures.py).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import torch

# Older than any real clock a test runs at: no run looks freshly written (state "running").
MTIME = 1_763_800_000.0

NANOGPT = "out-shakespeare-char"
HF = "hf-out"
LIGHTNING = "lightning_logs/version_0"
TENSORBOARD = "runs/Dec03_18-00-00_gpu-box"
PLAIN = "checkpoints/cnn_deep_mnist"
UUID_RUN = "logs/6c1f4a0e-2b6d-4a53-9d7e-1e0f3c9a7b21"


def _model(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(4, 4, generator=generator), "layer.bias": torch.zeros(4)}


def nanogpt_run(out_dir: Path, iter_num: int = 250, max_iters: int = 500) -> Path:
    """nanoGPT train.py's checkpoint dict, key for key, and the log its stdout was redirected to."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_args = dict(n_layer=2, n_head=2, n_embd=16, block_size=32, bias=False, vocab_size=65, dropout=0.0)
    config = {"out_dir": out_dir.name, "eval_interval": 250, "log_interval": 10, "eval_iters": 20,
              "always_save_checkpoint": False, "dataset": "shakespeare_char", "batch_size": 12,
              "learning_rate": 1e-3, "max_iters": max_iters, "lr_decay_iters": max_iters, "device": "cpu",
              "compile": False}
    checkpoint = {
        "model": _model(iter_num),
        "optimizer": torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3).state_dict(),
        "model_args": model_args,
        "iter_num": iter_num,
        "best_val_loss": torch.tensor(1.4697),
        "config": config,
    }
    torch.save(checkpoint, out_dir / "ckpt.pt")
    lines = ["tokens per iteration will be: 16,384", "found vocab_size = 65 (inside data/shakespeare_char/meta.pkl)"]
    for it in range(0, iter_num + 1, 10):
        if it % 250 == 0:
            lines.append(f"step {it}: train loss {4.2 - it / 200:.4f}, val loss {4.25 - it / 210:.4f}")
        lines.append(f"iter {it}: loss {4.2 - it / 190:.4f}, time 35.12ms, mfu 1.23%")
    (out_dir / "train.log").write_text("\n".join(lines) + "\n")
    return out_dir


def safetensors_file(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """The safetensors format: an 8-byte little-endian header length, a JSON header, the data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name, tensor in tensors.items():
        raw = tensor.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def hf_run(output_dir: Path, save_steps: int = 4, max_steps: int = 8, finished: bool = True) -> Path:
    """A Trainer output_dir: checkpoint-N/ with what Trainer._save_checkpoint writes, and (finished)
    the final model and trainer_state.json at the top."""
    history: list[dict[str, Any]] = []
    last = max_steps if finished else max_steps // 2
    for step in range(1, last + 1):
        history.append({"epoch": step / 4, "grad_norm": 1.0 / step, "learning_rate": 5e-5 * (1 - step / max_steps),
                        "loss": 0.7 - step * 0.05, "step": step})
        if step % save_steps == 0:
            history.append({"epoch": step / 4, "eval_loss": 0.72 - step * 0.04, "eval_runtime": 0.1,
                            "eval_samples_per_second": 80.0, "eval_steps_per_second": 10.0, "step": step})
            _hf_checkpoint(output_dir / f"checkpoint-{step}", step, max_steps, save_steps, history)
    if finished:
        history.append({"epoch": last / 4, "step": last, "total_flos": 1.0, "train_loss": 0.5,
                        "train_runtime": 2.0, "train_samples_per_second": 16.0, "train_steps_per_second": 4.0})
        safetensors_file(output_dir / "model.safetensors", _model(last))
        (output_dir / "config.json").write_text(json.dumps({"model_type": "bert"}))
        torch.save({"output_dir": str(output_dir)}, output_dir / "training_args.bin")
        (output_dir / "trainer_state.json").write_text(json.dumps(_trainer_state(last, max_steps, save_steps, history)))
    return output_dir


def _trainer_state(step: int, max_steps: int, save_steps: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"best_metric": None, "best_model_checkpoint": None, "epoch": step / 4, "eval_steps": save_steps,
            "global_step": step, "is_hyper_param_search": False, "is_local_process_zero": True,
            "is_world_process_zero": True, "log_history": list(history), "logging_steps": 1,
            "max_steps": max_steps, "num_input_tokens_seen": 0, "num_train_epochs": 2,
            "save_steps": save_steps, "total_flos": 1.0, "train_batch_size": 2, "trial_name": None,
            "trial_params": None}


def _hf_checkpoint(folder: Path, step: int, max_steps: int, save_steps: int, history: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_file(folder / "model.safetensors", _model(step))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    torch.save({"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1]}]}, folder / "optimizer.pt")
    torch.save({"last_epoch": step, "_step_count": step + 1}, folder / "scheduler.pt")
    torch.save({"python": None, "cpu": torch.get_rng_state()}, folder / "rng_state.pth")
    torch.save({"output_dir": str(folder.parent)}, folder / "training_args.bin")
    (folder / "trainer_state.json").write_text(json.dumps(_trainer_state(step, max_steps, save_steps, history)))


def lightning_run(version_dir: Path, steps_per_epoch: int = 4, epochs: int = 2) -> Path:
    """A CSVLogger version folder with ModelCheckpoint(save_top_k=-1, save_last=True)."""
    ckpt_dir = version_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "hparams.yaml").write_text("hidden: 4\nlr: 0.02\n")
    rows = ["epoch,step,train_loss,val_loss"]
    for epoch in range(epochs):
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            rows.append(f"{epoch},{step},{1.0 - step * 0.05:.4f},")
        step = (epoch + 1) * steps_per_epoch - 1
        rows.append(f"{epoch},{step},,{0.9 - epoch * 0.1:.4f}")
        global_step = (epoch + 1) * steps_per_epoch
        torch.save({"epoch": epoch, "global_step": global_step, "pytorch-lightning_version": "2.4.0",
                    "state_dict": _model(global_step), "loops": {}, "callbacks": {},
                    "optimizer_states": [], "lr_schedulers": [], "hparams_name": "kwargs",
                    "hyper_parameters": {"hidden": 4, "lr": 0.02}},
                   ckpt_dir / f"epoch={epoch}-step={global_step}.ckpt")
    shutil.copyfile(ckpt_dir / f"epoch={epochs - 1}-step={epochs * steps_per_epoch}.ckpt", ckpt_dir / "last.ckpt")
    (version_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    return version_dir


def tensorboard_run(log_dir: Path, steps: int = 20) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    for step in range(steps):
        writer.add_scalar("Loss/train", 2.0 - step * 0.05, step)
        if step % 5 == 4:
            writer.add_scalar("Loss/val", 2.1 - step * 0.05, step)
    writer.close()
    return log_dir


def plain_run(folder: Path) -> Path:
    """Like the seeds' checkpoints/<experiment>/: periodic files by step, a best and a final one."""
    folder.mkdir(parents=True, exist_ok=True)
    for step in (100, 1000, 2000):
        torch.save({"model_state_dict": _model(step), "step": step}, folder / f"checkpoint_step_{step:05d}.pt")
    torch.save({"model_state_dict": _model(1000), "step": 1000}, folder / "best_model.pt")
    torch.save({"model_state_dict": _model(2000), "step": 2000}, folder / "final_model.pt")
    (folder / "training.log").write_text("".join(f"Step {s}/2000 | train loss {2.0 - s / 1500:.3f} | "
                                                 f"lr 1e-3\n" for s in range(100, 2001, 100)))
    return folder


def uuid_run(folder: Path) -> Path:
    """Like seed 004's logs/<run_id>/model_stepNNNNNN.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    for step in (256, 512):
        torch.save({"model": _model(step), "step": step, "run_id": folder.name}, folder / f"model_step{step:06d}.pt")
    return folder


def skipped_trees(root: Path) -> list[Path]:
    """Checkpoint files where no run is: a virtualenv, .git, __pycache__, node_modules."""
    venv = root / "venv-tools"
    (venv / "lib").mkdir(parents=True, exist_ok=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    places = [venv / "lib", root / ".git" / "objects", root / "src" / "__pycache__",
              root / "web" / "node_modules" / "pkg"]
    for place in places:
        place.mkdir(parents=True, exist_ok=True)
        torch.save({"x": 1}, place / "model.pt")
    return places


def foreign_root(root: Path) -> dict[str, Path]:
    """One run of each layout under `root` (names relative to it), and trees to skip beside them."""
    runs = {
        NANOGPT: nanogpt_run(root / NANOGPT),
        HF: hf_run(root / HF),
        LIGHTNING: lightning_run(root / LIGHTNING),
        TENSORBOARD: tensorboard_run(root / TENSORBOARD),
        PLAIN: plain_run(root / PLAIN),
        UUID_RUN: uuid_run(root / UUID_RUN),
    }
    skipped_trees(root)
    (root / "README.md").write_text("my experiments\n")
    set_mtimes(root, MTIME)
    return runs


def set_mtimes(root: Path, mtime: float) -> None:
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            os.utime(os.path.join(folder, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every path under root, folders included, symlinks not followed."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            state[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    st = os.lstat(root)
    state["."] = (st.st_size, st.st_mtime_ns)
    return state
