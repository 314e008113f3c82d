"""nanoGPT's out_dir: one `ckpt.pt` that train.py overwrites at each evaluation, holding
`model`, `optimizer`, `model_args`, `iter_num`, `best_val_loss` and `config` (karpathy/nanoGPT
train.py). The listing reads iter_num, best_val_loss and config.max_iters from the zip's data.pkl
statically (runs.pickle_peek); the losses come from the log its output was redirected to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runctl.runs.discovery import Detector, Folder
from runctl.runs.layouts import common, textlog
from runctl.runs.model import CheckpointInfo, RunSummary
from runctl.runs.pickle_peek import peek_checkpoint

LAYOUT = "nanogpt"
CKPT = "ckpt.pt"
# Larger than any loss: train.py's best_val_loss before the first evaluation.
_NO_EVAL = 1e8


def recognise(folder: Folder) -> bool:
    return CKPT in folder.files


def detect(path: Path) -> bool:
    return (Path(path) / CKPT).is_file()


def read_ckpt(run_dir: Path) -> dict[str, Any]:
    return peek_checkpoint(run_dir / CKPT, ("iter_num", "best_val_loss", "model_args", "config"))


def summarize(run_dir: Path) -> RunSummary:
    summary = common.base_summary(run_dir, LAYOUT)
    values = read_ckpt(run_dir)
    iter_num = values.get("iter_num")
    config = values.get("config") if isinstance(values.get("config"), dict) else {}
    max_iters = config.get("max_iters")
    summary.step = iter_num if isinstance(iter_num, int) else None
    summary.max_steps = max_iters if isinstance(max_iters, int) else None
    best = values.get("best_val_loss")
    if isinstance(best, int | float) and not isinstance(best, bool) and best < _NO_EVAL:
        summary.best = {"metric": "val/loss", "value": float(best), "step": None}
    finished = summary.step is not None and summary.max_steps is not None and summary.step >= summary.max_steps
    common.fill_from_stats(summary, common.scan_files(run_dir), textlog.log_files(run_dir), finished=finished)
    summary.last_loss = textlog.last_train_loss(run_dir)
    if not values:
        summary.problems.append(f"{CKPT}: iter_num and config not readable without loading it")
    return summary


def checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    infos = common.folder_records(run_dir, level)
    for info in infos:
        if info.name == CKPT:
            iter_num = read_ckpt(run_dir).get("iter_num")
            info.step = iter_num if isinstance(iter_num, int) else info.step
    common.mark_copies(infos, level)
    return common.order(infos)


DETECTOR = Detector(name=LAYOUT, detect=detect, summarize=summarize, checkpoints=checkpoints,
                    recognise=recognise, metrics=textlog.metrics)
