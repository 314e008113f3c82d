"""The learning-rate schedule as a pure function of the step (no torch, no state to checkpoint).

`lr(step)` is the LR of the update that takes the run from `step` completed steps to `step + 1`.
Base schedule: linear warmup to the peak over `warmup_steps` updates (the first update uses
lr/warmup, update number `warmup_steps` uses the peak), then cosine decay to `lr * min_lr_ratio`
at `max_steps`, or constant at the peak.

Extensions (run.yaml `extensions: [{at_step, max_steps, from_max_steps}]`): from `at_step` on,
the LR decays along a cosine from whatever the schedule so far gives at `at_step` down to the
minimum at the new `max_steps`; warmup is never repeated, so the curve is continuous. An
extension made during warmup lets the warmup finish and then decays to the new end. This holds
for a constant schedule too: its extension decays to `lr * min_lr_ratio` (set min_lr_ratio: 1.0
to stay flat). Extending a cosine run after it finished starts at the minimum and so stays there.

`from_max_steps` records the max_steps before the extension. run.yaml's `max_steps` is the current
end, so without it the base schedule's end would be lost; use `extend_config` to add one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runctl.engine.schema import RunConfig, as_run_config


@dataclass(frozen=True)
class Extension:
    at_step: int
    max_steps: int


@dataclass(frozen=True)
class Schedule:
    name: str  # "cosine" | "constant"
    peak_lr: float
    warmup_steps: int
    max_steps: int  # the end of the base schedule (before any extension)
    min_lr_ratio: float
    extensions: tuple[Extension, ...] = field(default=())

    @classmethod
    def from_config(cls, cfg: RunConfig | Mapping[str, Any]) -> Schedule:
        """Build from a config or run.yaml (reads optim.lr, schedule.*, max_steps, extensions)."""
        cfg = as_run_config(cfg)
        base_max = cfg.max_steps
        if cfg.extensions:
            first = cfg.extensions[0]
            # Older entries without from_max_steps: the common case is extending a finished run.
            base_max = first.at_step if first.from_max_steps is None else first.from_max_steps
        return cls(
            name=cfg.schedule.name,
            peak_lr=cfg.optim.lr,
            warmup_steps=cfg.schedule.warmup_steps,
            max_steps=base_max,
            min_lr_ratio=cfg.schedule.min_lr_ratio,
            extensions=tuple(Extension(e.at_step, e.max_steps) for e in cfg.extensions),
        )

    @property
    def min_lr(self) -> float:
        return self.peak_lr * self.min_lr_ratio

    @property
    def end_step(self) -> int:
        """The step at which the schedule (with its extensions) reaches its end."""
        return self.extensions[-1].max_steps if self.extensions else self.max_steps

    def lr(self, step: int) -> float:
        """LR for the update from `step` completed steps to `step + 1`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if not self.extensions:  # called every step: the common case without the seams
            return self._base_lr(step, self.max_steps)
        base_max, extensions = self._resolved()
        active = None
        for index, ext in enumerate(extensions):
            if step >= ext.at_step:
                active = index
        if active is None:
            return self._base_lr(step, base_max)
        ext = extensions[active]
        start_lr = self._truncated(len(self.extensions) - len(extensions) + active).lr(ext.at_step)
        return _cosine(step - ext.at_step, ext.max_steps - ext.at_step, start_lr, self.min_lr)

    def curve(self, start: int = 0, end: int | None = None) -> list[float]:
        """lr(step) for step in [start, end) (end defaults to the schedule's end), for plotting."""
        stop = self.end_step if end is None else end
        return [self.lr(step) for step in range(start, stop)]

    def extended(self, at_step: int, max_steps: int) -> Schedule:
        """This schedule with one more extension (at_step, max_steps) appended."""
        if max_steps <= at_step:
            raise ValueError(f"max_steps ({max_steps}) must be greater than at_step ({at_step})")
        return Schedule(self.name, self.peak_lr, self.warmup_steps, self.max_steps, self.min_lr_ratio,
                        (*self.extensions, Extension(at_step, max_steps)))

    def _truncated(self, count: int) -> Schedule:
        return Schedule(self.name, self.peak_lr, self.warmup_steps, self.max_steps, self.min_lr_ratio,
                        self.extensions[:count])

    def _resolved(self) -> tuple[int, tuple[Extension, ...]]:
        """The base schedule's end and the extensions that act as seams.

        An extension made during warmup lets the warmup finish and moves the base schedule's end:
        the ramp is continued, not frozen at a partial LR and not restarted.
        """
        base_max, extensions = self.max_steps, self.extensions
        while extensions and extensions[0].at_step < self.warmup_steps:
            base_max, extensions = extensions[0].max_steps, extensions[1:]
        return base_max, extensions

    def _base_lr(self, step: int, max_steps: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.name == "constant":
            return self.peak_lr
        return _cosine(step - self.warmup_steps, max_steps - self.warmup_steps, self.peak_lr,
                       self.peak_lr * self.min_lr_ratio)


def _cosine(done: int, total: int, start: float, end: float) -> float:
    """Cosine from `start` (done = 0) to `end` (done >= total)."""
    if total <= 0 or done >= total:
        return end
    return end + 0.5 * (1.0 + math.cos(math.pi * done / total)) * (start - end)


def extend_config(cfg: dict[str, Any], at_step: int, new_max_steps: int) -> dict[str, Any]:
    """A copy of run.yaml's mapping extended at `at_step` to `new_max_steps` (max_steps and extensions).

    Raises ValueError when the new end is not after both the current step and the current end.
    """
    if new_max_steps <= at_step:
        raise ValueError(f"the new max_steps ({new_max_steps}) must be greater than the current step ({at_step})")
    if new_max_steps <= int(cfg["max_steps"]):
        raise ValueError(f"the new max_steps ({new_max_steps}) must be greater than max_steps ({cfg['max_steps']})")
    out = copy.deepcopy(cfg)
    out.setdefault("extensions", [])
    out["extensions"] = list(out["extensions"] or []) + [
        {"at_step": int(at_step), "max_steps": int(new_max_steps), "from_max_steps": int(cfg["max_steps"])}
    ]
    out["max_steps"] = int(new_max_steps)
    return out


def extension_preview(cfg: RunConfig | Mapping[str, Any], at_step: int, new_max_steps: int) -> tuple[list[float], list[float]]:
    """The LR curves before and after extending at `at_step` to `new_max_steps`, for the UI to plot.

    The first list runs over [0, current end), the second over [0, new_max_steps); both are indexed
    by step, so they coincide up to `at_step`.
    """
    before = Schedule.from_config(cfg)
    after = before.extended(at_step, new_max_steps)
    return before.curve(), after.curve()
