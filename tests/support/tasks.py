"""The test suite's custom task (`task: "support.tasks:factory"`): a small classifier with knobs
that give the tests handles on the engine. It follows engine/tasks/base.py's protocol; the engine
imports it in a subprocess because support.cli.cli_env puts tests/ on PYTHONPATH (and in this
process because pytest's `pythonpath` does).

Knobs, all under the free-form `model:` and `loss:` sections of a custom task:

    model.data          "digits" (scikit-learn's 8x8 digits, the default) or "synthetic" (seeded
                        random inputs: no scikit-learn import, so a subprocess starts sooner)
    model.hidden        width of the one hidden layer (default 16)
    model.batchnorm     true: a BatchNorm1d, whose running statistics change in the forward pass
    model.step_sleep    seconds each training loss sleeps: a window for keys and signals "while
                        training" (default: the environment's TEST_TASK_STEP_SLEEP, else 0)
    model.eval_sleep    seconds each eval batch sleeps: a window for signals "while evaluating"
    model.marker_dir    where eval_step records that evaluation is in progress (file "evaluating")
    model.hang_at       the loss call (counted in this process) that waits in wait_for_release
                        until the file `model.release` exists, as a step stuck on a queue, a lock
                        or a network file would; under torchrun only on rank `model.hang_rank`, if set
    model.nan_at        the loss call whose loss is NaN
    loss.poison         0: a normal loss; 1: NaN; 2: +inf; 3: raises RuntimeError("poisoned batch")
    loss.crash          1: raises RuntimeError("injected failure in the loss")
                        (both `loss` knobs are set by a curriculum stage, so they start at an exact step)

TEST_TASK_CRASH_RANK_AT="1:8" (environment): torchrun rank 1 raises in its 8th loss call.

Sleeping and waiting touch no RNG, so a run with them is bit-identical to one without.
Two more factories train the models of tests/fixtures/foreign/make_fixtures.py, for branching from
the real tools' checkpoints: `lightning_digits` (the LightningModule's `self.model`) and
`hf_tiny_tokens` (the Trainer run's GPT2LMHeadModel, written here without transformers, parameter
for parameter, on that run's token data).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DIGITS_VAL_SIZE = 297
SYNTHETIC_SIZE, SYNTHETIC_VAL_SIZE = 1200, 200


def wait_for_release(path: Path) -> None:
    """The hang: returns once `path` exists, checking every 50 ms in Python."""
    tick = threading.Event()
    while not path.exists():
        tick.wait(0.05)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data, dtype=torch.float32) / 16.0, torch.tensor(digits.target, dtype=torch.long)


def _synthetic() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SYNTHETIC_SIZE, 64, generator=gen)
    return x, x[:, :10].argmax(dim=1).long()


class ConfigurableTask:
    unit = "samples"

    def __init__(self, cfg: dict[str, Any]) -> None:
        model = cfg.get("model") or {}
        synthetic = model.get("data", "digits") == "synthetic"
        self.x, self.y = _synthetic() if synthetic else _digits()
        self.val_size = SYNTHETIC_VAL_SIZE if synthetic else DIGITS_VAL_SIZE
        self.train_size = len(self.y) - self.val_size
        self.hidden = int(model.get("hidden", 16))
        self.batchnorm = bool(model.get("batchnorm", False))
        self.step_sleep = float(model.get("step_sleep", os.environ.get("TEST_TASK_STEP_SLEEP", 0.0)))
        self.eval_sleep = float(model.get("eval_sleep", 0.0))
        marker_dir = model.get("marker_dir")
        self.eval_marker = Path(marker_dir) / "evaluating" if marker_dir else None
        self.hang_at = int(model.get("hang_at", 0))
        self.release = Path(str(model.get("release", "release")))
        hang_rank = model.get("hang_rank")
        if hang_rank is not None and int(os.environ.get("RANK", "0")) != int(hang_rank):
            self.hang_at = 0
        self.nan_at = int(model.get("nan_at", 0))
        self.crash_rank_at = os.environ.get("TEST_TASK_CRASH_RANK_AT", "")
        self.loss_calls = 0

    def build_model(self) -> nn.Module:
        norm = [nn.BatchNorm1d(self.hidden)] if self.batchnorm else []
        return nn.Sequential(nn.Linear(64, self.hidden), *norm, nn.ReLU(), nn.Linear(self.hidden, 10))

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        offset = 0 if split == "train" else self.train_size
        return self.x[indices + offset], self.y[indices + offset]

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        knobs = settings.get("loss") or {}
        if knobs.get("crash"):
            raise RuntimeError("injected failure in the loss")
        if self.step_sleep:
            time.sleep(self.step_sleep)
        self.loss_calls += 1
        if self.loss_calls == self.hang_at:
            wait_for_release(self.release)
        rank = os.environ.get("RANK")
        if self.crash_rank_at and self.crash_rank_at == f"{rank}:{self.loss_calls}":
            raise RuntimeError(f"rank {rank} poisoned at its loss call {self.loss_calls}")
        x, y = batch
        loss = F.cross_entropy(model(x), y)
        poison = knobs.get("poison", 0)
        if poison == 3:
            raise RuntimeError("poisoned batch")
        if poison == 1 or self.loss_calls == self.nan_at:
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
        return {"val/loss": F.cross_entropy(logits, y), "val/acc": (logits.argmax(dim=1) == y).float().mean()}


class LightningDigits(ConfigurableTask):
    """The digits as 8x8 images through `nn.Sequential(Flatten, Linear, GELU, Linear)`: Lightning's
    `state_dict` keys (`model.1.weight` ...) fit it once the module prefix is removed."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__({**cfg, "model": {"hidden": 32, **(cfg.get("model") or {})}})
        self.x = self.x.reshape(-1, 8, 8)

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, self.hidden), nn.GELU(), nn.Linear(self.hidden, 10))


