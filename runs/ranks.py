"""The ranks of a distributed run as a reader sees them: `ranks/<rank>.json`, one heartbeat per rank.

Every rank of a run with world size > 1 rewrites its own file atomically every ~2 s
({"rank", "local_rank", "node", "host", "pid", "step", "state", "world_size", "heartbeat_at"}),
from a thread of its own, so a rank that is busy or waiting in a collective still beats; a rank
whose process or machine is gone stops. A reader names the ranks of a running run whose last beat
is older than RANK_SILENT_SECONDS, counting from the attempt's start (status.json `started_at`), so
the files of an earlier attempt, or of a rank still starting, are not mistaken for silence until
that long has passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.layout import RANKS_DIR

# A rank beats every ~2 s; missing five beats in a row is worth naming.
RANK_SILENT_SECONDS = 10.0


@dataclass(frozen=True)
class RankBeat:
    rank: int
    node: int | None
    host: str | None
    pid: int | None
    step: int | None
    state: str | None
    heartbeat_at: float | None


@dataclass(frozen=True)
class SilentRank:
    rank: int
    host: str | None
    node: int | None
    seconds: float               # since its last beat (or since the attempt started, if it never beat)

    def describe(self) -> str:
        where = f" on {self.host}" if self.host else ""
        node = f" (node {self.node})" if self.node is not None else ""
        return f"rank {self.rank}{where}{node} silent for {self.seconds:.0f} s"

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "node": self.node, "seconds": round(self.seconds, 1)}


def rank_file(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / RANKS_DIR / f"{rank}.json"


def read_rank_beats(run_dir: Path) -> dict[int, RankBeat]:
    """Every readable `ranks/<rank>.json`; unreadable or foreign files are skipped (never raises)."""
    folder = Path(run_dir) / RANKS_DIR
    try:
        names = [p for p in folder.iterdir() if p.suffix == ".json" and p.stem.isdigit()]
    except OSError:
        return {}
    beats: dict[int, RankBeat] = {}
    for path in names:
        try:
            raw = safe_files.read_json(path, limit=64 * 1024)
        except (OSError, ValueError):
            continue
        if not isinstance(raw, dict):
            continue
        beats[int(path.stem)] = RankBeat(
            rank=int(path.stem), node=_int(raw.get("node")), host=_str(raw.get("host")), pid=_int(raw.get("pid")),
            step=_int(raw.get("step")), state=_str(raw.get("state")), heartbeat_at=_float(raw.get("heartbeat_at")))
    return beats


def silent_ranks(run_dir: Path, status: dict[str, Any], now: float | None = None,
                 threshold: float = RANK_SILENT_SECONDS) -> list[SilentRank]:
    """Ranks of a running distributed attempt that stopped beating (or never started), by rank.

    Only ranks below the attempt's world size count, and no beat counts as older than the
    attempt's start: an earlier attempt's files are not silence.
    """
    world_size = _int(status.get("world_size")) or 1
    if status.get("state") != "running" or world_size <= 1:
        return []
    now = time.time() if now is None else now
    started = _float(status.get("started_at")) or 0.0
    beats = read_rank_beats(run_dir)
    silent = []
    for rank in range(world_size):
        beat = beats.get(rank)
        last = max(started, beat.heartbeat_at or 0.0) if beat else started
        if now - last > threshold:
            silent.append(SilentRank(rank=rank, host=beat.host if beat else None,
                                     node=beat.node if beat else None, seconds=now - last))
    return silent


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
