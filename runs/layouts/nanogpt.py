"""nanoGPT's out_dir: one `ckpt.pt` that train.py overwrites at each evaluation, holding
`model`, `optimizer`, `model_args`, `iter_num`, `best_val_loss` and `config` (karpathy/nanoGPT
train.py). The listing reads iter_num, best_val_loss and config (max_iters, eval_interval,
always_save_checkpoint) from the zip's data.pkl statically (runs.pickle_peek); the losses, and how
far the run has got between two evaluations, come from the log its output was redirected to.
max_iters is the run's last step; the last evaluation up to it is the last step ckpt.pt can hold."""

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
    config = values.get("config") if isinstance(values.get("config"), dict) else {}
    iter_num, max_iters = _int(values.get("iter_num")), _int(config.get("max_iters"))
    final_save = final_saved_step(max_iters, _int(config.get("eval_interval")))
    # The log (train.py's stdout) goes on between evaluations; ckpt.pt is written at them only.
    log_step, summary.last_loss = textlog.tail_progress(run_dir)
    known = [step for step in (iter_num, log_step) if step is not None]
    summary.step = max(known) if known else None
    summary.max_steps = max_iters
    best = values.get("best_val_loss")
    if isinstance(best, int | float) and not isinstance(best, bool) and best < _NO_EVAL:
        summary.best = {"metric": "val/loss", "value": float(best), "step": None}
    if log_step is not None:
        finished = max_iters is not None and log_step >= max_iters
    else:
        finished = iter_num is not None and final_save is not None and iter_num >= final_save
    common.fill_from_stats(summary, common.scan_files(run_dir), textlog.log_files(run_dir), finished=finished)
    if final_save is not None and config.get("always_save_checkpoint") is True:
        summary.checkpoints_expected = 1
        if finished and iter_num is not None and iter_num < final_save:
            summary.missing_steps = [final_save]
            summary.problems.append(f"{CKPT} holds iter {iter_num}, not the last evaluation's {final_save} "
                                    "(always_save_checkpoint)")
    if not values:
        summary.problems.append(f"{CKPT}: iter_num and config not readable without loading it")
    return summary


def final_saved_step(max_iters: int | None, eval_interval: int | None) -> int | None:
    """The last iteration train.py evaluates at, and so the last it can save ckpt.pt at: the last
    multiple of eval_interval up to max_iters (the loop runs iterations 0 to max_iters; it
    evaluates, and saves, before the step of every iter_num % eval_interval == 0 past 0)."""
    if not max_iters or not eval_interval or max_iters <= 0 or eval_interval <= 0 or max_iters < eval_interval:
        return None
    return max_iters - max_iters % eval_interval


def checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    infos = common.folder_records(run_dir, level)
    for info in infos:
        if info.name == CKPT:
            iter_num = read_ckpt(run_dir).get("iter_num")
            info.step = iter_num if isinstance(iter_num, int) else info.step
    common.mark_copies(infos, level)
    return common.order(infos)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


DETECTOR = Detector(name=LAYOUT, detect=detect, summarize=summarize, checkpoints=checkpoints,
                    recognise=recognise, metrics=textlog.metrics)
