"""Curriculum stages: settings that change at a step boundary (no torch).

A stage `{at_step: N, set: {"loss.aux_weight": 0.1}}` applies to every step from N on: the update
that takes the run from N to N + 1 is the first to see it. Stages are validated by engine.config
(keys in CURRICULUM_KEYS, values checked like the config's own), so applying them cannot fail.
"""

from __future__ import annotations

import copy
import math
from typing import Any


def stage_index(cfg: dict[str, Any], step: int) -> int:
    """How many stages are active at `step` (0 = none; stage k is active when its at_step <= step)."""
    return sum(1 for stage in cfg.get("curriculum") or [] if int(stage["at_step"]) <= step)


def next_stage_step(cfg: dict[str, Any], step: int) -> float:
    """The first at_step after `step` (where the active stages change next); inf if none."""
    return min((int(stage["at_step"]) for stage in cfg.get("curriculum") or [] if int(stage["at_step"]) > step),
               default=math.inf)


def effective_config(cfg: dict[str, Any], step: int) -> tuple[dict[str, Any], int]:
    """`cfg` with every stage whose at_step <= step applied in order, and the number applied.

    The returned index is what a checkpoint saves as `curriculum_stage`. `cfg` is not modified.
    """
    active = stage_index(cfg, step)
    if active == 0:
        return cfg, 0
    out = copy.deepcopy(cfg)
    for stage in cfg["curriculum"][:active]:
        for dotted, value in stage["set"].items():
            node = out
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = copy.deepcopy(value)
    return out, active


def stage_boundaries(cfg: dict[str, Any]) -> list[int]:
    """The steps at which a stage starts, in order (for plotting stage markers)."""
    return [int(stage["at_step"]) for stage in cfg.get("curriculum") or []]
