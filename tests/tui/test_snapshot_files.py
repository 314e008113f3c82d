"""Every SVG snapshot on disk belongs to a test that still exists.

syrupy fails a serial session on a snapshot no test used any more; under pytest-xdist (the README's
test command) each worker sees only its share of the tests, so syrupy leaves that check out. This
test makes it again, for every `__snapshots__/<module>/<test>.svg` under tests/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def defined_tests(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")}


def test_every_snapshot_has_its_test() -> None:
    snapshots = sorted(TESTS.glob("**/__snapshots__/*/*.svg"))
    assert snapshots, f"no SVG snapshot under {TESTS}: the glob no longer matches syrupy's layout"
    orphans = []
    for svg in snapshots:
        module = svg.parent.parent.parent / f"{svg.parent.name}.py"
        # A parametrized test's snapshot is named `<test>[<id>].svg`.
        name = re.sub(r"\[.*\]$", "", svg.stem)
        if not module.is_file() or name not in defined_tests(module):
            orphans.append(str(svg.relative_to(TESTS)))
    assert not orphans, f"snapshots without a test (delete them or run --snapshot-update serially): {orphans}"
