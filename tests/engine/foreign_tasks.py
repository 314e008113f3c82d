"""Custom tasks whose models are those of tests/fixtures/foreign/make_fixtures.py:

- `foreign_tasks:lightning_digits`: the LightningModule's `self.model`, a plain nn.Sequential on
  8x8 digits, so Lightning's `state_dict` keys (`model.1.weight` ...) fit it once the module
  prefix is removed;
- `foreign_tasks:hf_tiny_tokens`: the Trainer run's GPT2LMHeadModel (written here without
  transformers, parameter for parameter) on that run's token data.

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
