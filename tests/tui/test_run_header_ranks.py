"""The run view's header for a distributed run: ranks, nodes, and the ranks that went silent."""

from __future__ import annotations

from pathlib import Path

from runctl.runs.model import RunSummary
from runctl.tui.widgets.run_header import state_text


def test_the_run_header_shows_ranks_nodes_and_who_went_silent(tmp_path: Path) -> None:
    summary = RunSummary(path=tmp_path, run_id="r", name="r", layout="runctl", state="running", step=3,
                         max_steps=9, world_size=4, nodes=2,
                         silent_ranks=["rank 3 on node-b (node 1) silent for 42 s"])
    plain = state_text(summary).plain
    assert "4 ranks on 2 nodes" in plain and plain.endswith("\nrank 3 on node-b (node 1) silent for 42 s")
