"""Running a CLI command in a fresh interpreter and proving it never imported torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_stdout_without_torch(*args: str) -> str:
    """stdout of `runctl ARGS` run through runctl.tui.cli.main in a fresh interpreter; fails the
    test if the command exits non-zero or imports torch."""
    code = ("import sys, io, contextlib\nfrom runctl.tui.cli import main\nbuf = io.StringIO()\n"
            f"with contextlib.redirect_stdout(buf):\n    code = main({list(args)!r})\n"
            "assert code == 0, f'exit {code}'\nassert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(buf.getvalue())\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
