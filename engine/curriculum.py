"""Curriculum stages: settings that change at a step boundary (no torch).

A stage `{at_step: N, set: {"loss.aux_weight": 0.1}}` applies to every step from N on: the update
that takes the run from N to N + 1 is the first to see it. Stages are validated with the config
(keys in CURRICULUM_KEYS, values checked like the config's own), so applying them cannot fail.

Each function takes the typed config (engine.schema.RunConfig) or its run.yaml mapping;
`effective_config` answers in the kind it was given.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from runctl.engine.schema import RunConfig

AnyConfig = TypeVar("AnyConfig", RunConfig, dict[str, Any])


def _steps(cfg: RunConfig | Mapping[str, Any]) -> list[int]:
    if isinstance(cfg, RunConfig):
        return [stage.at_step for stage in cfg.curriculum]
    return [int(stage["at_step"]) for stage in cfg.get("curriculum") or []]


def stage_index(cfg: RunConfig | Mapping[str, Any], step: int) -> int:
    """How many stages are active at `step` (0 = none; stage k is active when its at_step <= step)."""
    return sum(1 for at_step in _steps(cfg) if at_step <= step)


def next_stage_step(cfg: RunConfig | Mapping[str, Any], step: int) -> float:
    """The first at_step after `step` (where the active stages change next); inf if none."""
    return min((at_step for at_step in _steps(cfg) if at_step > step), default=math.inf)


def effective_config(cfg: AnyConfig, step: int) -> tuple[AnyConfig, int]:
    """`cfg` with every stage whose at_step <= step applied in order, and the number applied.

    The returned index is what a checkpoint saves as `curriculum_stage`. `cfg` is not modified.
    """
    active = stage_index(cfg, step)
    if active == 0:
        return cfg, 0
    typed = isinstance(cfg, RunConfig)
    mapping = cfg.to_dict() if isinstance(cfg, RunConfig) else copy.deepcopy(cfg)
    for stage in mapping["curriculum"][:active]:
        for dotted, value in stage["set"].items():
            node = mapping
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = copy.deepcopy(value)
    return (RunConfig.model_validate(mapping) if typed else mapping), active


def stage_boundaries(cfg: RunConfig | Mapping[str, Any]) -> list[int]:
    """The steps at which a stage starts, in order (for plotting stage markers)."""
    return _steps(cfg)
