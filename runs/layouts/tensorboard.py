"""A TensorBoard log folder: `events.out.tfevents.*` files, e.g. torch's SummaryWriter default
`runs/<date>_<host>/`. Listing reads no event (step and loss unknown, the files' age known); the
plot reads the scalars with the `tensorboard` package's event reader, an optional extra
(`pip install 'runctl[tensorboard]'`): without it the reader's note says so."""

from __future__ import annotations

import os
import re
from pathlib import Path

from runctl.runs.discovery import Detector, Folder
from runctl.runs.layouts import common
from runctl.runs.model import CheckpointInfo, RunSummary

LAYOUT = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."
_EVENTS_NAME = re.compile(re.escape(EVENTS_PREFIX))
INSTALL_NOTE = "TensorBoard scalars need the tensorboard package: pip install 'runctl[tensorboard]'"


def recognise(folder: Folder) -> bool:
    return any(map(_EVENTS_NAME.match, folder.files))


def detect(path: Path) -> bool:
    return recognise(Folder.read(Path(path)))


def event_files(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.name.startswith(EVENTS_PREFIX) and e.is_file())
    except OSError:
        return []


def summarize(run_dir: Path) -> RunSummary:
    summary = common.base_summary(run_dir, LAYOUT)
    common.fill_from_stats(summary, common.scan_files(run_dir), event_files(run_dir))
    return summary


def checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    infos = common.folder_records(run_dir, level)
    common.mark_copies(infos, level)
    return common.order(infos)


def metrics(folder: Path) -> object:
    from runctl.runs.layouts.readers import TensorBoardMetrics

    return TensorBoardMetrics(folder)


DETECTOR = Detector(name=LAYOUT, detect=detect, summarize=summarize, checkpoints=checkpoints,
                    recognise=recognise, metrics=metrics)
