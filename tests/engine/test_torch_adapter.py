"""engine.torch_adapter against the public torch calls it stands for, fast paths and fallbacks."""

from __future__ import annotations

import pytest
import torch
from runctl.engine import torch_adapter
from torch import nn


def _model_with_gradients(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(7, 13), nn.GELU(), nn.LayerNorm(13), nn.Linear(13, 3))
    loss = model(torch.randn(5, 7)).pow(2).sum() * 50  # large enough that clipping at 1.0 bites
    loss.backward()
    return model


@pytest.fixture(params=["fast path", "fallback"])
def path(request, monkeypatch) -> str:
    if request.param == "fallback":
        monkeypatch.setattr(torch_adapter, "HAS_FOREACH_NORM", False)
        monkeypatch.setattr(torch_adapter, "HAS_FOREACH_LERP", False)
    return request.param


def test_the_fast_paths_exist_in_the_pinned_torch() -> None:
    # CI pins a torch inside the tested range: there the fast paths must be the ones taken.
    assert torch_adapter.HAS_FOREACH_NORM and torch_adapter.HAS_FOREACH_LERP
    assert "cpu" in torch_adapter.fused_adamw_devices()


@pytest.mark.parametrize("clip", [None, 1.0, 1e6])
def test_clipping_is_bit_identical_to_clip_grad_norm(path: str, clip: float | None) -> None:
    ours, reference = _model_with_gradients(), _model_with_gradients()
    grads = [p.grad for p in ours.parameters()]
    norm = torch_adapter.clip_gradients_(grads, clip)
    expected = nn.utils.clip_grad_norm_(reference.parameters(), clip if clip else float("inf"))
    assert torch.equal(norm, expected)
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine.grad, theirs.grad)
    if clip == 1.0:
        assert expected > 1.0  # the case where the gradients were really scaled


@pytest.mark.parametrize("torch_has_get_total_norm", [True, False])
def test_the_norm_of_mixed_parameters_matches_clip_grad_norm_and_leaves_gradients_alone(
        monkeypatch, torch_has_get_total_norm: bool) -> None:
    if not torch_has_get_total_norm:  # torch before 2.6
        monkeypatch.delattr(nn.utils, "get_total_norm", raising=False)
    model = _model_with_gradients()
    model[3].double()
    model[3].weight.grad = torch.randn(3, 13, dtype=torch.float64)
    model[3].bias.grad = torch.randn(3, dtype=torch.float64)
    before = [p.grad.clone() for p in model.parameters()]
    norm = torch_adapter.gradient_norm_of(list(model.parameters()))
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters(), strict=True))
    monkeypatch.undo()
    expected = nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    assert norm > 0
    assert torch.allclose(norm.double(), expected.double(), rtol=1e-6)


def test_the_norm_of_no_gradients_is_zero(path: str) -> None:
    assert torch_adapter.clip_gradients_([], 1.0).item() == 0.0


def test_lerp_matches_tensor_lerp(path: str) -> None:
    torch.manual_seed(1)
    targets = [torch.randn(4, 5), torch.randn(9)]
    sources = [torch.randn(4, 5), torch.randn(9)]
    expected = [t.clone().lerp_(s, 0.01) for t, s in zip(targets, sources, strict=True)]
    torch_adapter.lerp_(targets, sources, 0.01)
    assert all(torch.equal(a, b) for a, b in zip(targets, expected, strict=True))


def test_fused_adamw_takes_the_same_steps_as_plain_adamw() -> None:
    fused_model, plain_model = _model_with_gradients(), _model_with_gradients()
    params = list(fused_model.parameters())
    assert torch_adapter.fused_adamw_fits(params)
    fused = torch.optim.AdamW(params, lr=1e-2, fused=True)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-2, foreach=False)
    for _ in range(5):
        fused.step()
        plain.step()
    for mine, theirs in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7)


def test_fused_adamw_does_not_fit_what_its_kernel_refuses() -> None:
    assert not torch_adapter.fused_adamw_fits([])
    assert not torch_adapter.fused_adamw_fits([torch.zeros(3, requires_grad=True)])  # not a Parameter
    assert not torch_adapter.fused_adamw_fits([nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)])


def test_without_the_kernel_list_fused_adamw_is_never_chosen(monkeypatch) -> None:
    monkeypatch.setattr(torch_adapter, "fused_adamw_devices", lambda: frozenset())
    assert not torch_adapter.fused_adamw_fits(list(_model_with_gradients().parameters()))
