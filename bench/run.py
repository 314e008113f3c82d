"""Run every benchmark in bench/ and print one row a figure: name, runctl, baseline, ratio, target, met.

Each bench/bench_*.py module exposes `run(quick: bool) -> list[dict]`; a row is
{"name", "runctl", "baseline", "ratio", "target", "met", "unit"}. Baselines are measured in the same
run on the same machine, so the ratios hold on a noisy machine. Exit 1 if any target is missed.

    python bench/run.py --quick            # every figure at a size that finishes in minutes
    python bench/run.py                    # full sizes (1 GiB checkpoints, 1M points, ...)
    python bench/run.py --only metrics     # modules whose name contains "metrics"
    python bench/run.py --markdown FILE    # also write the table as Markdown (BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def format_rows(rows: list[dict]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and the cells of the figures table (shared by every bench module's own main)."""
    header = ("figure", "runctl", "baseline", "ratio", "target", "met")
    table = [header] + [(r["name"] + (f" [{r['unit']}]" if r.get("unit") else ""), _fmt(r.get("runctl")),
                         _fmt(r.get("baseline")), _fmt(r.get("ratio")), str(r.get("target", "-")),
                         "yes" if r.get("met") else "NO") for r in rows]
    return header, table


def print_rows(rows: list[dict]) -> int:
    """Print the table; 0 if every target is met, else 1 (a bench module's exit code)."""
    _, table = format_rows(rows)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return 0 if all(r.get("met") for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)

    rows: list[dict] = []
    started = time.time()
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        if args.only and args.only not in path.stem:
            continue
        print(f"# {path.stem} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(_load(path).run(quick=args.quick))
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append({"name": f"{path.stem}: crashed ({exc.__class__.__name__}: {exc})",
                         "runctl": None, "baseline": None, "ratio": None, "target": "runs", "met": False})

    header, table = format_rows(rows)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    missed = [r for r in rows if not r.get("met")]
    elapsed = time.time() - started
    print(f"\n{len(rows) - len(missed)} met, {len(missed)} missed, {elapsed:.0f} s")

    if args.markdown:
        lines = [f"Command: `python bench/run.py{' --quick' if args.quick else ''}`  ",
                 f"Machine: {platform.platform()}, Python {platform.python_version()}, "
                 f"{_cpu_count()} cores; date {time.strftime('%Y-%m-%d')}; {elapsed:.0f} s", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 1 if missed else 0


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
