"""engine.data: the epoch sampler (deterministic, resumable, RNG-free) and eval batches."""

from __future__ import annotations

import pytest
import torch
from runctl.engine.data import EpochSampler, eval_index_batches


def take(sampler: EpochSampler, count: int) -> list[list[int]]:
    return [sampler.next_indices().tolist() for _ in range(count)]


def test_each_epoch_is_a_permutation_without_the_tail() -> None:
    sampler = EpochSampler(n=10, batch_size=3, seed=7)
    assert sampler.batches_per_epoch == 3
    epoch0 = take(sampler, 3)
    seen = [i for batch in epoch0 for i in batch]
    assert len(set(seen)) == 9 and set(seen) <= set(range(10))  # drop_last: one example skipped
    assert sampler.state_dict() == {"epoch": 0, "position": 9}
    epoch1 = take(sampler, 3)
    assert sampler.state_dict() == {"epoch": 1, "position": 9}
    assert epoch0 != epoch1  # reshuffled


def test_same_seed_same_batches_and_other_seed_differs() -> None:
    assert take(EpochSampler(100, 8, seed=1), 30) == take(EpochSampler(100, 8, seed=1), 30)
    assert take(EpochSampler(100, 8, seed=1), 30) != take(EpochSampler(100, 8, seed=2), 30)


def test_resume_from_state_dict_continues_exactly() -> None:
    straight = EpochSampler(50, 7, seed=3)
    expected = take(straight, 25)
    first = EpochSampler(50, 7, seed=3)
    head = take(first, 11)
    resumed = EpochSampler(50, 7, seed=3)
    resumed.load_state_dict(first.state_dict())
    assert head + take(resumed, 14) == expected


def test_resume_at_a_position_off_the_batch_grid() -> None:
    """A branch with another batch size resumes mid-epoch wherever the parent stopped."""
    reference = EpochSampler(10, 3, seed=4)
    permutation = [i for batch in take(reference, 3) for i in batch]  # 9 of the 10, in order
    resumed = EpochSampler(10, 3, seed=4)
    resumed.load_state_dict({"epoch": 0, "position": 5})
    assert take(resumed, 1) == [permutation[5:8]]
    assert resumed.state_dict() == {"epoch": 0, "position": 8}
    take(resumed, 1)  # 8 + 3 > 10: the tail is dropped and epoch 1 begins
    assert resumed.state_dict() == {"epoch": 1, "position": 3}


def test_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    reference = torch.rand(5)
    torch.manual_seed(123)
    sampler = EpochSampler(1000, 10, seed=0)
    take(sampler, 250)  # crosses epochs
    assert torch.equal(torch.rand(5), reference)


def test_batch_larger_than_the_split_is_clamped() -> None:
    sampler = EpochSampler(n=5, batch_size=64, seed=0)
    assert sampler.batch_size == 5 and sampler.requested_batch_size == 64
    batches = take(sampler, 3)
    assert all(sorted(batch) == [0, 1, 2, 3, 4] for batch in batches)
    assert sampler.state_dict() == {"epoch": 2, "position": 5}


def test_indices_are_long_and_private() -> None:
    sampler = EpochSampler(20, 4, seed=0)
    batch = sampler.next_indices()
    assert batch.dtype == torch.long
    batch[:] = -1  # a caller scribbling on the batch does not corrupt the epoch
    assert min(min(b) for b in take(sampler, 4)) >= 0


@pytest.mark.parametrize(("n", "batch_size"), [(0, 4), (4, 0)])
def test_bad_arguments(n: int, batch_size: int) -> None:
    with pytest.raises(ValueError):
        EpochSampler(n, batch_size, seed=0)


def test_bad_state_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        EpochSampler(10, 2, seed=0).load_state_dict({"epoch": 0, "position": 11})


def test_eval_batches_in_order_last_one_short() -> None:
    batches = eval_index_batches(n=10, batch_size=4, max_batches=20)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(eval_index_batches(n=1000, batch_size=4, max_batches=3)) == 3
