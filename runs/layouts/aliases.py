"""The names tools give the metrics the plot shows (no numpy here: listings use them too)."""

from __future__ import annotations

# The plot's names -> the names tools give the same metric, most specific first.
ALIASES: dict[str, tuple[str, ...]] = {
    "train/loss": ("train/loss", "train_loss_step", "train_loss", "loss", "training_loss", "train/loss_step",
                   "Loss/train", "loss/train", "train-loss", "trainer/loss"),
    "val/loss": ("val/loss", "eval_loss", "eval/loss", "val_loss", "val_loss_epoch", "valid_loss",
                 "validation_loss", "Loss/val", "loss/val", "Loss/validation", "val-loss"),
    "lr": ("lr", "learning_rate", "train/learning_rate", "train/lr", "lr-AdamW", "lr-Adam", "lr-SGD"),
}
