"""A custom task (`task: "fault_task:factory"`) that gives the fault tests handles on the engine.

It follows engine/tasks/base.py's protocol and is loaded by the engine in a subprocess (the test
puts this folder on PYTHONPATH); the tests never import it. Knobs, all under the free-form
`model:` and `loss:` sections of a custom task:

    model.hidden        width of the one hidden layer (digits: 64 inputs, 10 classes)
    model.step_sleep    seconds each training loss sleeps: a window for signals "while training"
    model.eval_sleep    seconds each eval batch sleeps: a window for signals "while evaluating"
    model.marker_dir    where eval_step records that evaluation is in progress (file "evaluating")
    loss.poison         0: a normal loss; 1: the loss is NaN; 2: it is +inf (set by a curriculum
                        stage, so it starts at an exact step)

Sleeping does not touch any RNG, so a run with sleeps is bit-identical to one without.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VAL_SIZE = 297


class FaultTask:
    unit = "samples"

    def __init__(self, cfg: dict[str, Any]) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        self.y = torch.tensor(digits.target, dtype=torch.long)
        self.val_size = VAL_SIZE
        self.train_size = len(self.y) - VAL_SIZE
        model = cfg.get("model") or {}
        self.hidden = int(model.get("hidden", 16))
        self.step_sleep = float(model.get("step_sleep", 0.0))
        self.eval_sleep = float(model.get("eval_sleep", 0.0))
        marker_dir = model.get("marker_dir")
        self.eval_marker = Path(marker_dir) / "evaluating" if marker_dir else None

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(64, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 10))

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        offset = 0 if split == "train" else self.train_size
        return self.x[indices + offset], self.y[indices + offset]

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        if self.step_sleep:
            time.sleep(self.step_sleep)
        x, y = batch
        loss = F.cross_entropy(model(x), y)
        poison = (settings.get("loss") or {}).get("poison", 0)
        if poison == 1:
            return loss * float("nan")
        if poison == 2:
            return loss * float("inf")
        return loss

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        if self.eval_marker is not None:
            with open(self.eval_marker, "a") as marker:
                marker.write(f"{time.time()}\n")
        if self.eval_sleep:
            time.sleep(self.eval_sleep)
        x, y = batch
        logits = model(x)
        return {"val/loss": F.cross_entropy(logits, y),
                "val/acc": (logits.argmax(dim=1) == y).float().mean()}


def factory(cfg: dict[str, Any]) -> FaultTask:
    return FaultTask(cfg)
