"""runs/ must import without torch or textual, so `runctl ls` and the UI open fast anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.runs import make_run

HEAVY = ("torch", "textual")

_IMPORT_ALL = """
import importlib, pkgutil, sys
import runctl.runs
names = sorted(m.name for m in pkgutil.walk_packages(runctl.runs.__path__, "runctl.runs."))
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
from runctl.tui.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    codes = [main(["ls", {str(tmp_path)!r}]), main(["verify", {str(tmp_path)!r}]),
             main(["verify", "--quick", {str(tmp_path)!r}]), main(["summary", {str(tmp_path)!r}])]
print(codes, sorted(m for m in sys.modules if m.split(".")[0] in {set(HEAVY)!r}))
"""
    assert _run(code) == "[0, 0, 0, 0] []"


# What the UI's first paint needs; these come later (the run view, the watcher after the paint,
# the engine on a key press, PyYAML for a key map or a run.yaml the listing's reader declines).
LATER = ("torch", "numpy", "sklearn", "plotext", "textual_plotext", "watchdog", "runctl.engine", "yaml",
         "runctl.runs.watch", "runctl.tui.screens.run_view", "runctl.tui.widgets.loss_plot")


def test_the_ui_and_its_first_listing_import_only_what_the_first_screen_needs(tmp_path: Path) -> None:
    import json

    import yaml

    run = make_run(tmp_path, "a", checkpoint_steps=(50, 100))
    config = json.loads((run / "run.yaml").read_text())  # as the engine writes it:
    (run / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    code = f"""
import sys
from pathlib import Path
import runctl.tui.app
from runctl.tui.run_rows import load_rows
rows = load_rows(Path({str(tmp_path)!r}), newest=60, on_newest=lambda head: None)
later = {LATER!r}
print(len(rows), sorted(m for m in sys.modules if any(m == name or m.startswith(name + ".") for name in later)))
"""
    assert _run(code) == "1 []"
