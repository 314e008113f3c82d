"""runs/ must import without torch or textual, so `runctl ls` and the UI open fast anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from run_factory import make_run

HEAVY = ("torch", "textual")

_IMPORT_ALL = """
import importlib, pkgutil, sys
import runs
names = sorted(m.name for m in pkgutil.walk_packages(runs.__path__, "runs."))
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(f"{{len(names)}}|{{','.join(heavy)}}")
"""


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_every_runs_module_imports_without_torch_or_textual() -> None:
    count, heavy = _run(_IMPORT_ALL.format(heavy=set(HEAVY))).split("|")
    assert int(count) >= 5  # integrity, checkpoints, status, discovery, manifest, ...
    assert heavy == "", f"runs/ imported {heavy}"


def test_ls_verify_and_summary_do_not_import_torch(tmp_path: Path) -> None:
    make_run(tmp_path, "a", checkpoint_steps=(50, 100))
    code = f"""
import contextlib, io, sys
from tui.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    codes = [main(["ls", {str(tmp_path)!r}]), main(["verify", {str(tmp_path)!r}]),
             main(["verify", "--quick", {str(tmp_path)!r}]), main(["summary", {str(tmp_path)!r}])]
print(codes, sorted(m for m in sys.modules if m.split(".")[0] in {set(HEAVY)!r}))
"""
    assert _run(code) == "[0, 0, 0, 0] []"
