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
    checkpoint_dir = run_dir / CHECKPOINTS
    saved = common.scan_files(checkpoint_dir)
    top = common.scan_files(run_dir)
    steps = last_steps(checkpoint_dir, saved)
    copies = last_copies(saved, steps)
    # A symlinked last.ckpt takes no room; a byte copy does, so it counts in the size, not the count.
    linked = {name for name in copies if os.path.islink(checkpoint_dir / name)}
    files = [f._replace(name=f"{CHECKPOINTS}/{f.name}") for f in saved if f.name not in linked] + top
    count = sum(1 for f in saved + top if not f.temp) - len(copies)
    common.fill_from_stats(summary, files, [run_dir / METRICS_CSV, run_dir / HPARAMS], count=count)
    csv_step, loss = last_csv_values(run_dir / METRICS_CSV)
    known = [step for step in (summary.step, csv_step, *steps.values()) if step is not None]
    summary.step = max(known) if known else None
    summary.last_loss = loss
    return summary


def checkpoints(run_dir: Path, level: str | None) -> list[CheckpointInfo]:
    infos = common.folder_records(run_dir / CHECKPOINTS, level, prefix=f"{CHECKPOINTS}/")
    infos += common.folder_records(run_dir, level)
    common.mark_copies(infos, level)
    for info in infos:
        if info.copy_of is not None and info.step is None:
            info.step = next((o.step for o in infos if o.name == info.copy_of), None)
        elif info.kind == "last" and info.step is None and info.status not in ("partial", "corrupt"):
            info.step = common.step_from_content(info.path)
    return common.order(infos)


def last_steps(folder: Path, files: list[common.FileStat]) -> dict[str, int | None]:
    """The step each `last.ckpt`-like file of checkpoints/ holds: that of the file it links to
    (save_last="link"), else its global_step read statically (runs.pickle_peek, nothing unpickled)."""
    named = {f.name: step for f in files if (step := common.step_from_name(f.name)) is not None}
    steps: dict[str, int | None] = {}
    for f in files:
        if f.temp or common.role_from_name(f.name) != "last" or f.name in named:
            continue
        path = folder / f.name
        target = os.path.realpath(path) if os.path.islink(path) else None  # a link's target only
        if target is not None and os.path.dirname(target) == os.path.realpath(folder) \
                and os.path.basename(target) in named:
            steps[f.name] = named[os.path.basename(target)]
        else:
            steps[f.name] = common.step_from_content(path)
    return steps


def last_copies(files: list[common.FileStat], steps: dict[str, int | None]) -> set[str]:
    """The `last` files holding a step an `epoch=E-step=S` file holds too: ModelCheckpoint(
    save_last=True) saves the newest state again under that name (a copy, or a symlink with
    save_last="link"), so it is that checkpoint once more, not one of its own. A `last` whose step
    no other file has (the newest one rotated out by save_top_k) is a checkpoint of its own."""
    named = {step for f in files if not f.temp and (step := common.step_from_name(f.name)) is not None}
    return {name for name, step in steps.items() if step is not None and step in named}


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
