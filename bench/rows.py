"""A benchmark figure as a row of bench/run.py's table.

Every target is a ratio of the figure to a baseline measured in the same run on the same machine
(json parsing, sha256sum, the walk of a tree, a bare loop, an idle key press...), so a slower or
busier machine moves both sides and does not turn a met target into a miss or the reverse. Where
a figure also has an absolute target (the number a user notices: "1 s"), that verdict is printed
beside the ratio's as information and does not decide `met`.

A row: {"name", "runctl" (the figure measured), "baseline", "ratio" (runctl / baseline), "target",
"met", "unit"}; "absolute" (optional) is the information verdict, e.g. "<= 1 s: yes".
"""

from __future__ import annotations


def ratio_row(name: str, measured: float, baseline: float, limit: float, unit: str, *, at_least: bool = False,
              absolute: float | None = None) -> dict:
    """The verdict is measured / baseline <= limit (>= with at_least: a throughput or a rate).
    `absolute`, in the figure's unit, is the absolute target, printed as information."""
    ratio = measured / baseline
    sign = ">=" if at_least else "<="
    row = {"name": name, "runctl": measured, "baseline": baseline, "ratio": ratio,
           "target": f"{sign} {limit:.3g}x", "met": ratio >= limit if at_least else ratio <= limit, "unit": unit}
    if absolute is not None:
        absolute_met = measured >= absolute if at_least else measured <= absolute
        row["absolute"] = f"{sign} {absolute:g} {unit}: {'yes' if absolute_met else 'no'}"
    return row
