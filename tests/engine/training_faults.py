"""A custom task for the training tests (`task: "training_faults:factory"`): digits with a poison.

`model.batchnorm: true` adds a BatchNorm1d. `loss.poison` (set by a curriculum stage, so it starts at an exact step): 0 a normal loss,
1 the loss is NaN, 2 it is +inf, 3 the loss raises RuntimeError("poisoned batch").
TRAINING_FAULTS_STEP_SLEEP (seconds, environment): each loss sleeps that long, a window to kill
the process mid-run; sleeping touches no RNG, so the numbers are those of a run without it.
TRAINING_FAULTS_CRASH_RANK_AT="1:8": torchrun rank 1 raises in its 8th loss call.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VAL_SIZE = 297
STEP_SLEEP = float(os.environ.get("TRAINING_FAULTS_STEP_SLEEP", "0"))
# "RANK:CALL": the process of that torchrun rank raises in its CALL-th loss (one rank failing alone).
CRASH_RANK_AT = os.environ.get("TRAINING_FAULTS_CRASH_RANK_AT", "")


class PoisonedDigits:
    unit = "samples"

    def __init__(self, cfg: dict[str, Any]) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        self.y = torch.tensor(digits.target, dtype=torch.long)
        self.val_size = VAL_SIZE
        self.train_size = len(self.y) - VAL_SIZE
        self.hidden = int((cfg.get("model") or {}).get("hidden", 16))
        # BatchNorm's running statistics change in the forward pass, unlike the weights.
        self.batchnorm = bool((cfg.get("model") or {}).get("batchnorm", False))

    def build_model(self) -> nn.Module:
        norm = [nn.BatchNorm1d(self.hidden)] if self.batchnorm else []
        return nn.Sequential(nn.Linear(64, self.hidden), *norm, nn.ReLU(), nn.Linear(self.hidden, 10))

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        offset = 0 if split == "train" else self.train_size
        return self.x[indices + offset], self.y[indices + offset]

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        if STEP_SLEEP:
            time.sleep(STEP_SLEEP)
        self.loss_calls = getattr(self, "loss_calls", 0) + 1
        if CRASH_RANK_AT and CRASH_RANK_AT == f"{os.environ.get('RANK')}:{self.loss_calls}":
            raise RuntimeError(f"rank {os.environ.get('RANK')} poisoned at its loss call {self.loss_calls}")
        x, y = batch
        loss = F.cross_entropy(model(x), y)
        poison = (settings.get("loss") or {}).get("poison", 0)
        if poison == 3:
            raise RuntimeError("poisoned batch")
        if poison == 2:
            return loss * float("inf")
        return loss * float("nan") if poison == 1 else loss

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(x)
        return {"val/loss": F.cross_entropy(logits, y), "val/acc": (logits.argmax(dim=1) == y).float().mean()}


def factory(cfg: dict[str, Any]) -> PoisonedDigits:
    return PoisonedDigits(cfg)
