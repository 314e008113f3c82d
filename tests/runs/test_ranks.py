"""runs.ranks: which ranks of a running distributed attempt stopped beating."""

from __future__ import annotations

import json
from pathlib import Path

from runctl.runs.ranks import read_rank_beats, silent_ranks

NOW = 1_000_000.0


def _beat(run_dir: Path, rank: int, at: float, host: str = "node-a", node: int = 0) -> None:
    folder = run_dir / "ranks"
    folder.mkdir(exist_ok=True)
    (folder / f"{rank}.json").write_text(json.dumps({"rank": rank, "node": node, "host": host, "pid": 10 + rank,
                                                     "step": 5, "state": "running", "heartbeat_at": at}))


def test_a_rank_is_silent_only_after_the_threshold_counted_from_the_attempts_start(tmp_path: Path) -> None:
    status = {"state": "running", "world_size": 4, "started_at": NOW - 60}
    _beat(tmp_path, 0, NOW - 1)
    _beat(tmp_path, 1, NOW - 30, host="node-b", node=1)      # stopped beating 30 s ago
    _beat(tmp_path, 2, NOW - 3600)                            # an earlier attempt's file, never refreshed
    _beat(tmp_path, 5, NOW - 3600)                            # beyond this attempt's world size
    (tmp_path / "ranks" / "junk.json").write_text("{")
    (tmp_path / "ranks" / "3.json").write_text("not json")   # rank 3: nothing readable
    silent = silent_ranks(tmp_path, status, now=NOW)
    assert [(s.rank, s.host, round(s.seconds)) for s in silent] == [(1, "node-b", 30), (2, "node-a", 60), (3, None, 60)]
    assert silent[0].describe() == "rank 1 on node-b (node 1) silent for 30 s"
    assert set(read_rank_beats(tmp_path)) == {0, 1, 2, 5}


def test_a_fresh_attempt_and_a_run_that_is_not_running_have_no_silent_ranks(tmp_path: Path) -> None:
    _beat(tmp_path, 1, NOW - 3600)
    assert silent_ranks(tmp_path, {"state": "running", "world_size": 2, "started_at": NOW - 2}, now=NOW) == []
    assert silent_ranks(tmp_path, {"state": "stopped", "world_size": 2, "started_at": NOW - 600}, now=NOW) == []
    assert silent_ranks(tmp_path, {"state": "running", "world_size": 1, "started_at": NOW - 600}, now=NOW) == []
