"""The incremental metrics readers of the foreign layouts, each a runs.layouts.series.SeriesStore
with runs.metrics.MetricsReader's poll()/names()/series() surface. Kept apart from the layouts'
detectors: they need numpy, which a listing never imports."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.layouts import hf_trainer, lightning, tensorboard, textlog
from runctl.runs.layouts.series import SeriesStore


class TextLogMetrics(SeriesStore):
    """Incremental reader of the text logs in one folder: each poll reads the bytes appended since
    the last one (whole lines only); a log that shrank or was replaced is read again from the start."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = Path(folder)
        self._offsets: dict[Path, tuple[int, int]] = {}   # path -> (inode, bytes taken in)
        self.unplaced = 0  # points printed without a step (the Trainer's dicts): not plotted

    def poll(self) -> bool:
        version = self.version
        files = textlog.log_files(self.folder)
        for path in files:
            self._read_new(path)
        return self.version != version

    def _read_new(self, path: Path) -> None:
        try:
            with safe_files.open_regular(path) as file:
                st = os.fstat(file.fileno())
                inode, offset = self._offsets.get(path, (st.st_ino, 0))
                if inode != st.st_ino or st.st_size < offset:
                    self._restart()
                    inode, offset = st.st_ino, 0
                if st.st_size == offset or st.st_size > textlog.MAX_LOG_BYTES:
                    self._offsets[path] = (inode, offset)
                    return
                file.seek(offset)
                chunk = file.read(st.st_size - offset)
        except OSError as exc:
            self.error = f"{path}: unreadable ({exc.strerror or exc.__class__.__name__})"
            return
        self.error = None
        end = chunk.rfind(b"\n")
        if end < 0:
            self._offsets[path] = (inode, offset)
            return
        self._offsets[path] = (inode, offset + end + 1)
        points = []
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            for name, step, value in textlog.parse_line(line):
                if step is None:
                    self.unplaced += 1
                else:
                    points.append((name, step, value))
        self.add(points)

    def _restart(self) -> None:
        self._offsets.clear()
        self.unplaced = 0
        self.reset()


class CsvMetrics(SeriesStore):
    """Incremental reader of the CSVLogger's metrics.csv; a new header (Lightning rewrites the file
    when a metric first appears) or a shorter file means reading it again from the start."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._header: bytes | None = None
        self._columns_names: list[str] = []
        self._offset = 0

    def poll(self) -> bool:
        version = self.version
        try:
            with safe_files.open_regular(self.path) as file:
                header = file.readline(safe_files.MAX_LINE_BYTES)
                size = os.fstat(file.fileno()).st_size
                if header != self._header or size < self._offset:
                    self.reset()
                    self._header = header
                    self._columns_names = next(csv.reader([header.decode("utf-8", "replace")]), [])
                    self._offset = len(header)
                file.seek(self._offset)
                chunk = file.read(size - self._offset)
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.error = f"{self.path}: unreadable ({exc.strerror or exc.__class__.__name__})"
            return False
        self.error = None
        end = chunk.rfind(b"\n")
        if end < 0 or "step" not in self._columns_names:
            return self.version != version
        self._offset += end + 1
        step_index = self._columns_names.index("step")
        points = []
        for row in csv.reader(io.StringIO(chunk[: end + 1].decode("utf-8", "replace"))):
            if len(row) != len(self._columns_names):
                self.malformed += 1
                continue
            step = lightning.parse_int(row[step_index])
            if step is None:
                self.malformed += 1
                continue
            for name, cell in zip(self._columns_names, row, strict=True):
                value = lightning.parse_float(cell) if name != "step" else None
                if value is not None:
                    points.append((name, step, value))
        self.add(points)
        return self.version != version


class TrainerStateMetrics(SeriesStore):
    """log_history of the newest trainer_state.json (loss, eval_loss, learning_rate, grad_norm ...).
    The file is re-read when it changes; entries already taken in are skipped."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self._source: tuple[Path, int, int] | None = None
        self._taken = 0

    def poll(self) -> bool:
        version = self.version
        path, state = hf_trainer.newest_state(self.run_dir)
        if path is None:
            return False
        try:
            st = path.stat()
        except OSError:
            return False
        source = (path, st.st_size, st.st_mtime_ns)
        if source == self._source:
            return False
        history = state.get("log_history") if isinstance(state.get("log_history"), list) else []
        if self._source is None or self._source[0] != path or len(history) < self._taken:
            # Another checkpoint's file: its history repeats the older one's, then goes on.
            self.reset()
            self._taken = 0
        self._source = source
        points = []
        for entry in history[self._taken:]:
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                self.malformed += 1
                continue
            if "train_runtime" in entry:
                continue  # the end-of-training summary: an average, not a point of the curve
            for key, value in entry.items():
                if key not in hf_trainer.NOT_METRICS and isinstance(value, int | float) and not isinstance(value, bool) \
                        and not key.endswith(("_runtime", "_per_second")):
                    points.append((key, entry["step"], float(value)))
        self._taken = len(history)
        self.add(points)
        return self.version != version


class TensorBoardMetrics(SeriesStore):
    """Scalars of every events file in one folder, read incrementally by TensorBoard's own loader
    (it keeps its place in the file between polls)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = Path(folder)
        self._loaders: dict[Path, Any] = {}
        self._loader_class: Any = None
        try:
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
            from tensorboard.util import tensor_util
        except ImportError:
            self.note = tensorboard.INSTALL_NOTE
            return
        self._loader_class = EventFileLoader
        self._make_ndarray = tensor_util.make_ndarray

    def poll(self) -> bool:
        if self._loader_class is None:
            return False
        version = self.version
        for path in tensorboard.event_files(self.folder):
            loader = self._loaders.get(path)
            if loader is None:
                loader = self._loaders[path] = self._loader_class(str(path))
            try:
                self.add(self._scalars(loader.Load()))
            except Exception as exc:  # noqa: BLE001 - a damaged events file is one error line
                self.error = f"{path}: unreadable events ({exc.__class__.__name__})"
        return self.version != version

    def _scalars(self, events: Any) -> list[tuple[str, int, float]]:
        points = []
        for event in events:
            if not event.HasField("summary"):
                continue
            for value in event.summary.value:
                number = self._number(value)
                if number is not None:
                    points.append((value.tag, int(event.step), number))
        return points

    def _number(self, value: Any) -> float | None:
        if value.HasField("simple_value"):
            return float(value.simple_value)
        if value.HasField("tensor") and (not value.HasField("metadata")
                                         or value.metadata.plugin_data.plugin_name in ("scalars", "")):
            try:
                array = self._make_ndarray(value.tensor)
            except Exception:  # noqa: BLE001 - a tensor of a kind this does not plot
                return None
            if array.size == 1 and array.dtype.kind in "fiu":
                return float(array.reshape(()))
        return None
