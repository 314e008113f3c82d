"""`runctl diff CKPT_A CKPT_B [--json]`: how far each model tensor moved between two checkpoints."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from runctl.tui.commands.inspect import _print_json, _print_table

if TYPE_CHECKING:
    from runctl.engine.checkpoint_diff import TensorChange


def run(args: argparse.Namespace) -> int:
    from runctl.engine.checkpoint_diff import diff_checkpoints  # torch: only for this command

    result = diff_checkpoints(args.a, args.b)
    if args.json:
        _print_json(result.to_json())
        return 0
    rows = [[t.name, "x".join(map(str, t.shape)) or "scalar", format_number(t.rel_l2),
             format_number(t.cosine), format_number(t.max_abs)] for t in result.tensors]
    _print_table(["TENSOR", "SHAPE", "REL L2", "COSINE", "MAX |Δ|"], rows)
    print(total_line(result.total, len(result.tensors)))
    return 0


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def total_line(total: TensorChange, tensors: int) -> str:
    return (f"total: {tensors} tensors, {total.numel:,} values: relative L2 {format_number(total.rel_l2)}, "
            f"cosine {format_number(total.cosine)}, max |Δ| {format_number(total.max_abs)}")
