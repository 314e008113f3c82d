"""A plain folder of checkpoint files (`.pt`, `.pth`, `.ckpt`, `.bin`, `.safetensors`) that some
script saved: `checkpoints/cnn_deep_mnist/checkpoint_step_01000.pt`, `logs/<uuid>/model_step000256.pt`.
The step comes from the name (or, at verify levels, from the content), the role too (best_model,
final, last, latest); the losses from a text log beside the files."""

from __future__ import annotations

from pathlib import Path

from runctl.runs.discovery import Detector, Folder
from runctl.runs.layouts import common, textlog
from runctl.runs.model import CheckpointInfo, RunSummary

LAYOUT = "plain"


def recognise(folder: Folder) -> bool:
    return common.any_checkpoint_name(folder.files)


def detect(path: Path) -> bool:
    return recognise(Folder.read(Path(path)))


def summarize(run_dir: Path) -> RunSummary:
    summary = common.base_summary(run_dir, LAYOUT)
    common.fill_from_stats(summary, common.scan_files(run_dir), textlog.log_files(run_dir))
    summary.last_loss = textlog.last_train_loss(run_dir)
    return summary


def checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    infos = common.folder_records(run_dir, level)
    common.mark_copies(infos, level)
    return common.order(infos)


DETECTOR = Detector(name=LAYOUT, detect=detect, summarize=summarize, checkpoints=checkpoints,
                    recognise=recognise, metrics=textlog.metrics)
