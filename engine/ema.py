"""An exponential moving average of a model's weights, kept beside the model and checkpointed.

After every optimizer step: ema = decay * ema + (1 - decay) * weights, for floating-point
parameters and buffers alike (integer buffers such as BatchNorm's counters are copied).
"""

from __future__ import annotations

from typing import Any

import torch
from runctl.engine.torch_adapter import lerp_
from torch import nn


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {
            name: value.detach().clone() for name, value in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        floats_shadow, floats_live = [], []
        for name, value in model.state_dict().items():
            target = self.shadow[name]
            if target.is_floating_point():
                floats_shadow.append(target)
                floats_live.append(value.detach())
            else:
                target.copy_(value)
        if floats_shadow:
            lerp_(floats_shadow, floats_live, 1.0 - self.decay)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise KeyError(f"EMA state lacks {', '.join(missing[:3])}")
        for name, target in self.shadow.items():
            target.copy_(state[name])
