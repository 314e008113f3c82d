"""A custom task (`task: "hang_task:factory"`) whose training step hangs or fails, for the stall and
alert tests.

Loaded by the engine in a subprocess (the test puts this folder on PYTHONPATH). The training
loss of step `model.hang_at` (counted in this process) waits until the file `model.release` exists,
checking every 50 ms in Python, as a step stuck on a queue, a lock or a network file would (under
torchrun only on rank `model.hang_rank`, if set); the loss of step `model.nan_at` is NaN.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def wait_for_release(path: Path) -> None:
    """The hang: returns once `path` exists."""
    tick = threading.Event()
    while not path.exists():
        tick.wait(0.05)


class HangTask:
    unit = "samples"

    def __init__(self, cfg: dict[str, Any]) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        self.y = torch.tensor(digits.target, dtype=torch.long)
        self.val_size = 297
        self.train_size = len(self.y) - self.val_size
        model = cfg.get("model") or {}
        self.hang_at = int(model.get("hang_at", 0))
        self.release = Path(str(model.get("release", "release")))
        self.nan_at = int(model.get("nan_at", 0))
        hang_rank = model.get("hang_rank")
        if hang_rank is not None and int(os.environ.get("RANK", "0")) != int(hang_rank):
            self.hang_at = 0
        self.calls = 0

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        offset = 0 if split == "train" else self.train_size
        return self.x[indices + offset], self.y[indices + offset]

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.hang_at:
            wait_for_release(self.release)
        x, y = batch
        loss = F.cross_entropy(model(x), y)
        return loss * float("nan") if self.calls == self.nan_at else loss

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(x)
        return {"val/loss": F.cross_entropy(logits, y), "val/acc": (logits.argmax(dim=1) == y).float().mean()}


def factory(cfg: dict[str, Any]) -> HangTask:
    return HangTask(cfg)
