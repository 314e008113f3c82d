"""The built-in tasks' model settings (`model:`): defaults and checks, without importing torch.

engine.schema validates `model:` with the class of the config's task before a run starts; the task
modules read the resolved values. A custom task ("package.module:factory") keeps `model:` free-form.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator
from runctl.engine.fields import KeyProblem, Section, describe, yaml_int


class TaskModel(Section):
    """`model:` of one task; `task_name` names it in messages."""

    task_name: ClassVar[str] = "custom task"


class FreeFormModel(TaskModel):
    """A custom task's `model:`: any keys, the task's factory reads them."""

    model_config = ConfigDict(extra="allow")


def _heads_divide(model: Any, width_key: str, heads_key: str) -> None:
    width, heads = getattr(model, width_key), getattr(model, heads_key)
    if width % heads:
        raise KeyProblem(heads_key, f"{width_key} ({width}) must be a multiple of {heads_key} ({heads})")


def _patch(value: Any) -> int | str:
    """ViT patch side in pixels, or "auto" (null too): 2 for 8x8 images, 4 for 28x28."""
    if value is None or value == "auto":
        return "auto"
    value = yaml_int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {describe(value)} (or auto)")
    if value < 1:
        raise ValueError(f"must be >= 1, got {value!r} (or auto)")
    return value


Patch = Annotated[int | str, PlainValidator(_patch), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "auto"}, {"type": "null"}]})]


class DigitsMlpModel(TaskModel):
    task_name: ClassVar[str] = "digits_mlp"

    hidden: int = Field(128, ge=1, description="width of each hidden layer")
    depth: int = Field(2, ge=1, le=64, description="number of hidden layers")


class DigitsCnnModel(TaskModel):
    task_name: ClassVar[str] = "digits_cnn"

    channels: int = Field(32, ge=1, description="channels of each conv block")
    depth: int = Field(2, ge=1, le=16, description="number of conv blocks")


class DigitsVitModel(TaskModel):
    task_name: ClassVar[str] = "digits_vit"

    patch: Patch = Field("auto", description="patch side in pixels; auto: 2 for 8x8 images, 4 for 28x28")
    dim: int = Field(64, ge=1, description="embedding width")
    depth: int = Field(2, ge=1, le=64, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads (must divide dim)")

    @model_validator(mode="after")
    def _heads(self) -> DigitsVitModel:
        _heads_divide(self, "dim", "heads")
        return self


class CharGptModel(TaskModel):
    task_name: ClassVar[str] = "char_gpt"

    n_layer: int = Field(4, ge=1, le=128, description="transformer blocks")
    n_head: int = Field(4, ge=1, description="attention heads")
    n_embd: int = Field(128, ge=1, description="embedding width; a multiple of n_head")
    block_size: int = Field(64, ge=1, description="context length in characters")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")
    bias: bool = Field(False, description="biases in Linear and LayerNorm layers")

    @model_validator(mode="after")
    def _heads(self) -> CharGptModel:
        _heads_divide(self, "n_embd", "n_head")
        return self


MODEL_SPECS: dict[str, type[TaskModel]] = {
    spec.task_name: spec for spec in (DigitsMlpModel, DigitsCnnModel, DigitsVitModel, CharGptModel)
}

BUILTIN_TASKS: tuple[str, ...] = tuple(MODEL_SPECS)

# What every built-in task's eval_step reports, and which direction is better.
BUILTIN_METRICS: dict[str, str] = {"val/loss": "min", "val/acc": "max"}
