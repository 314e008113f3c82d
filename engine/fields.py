"""Typed config fields: a default plus a check that returns the normalised value or raises Invalid.

Torch-free on purpose: engine.config and the built-in tasks' model specs (engine.tasks.specs) both
use these, and the CLI validates a config before it pays for importing torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Invalid(ValueError):
    """A value that does not fit its field; the message says what is wrong, not where."""


def describe(value: Any) -> str:
    """A short description of a value for an error message: its YAML-ish type and repr."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return kind if value is None else f"{kind} {shown}"


_NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Field:
    """One config leaf: `default` fills a missing key, `check(value)` validates a present one."""

    default: Any
    check: Callable[[Any], Any]
    doc: str = ""


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _bounds_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    assert hi is not None
    return f"{'<' if hi_open else '<='} {_num(hi)}"


def _check_range(value: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> None:
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
        raise Invalid(f"must be {_bounds_text(lo, hi, lo_open, hi_open)}, got {value!r}")


def integer(default: int | None, lo: int | None = None, hi: int | None = None,
            nullable: bool = False, doc: str = "") -> Field:
    """An int (a bool is not an int here: `true` for a step count is a mistake)."""

    def check(value: Any) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, str) and "e" in value.lower() and _NUMBER_TEXT.match(value.strip()):
            value = float(value)  # 1e4 (YAML 1.1 reads it as a string); a plain '1000' stays text
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
                value = int(value)  # 1e3 from YAML is a float; an integral float is a fine count
            else:
                wanted = "an integer or null" if nullable else "an integer"
                raise Invalid(f"expected {wanted}, got {describe(value)}")
        _check_range(value, lo, hi, False, False)
        return value

    return Field(default, check, doc)


def number(default: float | None, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False, nullable: bool = False, doc: str = "") -> Field:
    """A finite float; ints are accepted, and so is text such as '3e-4' (YAML 1.1 reads it as a string)."""

    def check(value: Any) -> float | None:
        if value is None and nullable:
            return None
        if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            wanted = "a number or null" if nullable else "a number"
            raise Invalid(f"expected {wanted}, got {describe(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise Invalid(f"must be finite, got {value!r}")
        _check_range(value, lo, hi, lo_open, hi_open)
        return value

    return Field(default, check, doc)


def boolean(default: bool, doc: str = "") -> Field:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {describe(value)}")
        return value

    return Field(default, check, doc)


def choice(default: str, options: tuple[str, ...], doc: str = "") -> Field:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise Invalid(f"must be one of {', '.join(options)}, got {describe(value)}")
        return value

    return Field(default, check, doc)


def text(default: str | None, pattern: str | None = None, nullable: bool = False,
         hint: str = "", doc: str = "") -> Field:
    compiled = re.compile(pattern) if pattern else None

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            wanted = "a non-empty string or null" if nullable else "a non-empty string"
            raise Invalid(f"expected {wanted}, got {describe(value)}")
        if compiled is not None and not compiled.fullmatch(value):
            raise Invalid(f"must be {hint or 'of the form ' + pattern}, got {value!r}")
        return value

    return Field(default, check, doc)


def number_pair(default: list[float], lo: float, hi: float, hi_open: bool = True, doc: str = "") -> Field:
    """Two numbers, e.g. AdamW betas."""

    inner = number(None, lo, hi, hi_open=hi_open)

    def check(value: Any) -> list[float]:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise Invalid(f"expected a list of two numbers, got {describe(value)}")
        return [inner.check(v) for v in value]

    return Field(default, check, doc)
