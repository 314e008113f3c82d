"""engine.curriculum: stages applied at step boundaries, in order."""

from __future__ import annotations

import pytest
from runctl.engine.config import load_config
from runctl.engine.curriculum import effective_config, stage_boundaries, stage_index
from runctl.runs.errors import RunctlError

STAGES = ("curriculum=[{at_step: 10, set: {loss.aux_weight: 0.1}},"
          " {at_step: 20, set: {loss.aux_weight: 0.5, optim.grad_clip: 0.5}},"
          " {at_step: 20, set: {optim.weight_decay: 0.0}}]")


@pytest.fixture
def cfg() -> dict:
    return load_config("digits_mlp", [STAGES])


def test_no_stage_before_the_first(cfg: dict) -> None:
    eff, index = effective_config(cfg, 9)
    assert index == 0
    assert eff["loss"]["aux_weight"] == 0.0


def test_stage_applies_from_its_step(cfg: dict) -> None:
    eff, index = effective_config(cfg, 10)
    assert index == 1
    assert eff["loss"]["aux_weight"] == 0.1
    assert eff["optim"]["grad_clip"] == 1.0


def test_stages_apply_in_order_and_accumulate(cfg: dict) -> None:
    eff, index = effective_config(cfg, 20)
    assert index == 3
    assert eff["loss"]["aux_weight"] == 0.5
    assert eff["optim"]["grad_clip"] == 0.5
    assert eff["optim"]["weight_decay"] == 0.0
    assert effective_config(cfg, 10_000)[1] == 3


def test_original_is_not_modified(cfg: dict) -> None:
    effective_config(cfg, 25)
    assert cfg["loss"]["aux_weight"] == 0.0
    assert cfg["optim"]["grad_clip"] == 1.0


def test_stage_index_and_boundaries(cfg: dict) -> None:
    assert [stage_index(cfg, s) for s in (0, 9, 10, 19, 20)] == [0, 0, 1, 1, 3]
    assert stage_boundaries(cfg) == [10, 20, 20]
    assert stage_index(load_config("digits_mlp"), 100) == 0


def test_stage_keys_are_validated_at_load() -> None:
    with pytest.raises(RunctlError, match=r"curriculum\[0\]\.set\.data\.batch_size: a curriculum may only set"):
        load_config("digits_mlp", ["curriculum=[{at_step: 5, set: {data.batch_size: 8}}]"])
    with pytest.raises(RunctlError, match=r"curriculum\[0\]\.set\.optim\.grad_clip: expected a number"):
        load_config("digits_mlp", ["curriculum=[{at_step: 5, set: {optim.grad_clip: big}}]"])


def test_the_typed_config_gets_the_same_stages(cfg: dict) -> None:
    from runctl.engine.schema import RunConfig, as_run_config

    typed = as_run_config(cfg)
    eff, index = effective_config(typed, 20)
    assert isinstance(eff, RunConfig) and index == 3
    assert (eff.loss.aux_weight, eff.optim.grad_clip, eff.optim.weight_decay) == (0.5, 0.5, 0.0)
    assert eff.to_dict() == effective_config(cfg, 20)[0]
    assert typed.loss.aux_weight == 0.0  # the original is not modified
    assert stage_index(typed, 19) == stage_index(cfg, 19) == 1
