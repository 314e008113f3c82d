"""A custom task for the UI tests (`task: "tui_test_task:factory"`): a small classifier, two knobs.

    model.step_sleep   seconds each training loss sleeps, so a run is still training when a key lands
    loss.crash         1: the loss raises (set by a curriculum stage, so the crash comes at an exact step)

It follows engine/tasks/base.py's protocol; the engine imports it because tests/tui is on sys.path.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SIZE = 1200
VAL_SIZE = 200


class UiTestTask:
    unit = "samples"

    def __init__(self, cfg: dict[str, Any]) -> None:
        # Synthetic, seeded data: no scikit-learn import, so a subprocess starts training sooner.
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(SIZE, 64, generator=gen)
        self.y = (self.x[:, :10].argmax(dim=1)).long()
        self.val_size = VAL_SIZE
        self.train_size = SIZE - VAL_SIZE
        self.step_sleep = float((cfg.get("model") or {}).get("step_sleep", 0.0))

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        offset = 0 if split == "train" else self.train_size
        return self.x[indices + offset], self.y[indices + offset]

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        if (settings.get("loss") or {}).get("crash"):
            raise RuntimeError("injected failure in the loss (tui_test_task)")
        if self.step_sleep:
            time.sleep(self.step_sleep)
        x, y = batch
        return F.cross_entropy(model(x), y)

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(x)
        return {"val/loss": F.cross_entropy(logits, y), "val/acc": (logits.argmax(dim=1) == y).float().mean()}


def factory(cfg: dict[str, Any]) -> UiTestTask:
    return UiTestTask(cfg)
