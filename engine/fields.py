"""The building block of the config schema: a strict pydantic model that reads numbers as YAML users
write them, plus the wording helpers every config error uses.

Torch-free on purpose: engine.schema and the built-in tasks' model settings (engine.tasks.specs)
both build on `Section`, and the CLI validates a config before it pays for importing torch.

Types are strict (`true` is not a count, `'1000'` is not a number, `1` is not a boolean), except
that numbers written in exponent form are numbers (`3e-4` and `1e4`, which YAML 1.1 reads as
strings) and an integral number is a fine count (`2.5e3`).
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class KeyProblem(ValueError):
    """A check across keys that names the key at fault (dotted, relative to the model raising it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def describe(value: Any) -> str:
    """A short description of a value for an error message: its YAML-ish type and repr."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return kind if value is None else f"{kind} {shown}"


def suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_key_hint(key: str, known: Any, owner: str) -> str:
    """' (did you mean lr?)', or the keys `owner` has when none is close."""
    return suggest(str(key), known) or f" ({owner} has: {', '.join(str(k) for k in known)})"


def yaml_int(value: Any) -> Any:
    if isinstance(value, str) and "e" in value.lower() and _NUMBER_TEXT.match(value.strip()):
        value = float(value)  # 1e4 (YAML 1.1 reads it as a string); a plain '1000' stays text
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1e3 from YAML is a float; an integral float is a fine count
    return value


def yaml_float(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _yaml_floats(value: Any) -> Any:
    return [yaml_float(item) for item in value] if isinstance(value, list) else value


def numeric_kind(annotation: Any) -> str | None:
    """"int", "float" or "floats" (a list of floats) for a field's annotation, else None."""
    if get_origin(annotation) is Annotated:
        return numeric_kind(get_args(annotation)[0])
    if get_origin(annotation) in (Union, type(int | None)):
        kinds = {numeric_kind(arg) for arg in get_args(annotation) if arg is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if get_origin(annotation) is list and numeric_kind(get_args(annotation)[0]) == "float":
        return "floats"
    return None


_COERCE = {"int": yaml_int, "float": yaml_float, "floats": _yaml_floats}


class Section(BaseModel):
    """A mapping of settings: unknown keys are errors, types strict, numbers read as YAML users mean."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        kind = numeric_kind(cls.model_fields[info.field_name].annotation) if info.field_name else None
        return _COERCE[kind](value) if kind else value

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping run.yaml holds: YAML key names, nested dicts and lists."""
        return self.model_dump(mode="python", by_alias=True)
