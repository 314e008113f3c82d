"""System stats for the machine the UI runs on: CPU and RAM (psutil), GPUs via NVML when present.

NVML (nvidia-ml-py) is optional: it is imported lazily and any failure (not installed, no driver,
no GPU) just leaves the GPU lines out. In a headless app (tests, snapshots) the widget shows a
placeholder instead of live numbers, so screenshots do not depend on the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psutil
from textual.widgets import Static

REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    memory_used: int
    memory_total: int
    utilization: int  # percent


@dataclass(frozen=True)
class SystemSample:
    cpu_percent: float
    cpu_count: int
    ram_used: int
    ram_total: int
    process_rss: int
    gpus: tuple[GpuSample, ...] = field(default=())


class _Nvml:
    """A lazily initialised NVML handle; `available` is False when there is no usable GPU."""

    def __init__(self) -> None:
        self._module: Any = None
        self.available = False
        try:
            import pynvml  # nvidia-ml-py, an optional extra
            pynvml.nvmlInit()
            self.available = pynvml.nvmlDeviceGetCount() > 0
            self._module = pynvml
        except Exception:  # noqa: BLE001 - no package, no driver, no device: all mean "no GPU stats"
            self.available = False

    def sample(self) -> tuple[GpuSample, ...]:
        if not self.available:
            return ()
        nvml = self._module
        gpus = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                usage = nvml.nvmlDeviceGetUtilizationRates(handle)
                gpus.append(GpuSample(index, name.decode() if isinstance(name, bytes) else str(name),
                                      int(memory.used), int(memory.total), int(usage.gpu)))
        except Exception:  # noqa: BLE001 - a GPU that vanished or a driver hiccup: stop asking
            self.available = False
            return ()
        return tuple(gpus)


def sample_system(nvml: _Nvml | None = None) -> SystemSample:
    memory = psutil.virtual_memory()
    return SystemSample(
        cpu_percent=psutil.cpu_percent(interval=None),
        cpu_count=psutil.cpu_count() or os.cpu_count() or 1,
        ram_used=int(memory.total - memory.available),
        ram_total=int(memory.total),
        process_rss=int(psutil.Process().memory_info().rss),
        gpus=nvml.sample() if nvml is not None else (),
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def format_sample(sample: SystemSample) -> str:
    lines = [
        f"CPU  {_bar(sample.cpu_percent / 100)} {sample.cpu_percent:5.1f}% of {sample.cpu_count} cores",
        f"RAM  {_bar(sample.ram_used / max(1, sample.ram_total))} {_gib(sample.ram_used)} / {_gib(sample.ram_total)}",
        f"runctl process RSS: {_gib(sample.process_rss)}",
    ]
    if not sample.gpus:
        lines.append("GPU  none visible (NVML not installed or no device)")
    for gpu in sample.gpus:
        lines.append(f"GPU{gpu.index} {gpu.name}")
        lines.append(f"     util {_bar(gpu.utilization / 100)} {gpu.utilization:3d}%")
        lines.append(f"     mem  {_bar(gpu.memory_used / max(1, gpu.memory_total))} "
                     f"{_gib(gpu.memory_used)} / {_gib(gpu.memory_total)}")
    return "\n".join(lines)


class SystemStats(Static):
    """Refreshes every REFRESH_SECONDS while mounted; a fixed placeholder in headless apps."""

    PLACEHOLDER = "System stats are not sampled in headless mode."

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self._nvml: _Nvml | None = None

    def on_mount(self) -> None:
        if self.app.is_headless:
            self.update(self.PLACEHOLDER)
            return
        self._nvml = _Nvml()
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline
        self.update("sampling…")
        self.set_interval(REFRESH_SECONDS, self._refresh_sample)

    def _refresh_sample(self) -> None:
        # Sampled only while its tab shows it; the number of lines is fixed once sampling
        # starts, so an update repaints this widget without a layout pass of the whole screen.
        if not self.is_on_screen:
            return
        text = format_sample(sample_system(self._nvml))
        self.update(text, layout=text.count("\n") != str(self.content).count("\n"))
