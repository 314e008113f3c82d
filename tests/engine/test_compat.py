"""engine.compat: model-vs-checkpoint reports, their one-line messages, and changed-settings warnings."""

from __future__ import annotations

import torch
from runctl.engine.compat import (
    compare_state_dicts,
    format_incompatibility,
    settings_changes,
    strip_compile_prefix,
)


def test_matching_state_dicts_are_compatible() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    report = compare_state_dicts(model.state_dict(), model.state_dict())
    assert report.ok
    assert format_incompatibility(report) == "compatible"


def test_missing_unexpected_and_shape_mismatch_named() -> None:
    expected = {"blocks.3.attn.weight": torch.zeros(4, 4), "blocks.3.attn.bias": torch.zeros(4),
                "head.weight": torch.zeros(10, 128), "embed.weight": torch.zeros(5, 3)}
    found = {"head.weight": torch.zeros(10, 64), "embed.weight": torch.zeros(5, 3),
             "old_head.weight": torch.zeros(2, 2)}
    report = compare_state_dicts(expected, found)
    assert not report.ok
    assert report.missing == ["blocks.3.attn.weight", "blocks.3.attn.bias"]
    assert report.unexpected == ["old_head.weight"]
    assert report.shape_mismatches == [("head.weight", (10, 64), (10, 128))]
    assert format_incompatibility(report) == (
        "missing 2 keys (blocks.3.attn.weight, blocks.3.attn.bias), "
        "unexpected 1 key (old_head.weight), "
        "1 shape mismatch (head.weight: [10,64] -> [10,128])")


def test_long_lists_show_the_first_few_and_the_count() -> None:
    expected = {f"layer.{i}.weight": torch.zeros(1) for i in range(7)}
    message = format_incompatibility(compare_state_dicts(expected, {}))
    assert message == "missing 7 keys (layer.0.weight, layer.1.weight, layer.2.weight, ...)"


def test_compile_prefix_is_ignored_when_comparing_and_stripped() -> None:
    plain = torch.nn.Linear(3, 2).state_dict()
    compiled_keys = {f"_orig_mod.{k}": v for k, v in plain.items()}
    assert compare_state_dicts(plain, compiled_keys).ok
    assert compare_state_dicts(compiled_keys, plain).ok
    assert list(strip_compile_prefix({"module._orig_mod.fc.weight": 1, "my_orig_mod.w": 2})) == [
        "module.fc.weight", "my_orig_mod.w"]


def test_settings_changes_lists_watched_keys_only() -> None:
    old = {"task": "char_gpt", "data": {"batch_size": 64, "path": None}, "optim": {"grad_accum": 1, "lr": 1e-3},
           "model": {"n_layer": 4, "block_size": 128}, "max_steps": 100}
    new = {"task": "char_gpt", "data": {"batch_size": 128, "path": None}, "optim": {"grad_accum": 2, "lr": 3e-4},
           "model": {"n_layer": 4, "block_size": 256, "dropout": 0.1}, "max_steps": 500}
    assert settings_changes(old, new) == [
        "data.batch_size: 64 -> 128",
        "model.block_size: 128 -> 256",
        "model.dropout: (unset) -> 0.1",
        "optim.grad_accum: 1 -> 2",
    ]
    assert settings_changes(old, old) == []
