"""Planting special files in a run folder, and the checks every special-file case makes the way a
user meets it (`ls`, `summary`, `extend` in a subprocess; the run view through Pilot)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.cli import run_cli
from support.run_files import status

# Far above what each command needs on a busy box, far below "for ever".
TIMEOUT = 90.0


def make_socket(path: Path) -> None:
    """A unix socket file at `path` (it stays after the socket closes). Its path is limited to 107
    bytes, so it is bound at a short path in the temp folder (pytest's tmp_path is under it: the
    same file system) and moved into place."""
    short = Path(tempfile.mkdtemp(prefix="sock"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(short / "s"))
    finally:
        server.close()
    os.rename(short / "s", path)
    short.rmdir()


def assert_listed(root: Path, cwd: Path, problem: str | None) -> None:
    """`ls --json` answers, naming `problem` (if any) among the run's problems; `summary` answers."""
    done = run_cli(["ls", root, "--json"], cwd=cwd, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["runs"][0]
    if problem is not None:
        assert any(problem in line for line in listed["problems"]), listed["problems"]
    done = run_cli(["summary", root], cwd=cwd, timeout=TIMEOUT)
    assert done.returncode == 0 and "base" in done.stdout, done.stderr


def assert_extend_skips(run: Path, cwd: Path, name: str, reason: str, final_step: int) -> None:
    """`extend --steps 1`: resume skips checkpoint `name`, says why, and trains on to the end."""
    done = run_cli(["extend", run, "--steps", "1"], cwd=cwd, timeout=240)
    assert done.returncode == 0, done.stderr
    assert f"skipped checkpoint {name}: {reason}" in done.stderr, done.stderr
    final = status(run)
    assert final["state"] == "finished" and final["step"] == final_step, final


async def run_view_table(root: Path, run: Path, keymap: Path,
                         ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Open the UI on `root`, the run view of `run`, wait until its checkpoint table satisfies
    `ready` (bounded), quit the app, and return the table's records by name."""
    from runctl.tui.app import make_app
    from runctl.tui.screens.run_view import RunViewScreen
    from runctl.tui.widgets.checkpoint_table import CheckpointTable

    app = make_app(root, watch=False, keymap_path=keymap)
    async with app.run_test(size=(120, 36)) as pilot:
        app.open_run(run)

        def infos() -> dict[str, Any]:
            screen = app.screen
            tables = screen.query(CheckpointTable) if isinstance(screen, RunViewScreen) else []
            return dict(tables[0].infos) if tables else {}

        for _ in range(2400):
            if ready(infos()):
                break
            await pilot.pause(0.05)
        table = infos()
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("q")
    assert app.return_code in (0, None)
    return table