def factory(cfg: dict[str, Any]) -> ConfigurableTask:
    return ConfigurableTask(cfg)


def lightning_digits(cfg: dict[str, Any]) -> LightningDigits:
    return LightningDigits(cfg)


class _Conv1D(nn.Module):
    """GPT-2's projection: a linear layer whose weight is stored [in, out]."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.c_attn = _Conv1D(width, 3 * width)
        self.c_proj = _Conv1D(width, width)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
                   for t in self.c_attn(x).split(width, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(batch, length, width))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Module()
        self.mlp.c_fc = _Conv1D(width, 4 * width)
        self.mlp.c_proj = _Conv1D(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class TinyGPT2(nn.Module):
    """transformers' GPT2LMHeadModel at the fixture's size, parameter for parameter in the same order
    (`transformer.wte.weight` ... `transformer.ln_f.bias`; the LM head is tied to wte), so the Trainer's
    model.safetensors and its optimizer.pt (AdamW, decay and no-decay groups) fit it."""

    def __init__(self, vocab: int, positions: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(vocab, width), "wpe": nn.Embedding(positions, width),
            "h": nn.ModuleList(_Block(width, heads) for _ in range(layers)), "ln_f": nn.LayerNorm(width)})

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        x = t["wte"](ids) + t["wpe"](torch.arange(ids.shape[1], device=ids.device))
        for block in t["h"]:
            x = block(x)
        return t["ln_f"](x) @ t["wte"].weight.T


class HfTinyTokens:
    """The make_fixtures.py Trainer run's data: 32 sequences of 16 tokens out of 64 (seed 0), each a
    causal LM example (the labels are the inputs, shifted inside the loss as GPT2LMHeadModel does)."""

    unit = "samples"

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.ids = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(0))
        self.train_size = self.val_size = len(self.ids)

    def build_model(self) -> nn.Module:
        return TinyGPT2(vocab=64, positions=16, width=16, layers=1, heads=2)

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.ids[indices],)

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        (ids,) = batch
        logits = model(ids)
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return {"val/loss": self.loss(model, batch, {})}


def hf_tiny_tokens(cfg: dict[str, Any]) -> HfTinyTokens:
    return HfTinyTokens(cfg)
