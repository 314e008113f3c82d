"""Which examples each step trains on: an epoch-based sampler whose position is checkpointed.

EpochSampler walks a fresh permutation of range(n) per epoch, drawn from a private
torch.Generator seeded with `seed + epoch`, so it never touches the global RNG and resume only
needs `{"epoch", "position"}` to continue with exactly the batches an uninterrupted run would see.
Batches are `drop_last`: each epoch yields n // batch_size full batches. When n < batch_size the
batch is clamped to n (each step then trains on the whole, reshuffled, split), and
`batch_size` reports the clamped size.
"""

from __future__ import annotations

from typing import Any

import torch


class EpochSampler:
    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1:
            raise ValueError(f"cannot sample batches from an empty split (n={n})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n = n
        self.requested_batch_size = batch_size
        self.batch_size = min(batch_size, n)
        self.seed = seed
        self.epoch = 0
        self.position = 0  # index into this epoch's permutation of the next batch's first example
        # This epoch's batches from position `_first` on, as views of its permutation: cut once
        # per epoch (one op) instead of one slice op per step.
        self._batches: tuple[torch.Tensor, ...] | None = None
        self._first = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def next_indices(self) -> torch.Tensor:
        """The next batch's example indices (a LongTensor of length batch_size)."""
        if self.position + self.batch_size > self.n:  # drop_last: the tail is skipped
            self.epoch += 1
            self.position = 0
            self._batches = None
        if self._batches is None:
            self._first = self.position
            self._batches = self._permute(self.epoch)[self.position:].split(self.batch_size)
        indices = self._batches[(self.position - self._first) // self.batch_size]
        self.position += self.batch_size
        # A view, not a copy: the batches of one epoch are disjoint and each is handed out once,
        # so a caller writing to its batch cannot change a later one (saves a copy per step).
        return indices

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.n:
            raise ValueError(f"sampler state out of range for n={self.n}: epoch={epoch}, position={position}")
        self.epoch, self.position = epoch, position
        self._batches = None

    def _permute(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=generator)


def eval_index_batches(n: int, batch_size: int, max_batches: int) -> list[torch.Tensor]:
    """The validation batches in order: the first `max_batches` batches of range(n), the last one
    possibly short. Deterministic and RNG-free, so every evaluation sees the same examples."""
    batches = []
    for start in range(0, n, batch_size):
        if len(batches) == max_batches:
            break
        batches.append(torch.arange(start, min(start + batch_size, n), dtype=torch.long))
    return batches
