"""Suite-wide options: `--long` turns on the long fault tier (tests marked `slow`), off by default;
tests marked `gpu` run only where CUDA is available. The suite's verification cache lives in a
temporary XDG_CACHE_HOME (inherited by the CLI subprocesses), never in the user's ~/.cache."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import pytest

# One intra-op torch thread for everything the suite runs: in-process training (the UI's thread
# host, the engine tests) and every process it starts. Tiny models gain nothing from a second
# thread, and on a busy 2-core box OpenMP threads spin against the other workers' processes: the
# built-in digits_mlp in the UI took 175 s and 64 s of CPU so, against 4 s alone. Set before any
# test module imports torch, which reads them once.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="runctl-test-cache-")
# The hang-up tests need SIGHUP's default action in pytest and in every runctl it starts; a suite
# started under `nohup` (or `trap '' HUP`) would pass SIG_IGN down, and runctl honours that on purpose.
signal.signal(signal.SIGHUP, signal.SIG_DFL)


TESTS = Path(__file__).resolve().parent
# How long each module took in a full run (seconds, 3 workers on 2 cores); rewritten by
# `--record-module-seconds`. The suite runs the longest modules first, so that under pytest-xdist
# (`--dist loadscope --no-loadscope-reorder`, a module to a worker) the workers end together
# instead of one starting a long module after the others ran out of work. A module missing from
# the file runs last. Sorting keeps each module's tests together, so a module-scoped fixture is
# built once.
MODULE_SECONDS = TESTS / "module_seconds.json"


def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _module_seconds() -> dict[str, float]:
    try:
        return {str(name): float(seconds) for name, seconds in json.loads(MODULE_SECONDS.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the long tier (tests marked slow, e.g. the 200-kill campaign)")
    parser.addoption("--record-module-seconds", action="store_true", default=False,
                     help=f"write each module's time in this run to {MODULE_SECONDS.name} (run the whole suite)")


_seconds_this_run: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Under xdist the controller gets every worker's reports, so this sees the whole run.
    module = _module_of(report.nodeid)
    _seconds_this_run[module] = _seconds_this_run.get(module, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.getoption("--record-module-seconds") and not hasattr(session.config, "workerinput"):
        ranked = sorted(_seconds_this_run.items(), key=lambda item: -item[1])
        MODULE_SECONDS.write_text(json.dumps({name: round(seconds, 1) for name, seconds in ranked}, indent=1) + "\n")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seconds = _module_seconds()
    items.sort(key=lambda item: -seconds.get(_module_of(item.nodeid), 0.0))
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device") if not _cuda_available(items) else None
    skip_long = None if config.getoption("--long") else pytest.mark.skip(reason="long tier: run with --long")
    for item in items:
        if skip_long and "slow" in item.keywords:
            item.add_marker(skip_long)
        if skip_gpu and "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def _cuda_available(items: list[pytest.Item]) -> bool:
    if not any("gpu" in item.keywords for item in items):
        return False  # nothing needs it: do not import torch for the answer
    import torch

    return torch.cuda.is_available()
