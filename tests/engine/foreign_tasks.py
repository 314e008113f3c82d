"""A custom task (`task: "foreign_tasks:lightning_digits"`) whose model is the LightningModule's
`self.model` in tests/fixtures/foreign/make_fixtures.py: a plain nn.Sequential on 8x8 digits, so
Lightning's `state_dict` keys (`model.1.weight` ...) fit it once the module prefix is removed.
Loaded by the engine in a subprocess (the test puts this folder on PYTHONPATH)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VAL_SIZE = 297


class LightningDigits:
    unit = "samples"

    def __init__(self, cfg: dict[str, Any]) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 8, 8) / 16.0
        self.y = torch.tensor(digits.target, dtype=torch.long)
        self.hidden = int(cfg["model"].get("hidden", 32))
        self.val_size = VAL_SIZE
        self.train_size = len(self.y) - VAL_SIZE

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, self.hidden), nn.GELU(), nn.Linear(self.hidden, 10))

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset = 0 if split == "train" else self.train_size
        return self.x[indices + offset], self.y[indices + offset]

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(x)
        return {"val/loss": F.cross_entropy(logits, y), "val/acc": (logits.argmax(-1) == y).float().mean()}


def lightning_digits(cfg: dict[str, Any]) -> LightningDigits:
    return LightningDigits(cfg)
