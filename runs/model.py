"""Plain records the runs model hands to the CLI and the UI (stable field names: `--json` uses them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class CheckpointInfo:
    path: Path
    name: str
    step: int | None          # from the manifest, else from the file name
    kind: str | None          # periodic | best | final | interrupt | last | None (unknown); a foreign
                              # file's role comes from its name (best_model, final, last, latest, ckpt)
    bytes: int
    mtime: float
    status: str               # ok | unverified | partial | corrupt | incompatible | missing | unchecked | quarantined
                              # | unsafe (healthy, refused by a weights-only load) | legacy (pre-zip torch file)
    reason: str | None = None # why corrupt / incompatible / missing
    sha256: str | None = None # computed by a full verify
    level: str | None = None  # quick | full | deep: the level `status` was established at
    copy_of: str | None = None  # a last/latest file that is the same bytes as this other checkpoint
    format: str | None = None # zip | legacy | safetensors (read from the bytes; None: not read)
    holds: str | None = None  # what the file holds (deep; safetensors from its header)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@dataclass
class RunSummary:
    path: Path
    run_id: str
    name: str
    layout: str               # "runctl" or the foreign layout's detector name
    state: str                # running | stalled | stopped | interrupted | crashed | finished | unknown
    step: int | None = None
    max_steps: int | None = None
    last_loss: float | None = None
    best: dict[str, Any] | None = None      # {"metric", "value", "step"}
    checkpoints: int = 0
    checkpoint_bytes: int = 0
    created_at: float | None = None
    updated_at: float | None = None
    parent: dict[str, Any] | None = None    # {"run_id", "checkpoint"} when branched
    world_size: int = 1
    nodes: int = 1
    silent_ranks: list[str] = field(default_factory=list)  # "rank 3 on host-b (node 1) silent for 42 s"
    error: str | None = None                # the crash's last line, or why the run is unreadable
    problems: list[str] = field(default_factory=list)  # garbage status.json, manifest, metrics ...
    checkpoints_expected: int | None = None  # how many retention should have kept by now (None: unknown)
    missing_steps: list[int] = field(default_factory=list)  # expected (or listed) checkpoints absent
    # state stalled: {"since", "after_s", "thread", "where", "stack"} of the training thread (engine.stall)
    stalled: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d
