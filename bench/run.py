"""Run every benchmark in bench/ and print one table: figure, measured, baseline, ratio, target, met.

Each bench/bench_*.py module exposes `run(quick: bool) -> list[dict]` (rows as bench/rows.py
describes them). Every target is a ratio to a baseline measured in the same run on the same
machine, so the verdicts hold on a slower or busier machine; absolute targets are printed beside
them as information. The load average is printed before and after (the ratios are what hold
under load; the absolute figures are not). Exit 1 if any target is missed.

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
    # Registered before it runs, as an import would: a dataclass resolves its annotations through
    # sys.modules[cls.__module__] (bench_engine.ProcessTime).
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _target(row: dict) -> str:
    target = str(row.get("target", "-"))
    # The absolute target's verdict, as information beside the ratio's (bench/rows.py).
    return f"{target} (absolute {row['absolute']})" if row.get("absolute") else target


def format_rows(rows: list[dict]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The header and the cells of the figures table (shared by every bench module's own main)."""
    header = ("figure", "measured", "baseline", "ratio", "target", "met")
    table = [header] + [(r["name"] + (f" [{r['unit']}]" if r.get("unit") else ""), _fmt(r.get("runctl")),
                         _fmt(r.get("baseline")), _fmt(r.get("ratio")), _target(r),
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
    load_before, commit = _load_average(), _commit()
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
    load = f"load average (1, 5, 15 min) {load_before} at the start, {_load_average()} at the end"
    print(f"\n{len(rows) - len(missed)} met, {len(missed)} missed, {elapsed:.0f} s; {load}")

    if args.markdown:
        command = "python bench/run.py" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only
                                                                                 else "")
        lines = [f"Command: `{command}`, commit {commit}  ",
                 f"Machine: {platform.platform()}, Python {platform.python_version()}, "
                 f"{_cpu_count()} cores; started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; "
                 f"{elapsed:.0f} s  ", f"{load.capitalize()}", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 1 if missed else 0


def _load_average() -> str:
    import os

    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _commit() -> str:
    import subprocess

    result = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (result.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
