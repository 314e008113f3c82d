"""The task protocol: what the engine needs from a model + data + loss, built-in or your own.

A task is any object with these members (the built-ins digits_* and char_gpt follow it too):

    train_size: int, val_size: int     examples per split (the sampler draws indices below these)
    unit: str                          "samples" or "tokens" (for the samples/s or tokens/s metric)
    build_model() -> nn.Module         a fresh model; the engine seeds torch before calling it
    get_batch(split, indices) -> tuple[Tensor, ...]
                                       split is "train" or "val"; indices a CPU LongTensor; returns
                                       CPU tensors (the engine moves them to the device)
    units(batch) -> int                samples or tokens in a batch
    loss(model, batch, settings) -> Tensor
                                       the scalar to minimise; settings is the effective config at
                                       this step (curriculum applied), e.g. settings["loss"]["aux_weight"]
    eval_step(model, batch) -> dict[str, Tensor]
                                       batch means, e.g. {"val/loss": ..., "val/acc": ...}; called
                                       under torch.no_grad() with model.eval(); must consume no RNG

The engine draws training indices itself (engine.data.EpochSampler, checkpointed) and evaluates
on the first `eval.batches` validation batches in order, so a task holds no iteration state and
resume is exact without the task's help.

A custom task is named in the config as `task: "package.module:factory"`; the engine imports
`package.module` (installed, on PYTHONPATH, or under the current directory) and calls `factory(cfg)`
with the resolved config. `model:` is free-form for custom tasks, and so are extra keys under
`loss:` (which a curriculum may then change). A minimal example, mytasks/squares.py:

    import torch
    from torch import nn
    import torch.nn.functional as F

    class Squares:
        unit = "samples"

        def __init__(self, cfg):
            gen = torch.Generator().manual_seed(0)
            self.x = torch.rand(1200, 1, generator=gen) * 4 - 2
            self.y = self.x ** 2
            self.width = cfg["model"].get("width", 32)
            self.train_size, self.val_size = 1000, 200

        def build_model(self):
            return nn.Sequential(nn.Linear(1, self.width), nn.Tanh(), nn.Linear(self.width, 1))

        def get_batch(self, split, indices):
            offset = 0 if split == "train" else self.train_size
            return self.x[indices + offset], self.y[indices + offset]

        def units(self, batch):
            return batch[0].shape[0]

        def loss(self, model, batch, settings):
            x, y = batch
            return F.mse_loss(model(x), y)

        def eval_step(self, model, batch):
            x, y = batch
            return {"val/loss": F.mse_loss(model(x), y)}

    def factory(cfg):
        return Squares(cfg)

and the config: `task: "mytasks.squares:factory"`, `model: {width: 64}`,
`eval: {metric: val/loss}`. Run it from the folder that holds mytasks/: `runctl train squares.yaml`.
`runctl train` finds the module and the factory before it creates the run folder (it reads the
file; it does not run it), so a typo costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # keep this module importable without torch
    from torch import Tensor, nn

PROTOCOL_MEMBERS: tuple[str, ...] = (
    "train_size", "val_size", "unit", "build_model", "get_batch", "units", "loss", "eval_step",
)
UNITS: tuple[str, ...] = ("samples", "tokens")


@runtime_checkable
class Task(Protocol):
    train_size: int
    val_size: int
    unit: str

    def build_model(self) -> nn.Module: ...

    def get_batch(self, split: str, indices: Tensor) -> tuple[Tensor, ...]: ...

    def units(self, batch: tuple[Tensor, ...]) -> int: ...

    def loss(self, model: nn.Module, batch: tuple[Tensor, ...], settings: dict[str, Any]) -> Tensor: ...

    def eval_step(self, model: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, Tensor]: ...
