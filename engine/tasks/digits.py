"""Image classification on handwritten digits: MLP, CNN and ViT (the `digits_*` built-in tasks).

Data: scikit-learn's bundled digits (1,797 8x8 images, no download), split into train/val by a
fixed seed (data.val_fraction), so every run, whatever its `seed`, sees the same split. With
`data.path` naming a folder of MNIST-format IDX files (train-images-idx3-ubyte[.gz],
train-labels-idx1-ubyte[.gz]; t10k-* become the validation split when present) the same tasks
train on 28x28 images, e.g. Fashion-MNIST from /usr/share/datasets/fashion-mnist.

The loss is cross-entropy plus `loss.aux_weight` times a z-loss on the logits (see layers.z_loss),
so a curriculum that changes aux_weight changes training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from runctl.engine.schema import Data, RunConfig, as_run_config
from runctl.engine.tasks.idx import IdxError, read_idx
from runctl.engine.tasks.layers import Block, z_loss
from runctl.engine.tasks.sklearn_digits import load_digits_arrays
from runctl.engine.tasks.specs import DigitsVitModel
from runctl.runs.errors import RunctlError
from torch import nn

SPLIT_SEED = 1797  # fixed: the train/val split never depends on the run's seed


@dataclass
class ImageSplits:
    train_x: torch.Tensor  # float32 [N, 1, H, W], standardised with the train split's mean/std
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    side: int
    source: str  # where the images came from, for messages


def load_images(data: Data) -> ImageSplits:
    """The digits (data.path null) or an IDX folder, split and standardised."""
    if data.path is None:
        pixels, targets = load_digits_arrays()
        images = pixels.astype(np.float32) / 16.0
        labels = targets.astype(np.int64)
        train_idx, val_idx = _fixed_split(len(labels), data.val_fraction)
        return _standardise(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx],
                            "sklearn digits")
    return _load_idx_folder(Path(data.path).expanduser(), data.val_fraction)


def _fixed_split(n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _find_idx(folder: Path, prefix: str, kind: str) -> Path | None:
    dims = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{dims}-ubyte", f"{prefix}-{kind}.idx{dims}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _read_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    images_path, labels_path = _find_idx(folder, prefix, "images"), _find_idx(folder, prefix, "labels")
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        missing = f"{prefix}-images-idx3-ubyte" if images_path is None else f"{prefix}-labels-idx1-ubyte"
        raise RunctlError(f"data.path: {folder}: has {prefix} {'labels' if images_path is None else 'images'} "
                          f"but no {missing}[.gz]")
    arrays = []
    for path in (images_path, labels_path):
        try:
            arrays.append(read_idx(path))
        except (IdxError, OSError) as err:
            raise RunctlError(f"data.path: {path}: {err}") from None
    images, labels = arrays
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise RunctlError(f"data.path: {images_path}: expected square images [N, H, W], got shape {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise RunctlError(f"data.path: {labels_path}: {labels.shape} labels for {len(images)} images")
    if labels.min() < 0 or not np.issubdtype(labels.dtype, np.integer):
        raise RunctlError(f"data.path: {labels_path}: labels must be non-negative integers")
    scale = 255.0 if images.dtype == np.uint8 else max(float(np.abs(images).max()), 1e-12)
    return images.astype(np.float32) / scale, labels.astype(np.int64)


def _load_idx_folder(folder: Path, val_fraction: float) -> ImageSplits:
    if not folder.is_dir():
        raise RunctlError(f"data.path: {folder}: not a folder (a digits task wants a folder of MNIST IDX files)")
    train = _read_pair(folder, "train")
    if train is None:
        raise RunctlError(f"data.path: {folder}: no train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    val = _read_pair(folder, "t10k")
    if val is None:
        train_idx, val_idx = _fixed_split(len(train[1]), val_fraction)
        val = (train[0][val_idx], train[1][val_idx])
        train = (train[0][train_idx], train[1][train_idx])
    elif val[0].shape[1:] != train[0].shape[1:]:
        raise RunctlError(f"data.path: {folder}: t10k images are {val[0].shape[1:]}, train images {train[0].shape[1:]}")
    if len(train[1]) < 1 or len(val[1]) < 1:
        raise RunctlError(f"data.path: {folder}: too few images to split into train and val")
    return _standardise(train[0], train[1], val[0], val[1], str(folder))


def _standardise(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                 source: str) -> ImageSplits:
    mean, std = float(train_x.mean()), float(train_x.std()) or 1.0
    num_classes = int(max(train_y.max(), val_y.max())) + 1

    def tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((images - mean) / std).astype(np.float32)).unsqueeze(1).contiguous()

    return ImageSplits(tensor(train_x), torch.from_numpy(train_y.copy()), tensor(val_x),
                       torch.from_numpy(val_y.copy()), max(num_classes, 2), train_x.shape[-1], source)


# ---------------------------------------------------------------- models

class MLP(nn.Module):
    def __init__(self, side: int, num_classes: int, hidden: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = side * side
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """`depth` blocks of conv3x3 + GELU, each followed by 2x2 max-pooling while the map is >= 2 wide."""

    def __init__(self, side: int, num_classes: int, channels: int, depth: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels = 1
        for _ in range(depth):
            blocks += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.GELU()]
            if side >= 2:
                blocks.append(nn.MaxPool2d(2))
                side //= 2
            in_channels = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ViT(nn.Module):
    """Patch embedding + learned positions + a [cls] token + pre-norm transformer; classifies [cls]."""

    def __init__(self, side: int, num_classes: int, patch: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        num_patches = (side // patch) ** 2
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, causal=False) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.ln_f(tokens[:, 0]))


def vit_patch(model: DigitsVitModel, side: int) -> int:
    """The patch size: model.patch, or for "auto" 2 for small images (8x8) and 4 for larger (28x28)."""
    patch = model.patch
    if patch == "auto":
        patch = 2 if side <= 16 else 4
    if side % patch:
        raise RunctlError(f"model.patch: {patch} does not divide the image side {side}")
    return patch


# ---------------------------------------------------------------- the task

class DigitsTask:
    """One of digits_mlp, digits_cnn, digits_vit (the `family`); all share data, loss and eval."""

    unit = "samples"

    def __init__(self, cfg: RunConfig | Mapping[str, Any], family: str) -> None:
        if family not in ("mlp", "cnn", "vit"):
            raise ValueError(f"unknown digits model family {family!r}")
        self.family = family
        settings = as_run_config(cfg)
        self.model_cfg: Any = settings.model  # the task's model class (engine.tasks.specs)
        self.data = load_images(settings.data)
        if family == "vit":
            vit_patch(self.model_cfg, self.data.side)  # fail now, not at build_model
        self.train_size = len(self.data.train_y)
        self.val_size = len(self.data.val_y)

    def build_model(self) -> nn.Module:
        m, side, classes = self.model_cfg, self.data.side, self.data.num_classes
        if self.family == "mlp":
            return MLP(side, classes, m.hidden, m.depth)
        if self.family == "cnn":
            return CNN(side, classes, m.channels, m.depth)
        return ViT(side, classes, vit_patch(m, side), m.dim, m.depth, m.heads)

    def get_batch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            return self.data.train_x[indices], self.data.train_y[indices]
        if split == "val":
            return self.data.val_x[indices], self.data.val_y[indices]
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    def units(self, batch: tuple[torch.Tensor, ...]) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], settings: dict[str, Any]) -> torch.Tensor:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        aux_weight = float(settings["loss"]["aux_weight"])
        if aux_weight:
            loss = loss + aux_weight * z_loss(logits)
        return loss

    def eval_step(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = model(images).float()
        return {
            "val/loss": F.cross_entropy(logits, labels),
            "val/acc": (logits.argmax(dim=-1) == labels).float().mean(),
        }
