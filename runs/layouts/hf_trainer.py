"""A Hugging Face Trainer output_dir: `checkpoint-N/` folders, each with trainer_state.json
(global_step, max_steps, save_steps, log_history), the weights (`model.safetensors` or
`pytorch_model.bin`, sharded or not), `optimizer.pt`, `scheduler.pt`, `rng_state*.pth` and
`training_args.bin`; the final model and trainer_state.json at the top once training ended.
A `tmp-checkpoint-N/` is a save in progress."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson
from runctl.runs import safe_files
from runctl.runs.discovery import Detector, Folder
from runctl.runs.layouts import common
from runctl.runs.model import CheckpointInfo, RunSummary

LAYOUT = "hf-trainer"
STATE = "trainer_state.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TEMP_RE = re.compile(r"^tmp-checkpoint-(\d+)$")
# log_history keys that are metrics (the rest: step, epoch, runtimes, counts)
NOT_METRICS = frozenset({"step", "epoch", "total_flos", "num_input_tokens_seen"})


def recognise(folder: Folder) -> bool:
    if STATE in folder.files:
        return True
    return any(CHECKPOINT_RE.match(name) and os.path.isfile(os.path.join(entry.path, STATE))
               for name, entry in folder.dirs.items())


def detect(path: Path) -> bool:
    return recognise(Folder.read(Path(path)))


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, in progress) for every checkpoint-N/ and tmp-checkpoint-N/, oldest first."""
    found = []
    try:
        with os.scandir(run_dir) as it:
            for entry in it:
                match = CHECKPOINT_RE.match(entry.name) or TEMP_RE.match(entry.name)
                if match and entry.is_dir():
                    found.append((int(match.group(1)), Path(entry.path), entry.name.startswith("tmp-")))
    except OSError:
        return []
    return sorted(found)


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = orjson.loads(safe_files.read_bytes(path, limit=64 * 2**20))
    except (OSError, orjson.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def newest_state(run_dir: Path, dirs: list[tuple[int, Path, bool]] | None = None,
                 ) -> tuple[Path | None, dict[str, Any]]:
    """The trainer_state.json with the highest global_step: the top one (written at the end) or
    the newest checkpoint's (`dirs`: checkpoint_dirs(run_dir) when the caller has it already)."""
    dirs = checkpoint_dirs(run_dir) if dirs is None else dirs
    candidates = [run_dir / STATE] + [folder / STATE for _, folder, temp in reversed(dirs) if not temp][:1]
    best: tuple[Path | None, dict[str, Any]] = (None, {})
    for path in candidates:
        state = read_state(path)
        step = state.get("global_step")
        if isinstance(step, int) and (best[0] is None or step > best[1].get("global_step", -1)):
            best = (path, state)
    return best


def summarize(run_dir: Path) -> RunSummary:
    summary = common.base_summary(run_dir, LAYOUT)
    dirs = checkpoint_dirs(run_dir)
    path, state = newest_state(run_dir, dirs)
    summary.step = _int(state.get("global_step"))
    summary.max_steps = _int(state.get("max_steps"))
    best = state.get("best_metric")
    if isinstance(best, int | float) and not isinstance(best, bool):
        match = re.search(r"checkpoint-(\d+)$", str(state.get("best_model_checkpoint") or ""))
        summary.best = {"metric": "best_metric", "value": float(best), "step": int(match.group(1)) if match else None}
    history = state.get("log_history") if isinstance(state.get("log_history"), list) else []
    summary.last_loss = next((float(e["loss"]) for e in reversed(history) if isinstance(e, dict)
                              and isinstance(e.get("loss"), int | float)), None)
    finished = summary.step is not None and summary.max_steps is not None and summary.step >= summary.max_steps > 0
    files: list[common.FileStat] = []
    saved: set[int] = set()  # a checkpoint is a checkpoint-N/ folder (or the final model at the top)
    for step, folder, temp in dirs:
        found = common.scan_files(folder)
        files += [f._replace(name=f"{folder.name}/{f.name}", temp=f.temp or temp) for f in found]
        if found and not temp:
            saved.add(step)
    top = common.scan_files(run_dir)
    files += top
    final = any(not f.temp for f in top)
    common.fill_from_stats(summary, files, [path] if path else [], finished=finished, count=len(saved) + final)
    expected = expected_steps(_int(state.get("save_steps")), summary.max_steps, summary.step)
    if expected:
        summary.checkpoints_expected, summary.missing_steps = expected_and_missing(expected, saved)
    if path is None:
        summary.problems.append(f"{STATE}: none readable")
    return summary


def expected_steps(save_steps: int | None, max_steps: int | None, global_step: int | None) -> list[int]:
    """The checkpoint-N/ steps the Trainer saves by now: every save_steps, and the last step once
    training reached max_steps (DefaultFlowCallback saves at the end under the steps strategy)."""
    if not save_steps or save_steps <= 0 or not max_steps or global_step is None:
        return []
    steps = list(range(save_steps, min(global_step, max_steps) + 1, save_steps))
    if global_step >= max_steps and max_steps not in steps:
        steps.append(max_steps)
    return steps


def expected_and_missing(expected: list[int], present: set[int]) -> tuple[int, list[int]]:
    """(how many checkpoints should be there, the steps that are not). save_total_limit (kept only
    in the pickled training_args.bin, which is never loaded) deletes the oldest ones: when exactly
    the newest are present, the older ones count as rotated out, not missing."""
    kept = [step for step in expected if step in present]
    if kept and kept == expected[len(expected) - len(kept):]:
        return len(kept), []
    return len(expected), [step for step in expected if step not in present]


def checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    """One record per file of every checkpoint-N/ (named checkpoint-N/file, step N), then the
    final model's files at the top (step: the top trainer_state.json's global_step)."""
    infos: list[CheckpointInfo] = []
    for step, folder, _ in checkpoint_dirs(run_dir):
        for info in common.folder_records(folder, level, prefix=f"{folder.name}/"):
            info.step, info.kind = step, None
            if common.is_temp(folder.name):
                info.status, info.reason = "partial", "being written (temporary folder)"
            infos.append(info)
    final = common.folder_records(run_dir, level)
    if final:
        top_step = _int(read_state(run_dir / STATE).get("global_step"))
        for info in final:
            info.step, info.kind = top_step, "final"
        infos += final
    return common.order(infos)


def folders(run_dir: Path) -> list[Path]:
    """The output_dir and each checkpoint-N/ (and tmp-checkpoint-N/) in it."""
    return [Path(run_dir)] + [folder for _, folder, _ in checkpoint_dirs(run_dir)]


def metrics(run_dir: Path) -> object:
    from runctl.runs.layouts.readers import TrainerStateMetrics

    return TrainerStateMetrics(run_dir)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


DETECTOR = Detector(name=LAYOUT, detect=detect, summarize=summarize, checkpoints=checkpoints,
                    recognise=recognise, metrics=metrics, folders=folders)
