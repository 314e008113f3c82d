"""`runctl configs [--json]`: the built-in configs, what they train and for how long.

Reads only the YAML files (no torch), so it answers instantly on any machine.
"""

from __future__ import annotations

import argparse
import json
import sys

from runctl.engine.config import builtin_configs, load_config


def config_rows() -> list[dict[str, object]]:
    """One record per built-in config: name, task, max_steps, description, path, model, batch_size."""
    rows: list[dict[str, object]] = []
    for name, builtin in builtin_configs().items():
        cfg = load_config(name)
        rows.append({
            "name": name,
            "task": cfg["task"],
            "max_steps": cfg["max_steps"],
            "description": builtin.description,
            "path": str(builtin.path),
            "model": cfg["model"],
            "batch_size": cfg["data"]["batch_size"],
        })
    return rows


def run(args: argparse.Namespace) -> int:
    rows = config_rows()
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    headers = ("NAME", "TASK", "STEPS", "DESCRIPTION")
    table = [(str(r["name"]), str(r["task"]), str(r["max_steps"]), str(r["description"])) for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers[:-1])]
    for row in (headers, *table):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        sys.stdout.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
    sys.stdout.write("\ntrain one: runctl train NAME [--set key=value ...]   e.g. runctl train digits_mlp\n")
    return 0
