"""Sizes and ages as people read them; one definition for the CLI tables and the UI."""

from __future__ import annotations


def human_bytes(size: int | None) -> str:
    """Binary units, labelled as such: 334936 -> '327.1 KiB'."""
    if not isinstance(size, int) or isinstance(size, bool):
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_age(seconds: float | None) -> str:
    """Coarse, fixed width: 42s, 7m, 3h, 2d; '-' when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for limit, unit, div in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // div)}{unit}"
    return f"{int(seconds // 86400)}d"
