"""The built-in tasks' model settings: defaults and checks, without importing torch.

engine.config validates `model:` against these before a run starts; the task modules read the
resolved values. A custom task ("package.module:factory") keeps `model:` free-form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runctl.engine.fields import Field, Invalid, boolean, integer, number


@dataclass(frozen=True)
class ModelSpec:
    """`fields` per model key; `relations` check keys against each other: (key, check(model))."""

    fields: dict[str, Field]
    relations: tuple[tuple[str, Callable[[dict[str, Any]], None]], ...] = ()


def _heads_divide(width_key: str, heads_key: str) -> Callable[[dict[str, Any]], None]:
    def check(model: dict[str, Any]) -> None:
        if model[width_key] % model[heads_key]:
            raise Invalid(
                f"{width_key} ({model[width_key]}) must be a multiple of {heads_key} ({model[heads_key]})"
            )

    return check


def _patch_field() -> Field:
    """ViT patch side in pixels, or "auto" (null too): 2 for 8x8 images, 4 for 28x28."""
    side = integer(None, lo=1)

    def check(value: Any) -> int | str:
        if value is None or value == "auto":
            return "auto"
        try:
            return side.check(value)
        except Invalid as err:
            raise Invalid(f"{err} (or auto)") from None

    return Field("auto", check, _patch_field.__doc__ or "")


MODEL_SPECS: dict[str, ModelSpec] = {
    "digits_mlp": ModelSpec({
        "hidden": integer(128, lo=1, doc="width of each hidden layer"),
        "depth": integer(2, lo=1, hi=64, doc="number of hidden layers"),
    }),
    "digits_cnn": ModelSpec({
        "channels": integer(32, lo=1, doc="channels of each conv block"),
        "depth": integer(2, lo=1, hi=16, doc="number of conv blocks"),
    }),
    "digits_vit": ModelSpec(
        {
            "patch": _patch_field(),
            "dim": integer(64, lo=1, doc="embedding width"),
            "depth": integer(2, lo=1, hi=64, doc="transformer blocks"),
            "heads": integer(4, lo=1, doc="attention heads (must divide dim)"),
        },
        relations=(("heads", _heads_divide("dim", "heads")),),
    ),
    "char_gpt": ModelSpec(
        {
            "n_layer": integer(4, lo=1, hi=128),
            "n_head": integer(4, lo=1),
            "n_embd": integer(128, lo=1, doc="must be a multiple of n_head"),
            "block_size": integer(64, lo=1, doc="context length in characters"),
            "dropout": number(0.0, lo=0.0, hi=1.0, hi_open=True),
            "bias": boolean(False, doc="biases in Linear and LayerNorm layers"),
        },
        relations=(("n_head", _heads_divide("n_embd", "n_head")),),
    ),
}

BUILTIN_TASKS: tuple[str, ...] = tuple(MODEL_SPECS)

# What every built-in task's eval_step reports, and which direction is better.
BUILTIN_METRICS: dict[str, str] = {"val/loss": "min", "val/acc": "max"}
