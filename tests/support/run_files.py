"""Reading a run folder as docs/ARCHITECTURE.md's "Files the engine writes" describes it: the
append-only logs, status.json, the manifest, the checkpoints, and `verify --json` documents.
Nothing here imports the engine or torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEMP_MARKER = ".tmp."


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity: `--json` promises one (standard) JSON document."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of an append-only log: its complete, parseable lines. A torn line (the last one
    while it is being written, or one a kill cut short) is not a record."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


def events(run_dir: Path, name: str | None = None) -> list[dict[str, Any]]:
    """events.jsonl's records, or only those of the event `name`."""
    found = read_jsonl(run_dir / "events.jsonl")
    return [e for e in found if name is None or e.get("event") == name]


def status(run_dir: Path) -> dict[str, Any]:
    """status.json; {} while it does not exist yet."""
    try:
        return json.loads((run_dir / "status.json").read_text())
    except FileNotFoundError:
        return {}


def run_state(run_dir: Path) -> str | None:
    """The state status.json reports; None before it exists."""
    return status(run_dir).get("state")


def status_step(run_dir: Path) -> int:
    """The step status.json reports (rewritten on every state change, and at least every 5 s)."""
    return int(status(run_dir).get("step") or 0)


def manifest(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    except FileNotFoundError:
        return {"files": {}}


def manifest_files(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's entries by file name."""
    return manifest(run_dir)["files"]


def assert_saved_at_interrupted_step(run_dir: Path, step: int) -> None:
    """An interrupt checkpoint at `step`, unless that step was already saved (a `best` after an
    evaluation, a periodic save): the engine does not write the same step twice."""
    entry = manifest(run_dir)["files"].get(f"step_{step:08d}.pt")
    saved_before = [e for e in events(run_dir, "checkpoint") if e.get("step") == step and e.get("kind") != "interrupt"]
    assert entry and (entry["kind"] == "interrupt" or saved_before), \
        f"no checkpoint at the interrupted step {step}: {manifest(run_dir)}"


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Checkpoints under their final names (step_XXXXXXXX.pt), oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("step_") and p.name.endswith(".pt"))


def temp_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if TEMP_MARKER in p.name)


def temp_pid(path: Path) -> int | None:
    tail = path.name.rsplit(TEMP_MARKER, 1)[-1]
    return int(tail) if tail.isdigit() else None


def find_run_dir(root: Path) -> Path | None:
    """The single run directory under `root` (one with run.yaml), or None while there is none."""
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and (p / "run.yaml").is_file()]
    if len(runs) > 1:
        raise AssertionError(f"expected one run under {root}, found {sorted(p.name for p in runs)}")
    return runs[0] if runs else None


def metrics_step(run_dir: Path) -> int:
    """The highest step with a complete train line in metrics.jsonl (0 before the first)."""
    steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")
             if isinstance(m.get("step"), int) and "train/loss" in m]
    return max(steps, default=0)


def one_curve(run_dir: Path, key: str = "train/loss") -> list[tuple[int, float]]:
    """`key` as one curve, read per the contract: metrics.jsonl plus the `resumed` events.

    A resumed event at step k means the killed attempt's points after step k are void (the steps
    are run again). Points are assigned to attempts by time: a point older than a resumed event
    belongs to an attempt before it. Fails on a step that is still duplicated after that.
    """
    resumes = sorted((e["time"], e["step"]) for e in events(run_dir, "resumed"))
    points = [(m["time"], m["step"], m[key]) for m in read_jsonl(run_dir / "metrics.jsonl")
              if key in m and isinstance(m.get("step"), int)]
    kept = []
    for when, step, value in points:
        voided = any(when < resumed_at and step > resumed_step for resumed_at, resumed_step in resumes)
        if not voided:
            kept.append((step, value))
    steps = [s for s, _ in kept]
    duplicated = sorted({s for s in steps if steps.count(s) > 1})
    assert not duplicated, f"{run_dir}/metrics.jsonl: steps {duplicated[:10]} appear twice after resume"
    return sorted(kept)


def checkpoint_records(document: Any) -> list[dict[str, Any]]:
    """Every per-checkpoint record in a `verify --json` document, whatever its nesting.

    A record is a dict with "name" and "status" (runs.model.CheckpointInfo); `verify` of a root
    nests them under runs, of a run lists them, of a file is one.
    """
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "status" in node and "name" in node and "path" in node:
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return found


def records_by_name(document: Any) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in checkpoint_records(document)}
