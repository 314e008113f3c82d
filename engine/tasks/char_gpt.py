"""A nanoGPT-style character transformer (the `char_gpt` built-in task).

Text: Python's own documentation topics (`pydoc_data.topics`, about 465k characters of English
prose, shipped with CPython) or any UTF-8 file at `data.path`. The vocabulary is the sorted set of
characters in the whole text. The last `data.val_fraction` of the text is the validation split.

A training example is a window of block_size + 1 characters (input and next-character target)
starting at a multiple of `data.stride` (null = block_size // 2): stride 1 is every position
(heavily overlapping), stride = block_size gives disjoint windows. Validation windows
are always disjoint, so evaluation covers the most text for its batches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from runctl.engine.schema import RunConfig, as_run_config
from runctl.engine.tasks.layers import Block, z_loss
from runctl.runs.errors import RunctlError
from torch import nn


def bundled_text() -> str:
    """pydoc_data.topics joined in key order: deterministic, no download."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def read_text(path: str | None) -> str:
    if path is None:
        return bundled_text()
    file = Path(path).expanduser()
    if not file.is_file():
        raise RunctlError(f"data.path: {file}: no such text file")
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunctlError(f"data.path: {file}: not UTF-8 text (bad byte at offset {err.start})") from None


class GPT(nn.Module):
    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, block_size: int,
                 dropout: float, bias: bool) -> None:
        super().__init__()
        self.block_size = block_size
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(vocab_size, n_embd),
            "wpe": nn.Embedding(block_size, n_embd),
            "drop": nn.Dropout(dropout),
            "h": nn.ModuleList(Block(n_embd, n_head, causal=True, dropout=dropout, bias=bias)
                               for _ in range(n_layer)),
            "ln_f": nn.LayerNorm(n_embd, bias=bias),
        })
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        length = idx.shape[1]
        if length > self.block_size:
            raise ValueError(f"sequence of {length} is longer than block_size {self.block_size}")
        positions = torch.arange(length, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


class CharGPTTask:
    unit = "tokens"

    def __init__(self, cfg: RunConfig | Mapping[str, Any]) -> None:
        settings = as_run_config(cfg)
        self.model_cfg: Any = settings.model  # CharGptModel (engine.tasks.specs)
        data = settings.data
        self.block_size = self.model_cfg.block_size
        self.stride = data.stride or max(1, self.block_size // 2)
        text = read_text(data.path)
        self.vocab = sorted(set(text))
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        vocab_codes = np.array([ord(c) for c in self.vocab], dtype=np.uint32)
        tokens = torch.from_numpy(np.searchsorted(vocab_codes, codes).astype(np.int64))
        n_val = int(len(tokens) * data.val_fraction)
        self.train_tokens, self.val_tokens = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
        window = self.block_size + 1
        where = data.path or "pydoc_data.topics"
        for split, part in (("train", self.train_tokens), ("val", self.val_tokens)):
            if len(part) < window:
                raise RunctlError(f"data.path: {where}: the {split} split has {len(part)} characters, "
                                  f"fewer than block_size + 1 = {window}")
        self.train_size = (len(self.train_tokens) - window) // self.stride + 1
        self.val_size = (len(self.val_tokens) - window) // self.block_size + 1

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def build_model(self) -> nn.Module:
        m = self.model_cfg
        return GPT(self.vocab_size, m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout, m.bias)

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            tokens, stride = self.train_tokens, self.stride
        elif split == "val":
            tokens, stride = self.val_tokens, self.block_size
        else:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        starts = indices.to(torch.long).unsqueeze(1) * stride
        windows = tokens[starts + torch.arange(self.block_size + 1)]
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[1].numel())

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        inputs, targets = batch
        logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        aux_weight = float(settings["loss"]["aux_weight"])
        if aux_weight:
            loss = loss + aux_weight * z_loss(logits)
        return loss

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        logits = model(inputs).float()
        return {
            "val/loss": F.cross_entropy(logits.flatten(0, 1), targets.flatten()),
            "val/acc": (logits.argmax(dim=-1) == targets).float().mean(),
        }
