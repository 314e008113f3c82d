"""The run view's `b`: a new run from the selected checkpoint, through the branch dialog.

Creating the branch verifies and reads the checkpoint (seconds for a big one), so it runs in a
thread worker of the run view; training the branch and opening its view happen back on the UI
thread. A checkpoint another tool wrote starts the dialog from a built-in config for the user to
fit to its model (task, model sizes); a file of a Hugging Face checkpoint-N/ folder means the folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runctl.runs.model import CheckpointInfo
from runctl.tui.screens.branch_dialog import BranchDialog, BranchRequest, config_text
from textual.screen import Screen

# The config a branch from another tool's checkpoint starts from in the dialog (edited to fit).
FOREIGN_BRANCH_STARTER = "digits_mlp"
HF_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")


def ask_branch(view: Any, selected: CheckpointInfo, name: str, open_view: Callable[[Path], Screen]) -> None:
    """Ask for the branch of `selected` (a checkpoint of `view.run_dir`, the run called `name`),
    make it, train it here and show it with `open_view(new_dir)`.

    `view` is the run view: its `run_dir`, `run_cfg`, `foreign` and `engine_host`, and its
    workers (group "branch"), whose failures it reports.
    """
    app, host = view.app, view.engine_host
    origin = f"{name} @ {selected.name}"

    def opened(new_dir: Path) -> None:
        host.start(new_dir)
        app.notify(f"branched {origin} -> {new_dir.name}", markup=False)
        branch_view = open_view(new_dir)
        if app.screen is view:
            app.switch_screen(branch_view)
        else:  # the user moved on while the branch was made: do not replace what they look at
            app.push_screen(branch_view)

    def make(create: Callable[[], Path | None]) -> None:
        def work() -> None:
            new_dir = create()
            if new_dir is not None:
                app.call_from_thread(opened, Path(new_dir))

        app.notify(f"branching {origin}…", markup=False)
        view.run_worker(work, name="branch", group="branch", thread=True, exit_on_error=False)

    if not view.foreign:
        def branch(request: BranchRequest | None) -> None:
            if request is not None:
                make(lambda: host.branch(view.run_dir, selected.path, request.name, overrides=request.overrides,
                                         config_yaml=request.config_yaml, weights_only=request.weights_only,
                                         start=False))

        app.push_screen(BranchDialog(name, selected.name, selected.step, view.run_cfg), branch)
        return

    from runctl.engine.config import load_config

    starter = load_config(FOREIGN_BRANCH_STARTER)
    source = selected.path.parent if HF_CHECKPOINT_DIR.match(selected.path.parent.name) else selected.path

    def branch_foreign(request: BranchRequest | None) -> None:
        if request is not None:
            make(lambda: host.branch_foreign(source, request.name, request.config_yaml or config_text(starter),
                                             request.overrides, weights_only=request.weights_only))

    app.push_screen(BranchDialog(name.replace("/", "-"), selected.name, selected.step, starter), branch_foreign)
