"""A Lightning logger's version folder (`lightning_logs/version_N/`): `checkpoints/*.ckpt` named
`epoch=E-step=S.ckpt` (and `last.ckpt`, often a copy of the newest), `hparams.yaml`, and
`metrics.csv` from the CSVLogger (or TensorBoard events from the TensorBoardLogger)."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

from runctl.runs import safe_files
from runctl.runs.discovery import Detector, Folder
from runctl.runs.layouts import common
from runctl.runs.layouts.aliases import ALIASES
from runctl.runs.layouts.tensorboard import EVENTS_PREFIX
from runctl.runs.model import CheckpointInfo, RunSummary

LAYOUT = "lightning"
HPARAMS = "hparams.yaml"
METRICS_CSV = "metrics.csv"
CHECKPOINTS = "checkpoints"
VERSION_RE = re.compile(r"^version_\d+$")
_TAIL_BYTES = 16 << 10


def recognise(folder: Folder) -> bool:
    if HPARAMS in folder.files:
        return True
    return bool(VERSION_RE.match(folder.path.name)) and (METRICS_CSV in folder.files or CHECKPOINTS in folder.dirs)


def detect(path: Path) -> bool:
    return recognise(Folder.read(Path(path)))


def summarize(run_dir: Path) -> RunSummary:
    summary = common.base_summary(run_dir, LAYOUT)
    files = [f._replace(name=f"{CHECKPOINTS}/{f.name}") for f in common.scan_files(run_dir / CHECKPOINTS)]
    files += common.scan_files(run_dir)
    common.fill_from_stats(summary, files, [run_dir / METRICS_CSV, run_dir / HPARAMS])
    step, loss = last_csv_values(run_dir / METRICS_CSV)
    if step is not None and (summary.step is None or step > summary.step):
        summary.step = step
    summary.last_loss = loss
    return summary


def checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    infos = common.folder_records(run_dir / CHECKPOINTS, level, prefix=f"{CHECKPOINTS}/")
    infos += common.folder_records(run_dir, level)
    common.mark_copies(infos, level)
    for info in infos:
        if info.copy_of is not None and info.step is None:
            info.step = next((o.step for o in infos if o.name == info.copy_of), None)
    return common.order(infos)


def last_csv_values(path: Path) -> tuple[int | None, float | None]:
    """The newest step and train loss in metrics.csv, from its header and its end."""
    try:
        with safe_files.open_regular(path) as file:
            header = file.readline(safe_files.MAX_LINE_BYTES).decode("utf-8", "replace")
            size = file.seek(0, os.SEEK_END)
            file.seek(max(len(header), size - _TAIL_BYTES))
            tail = file.read().decode("utf-8", "replace")
    except OSError:
        return None, None
    columns = next(csv.reader([header]), [])
    if "step" not in columns:
        return None, None
    loss_columns = [columns.index(name) for name in ALIASES["train/loss"] if name in columns]
    step = loss = None
    for row in reversed(list(csv.reader(io.StringIO(tail)))):
        if len(row) != len(columns):
            continue  # cut by the window, or still being written
        if step is None:
            step = parse_int(row[columns.index("step")])
        for index in loss_columns:
            value = parse_float(row[index])
            if value is not None:
                loss = value
                break
        if loss is not None and step is not None:
            break
    return step, loss


def folders(run_dir: Path) -> list[Path]:
    """The version folder and its checkpoints/."""
    return [Path(run_dir), Path(run_dir) / CHECKPOINTS]


def metrics(run_dir: Path) -> object:
    """metrics.csv when the CSVLogger wrote one, else the TensorBoardLogger's events."""
    from runctl.runs.layouts.readers import CsvMetrics, TensorBoardMetrics

    run_dir = Path(run_dir)
    if not (run_dir / METRICS_CSV).exists() and any(p.name.startswith(EVENTS_PREFIX) for p in _files(run_dir)):
        return TensorBoardMetrics(run_dir)
    return CsvMetrics(run_dir / METRICS_CSV)


def _files(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def parse_int(text: str) -> int | None:
    value = parse_float(text)
    return int(value) if value is not None and value.is_integer() else None


def parse_float(text: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)  # nan and inf stay: the plot skips them, as in runctl's metrics
    except ValueError:
        return None


DETECTOR = Detector(name=LAYOUT, detect=detect, summarize=summarize, checkpoints=checkpoints,
                    recognise=recognise, metrics=metrics, folders=folders)
