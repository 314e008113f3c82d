"""Names of the files in a run directory (the contract in docs/DESIGN.md)."""

from __future__ import annotations

import re
from pathlib import Path

RUN_YAML = "run.yaml"
STATUS_JSON = "status.json"
METRICS_JSONL = "metrics.jsonl"
EVENTS_JSONL = "events.jsonl"
CHECKPOINT_DIR = "checkpoints"
MANIFEST_JSON = "manifest.json"
LOCK_FILE = "lock"
# Commands for an engine started elsewhere: one JSON file per command, polled by rank 0.
CONTROL_DIR = "control"
# Checkpoints moved out of checkpoints/ (never deleted), each move in its own
# <kind>/<time>-from-<step>/ folder with its manifest.json: the newer files of an abandoned
# timeline (resume --from an older one), and the files a resume skipped as damaged.
SUPERSEDED_DIR = "superseded"
QUARANTINE_DIR = "quarantine"
SET_ASIDE_DIRS = (SUPERSEDED_DIR, QUARANTINE_DIR)
# In a quarantine folder: {"files": {name: reason}, "resumed_from": step}.
REASONS_JSON = "reasons.json"
# One heartbeat file per rank of a distributed run, `ranks/<rank>.json`, each written by its rank.
RANKS_DIR = "ranks"

# A file being written is named "<final name>.tmp.<pid>"; see runs.atomic.
TEMP_MARKER = ".tmp."

CHECKPOINT_RE = re.compile(r"^step_(\d{8,})\.pt$")
# A sharded checkpoint (parallel.strategy: fsdp) is a folder, `step_00001000/`, written by
# torch.distributed.checkpoint (`.metadata` + one `__<rank>_0.distcp` per rank) plus STEP_STATE.
STEP_FOLDER_RE = re.compile(r"^step_(\d{8,})$")
# The step's non-tensor state (config, RNG, data position, best, ...), a weights_only torch.save file.
STEP_STATE = "runctl.pt"
DCP_METADATA = ".metadata"

# How many folders below a root runs are looked for (its children are depth 1); `--depth` raises it.
DEFAULT_DEPTH = 4

STATES = ("running", "stalled", "stopped", "interrupted", "crashed", "finished")
# An engine is alive in these states: stalled is running with a step that stopped advancing.
LIVE_STATES = ("running", "stalled")
CHECKPOINT_KINDS = ("periodic", "best", "final", "interrupt")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def step_folder_name(step: int) -> str:
    return f"step_{step:08d}"


def step_from_name(name: str) -> int | None:
    """The step of a checkpoint file (`step_00001000.pt`) or step folder (`step_00001000`)."""
    match = CHECKPOINT_RE.match(name) or STEP_FOLDER_RE.match(name)
    return int(match.group(1)) if match else None


def is_step_folder_name(name: str) -> bool:
    """`step_00001000`, or its temporary name `step_00001000.tmp.<pid>`."""
    return STEP_FOLDER_RE.match(name.split(TEMP_MARKER, 1)[0]) is not None


def is_temp_name(name: str) -> bool:
    return TEMP_MARKER in name


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR


def is_run_dir(path: Path) -> bool:
    """A runctl run directory: has run.yaml or status.json."""
    return (path / RUN_YAML).is_file() or (path / STATUS_JSON).is_file()
