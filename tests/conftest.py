"""Suite-wide options: `--long` turns on the long fault tier (tests marked `slow`), off by default;
tests marked `gpu` run only where CUDA is available. The suite's verification cache lives in a
temporary XDG_CACHE_HOME (inherited by the CLI subprocesses), never in the user's ~/.cache."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
from support.torch_threads import one_torch_thread  # noqa: F401  (a fixture, for every test folder)

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="runctl-test-cache-")
# The hang-up tests need SIGHUP's default action in pytest and in every runctl it starts; a suite
# started under `nohup` (or `trap '' HUP`) would pass SIG_IGN down, and runctl honours that on purpose.
signal.signal(signal.SIGHUP, signal.SIG_DFL)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the long tier (tests marked slow, e.g. the 200-kill campaign)")


# The folders in the order the suite runs them: the ones whose tests train in subprocesses, signal
# them and wait on terminals first, the quick in-process ones last, so that under pytest-xdist the
# workers end together instead of one finishing a long test after the others ran out of work.
# (Sorting keeps each module's tests together, so a module-scoped fixture is built once per worker.)
FOLDER_ORDER = ("e2e", "faults", "engine", "tui", "foreign", "runs")


TESTS = Path(__file__).resolve().parent


def _folder_rank(item: pytest.Item) -> int:
    folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
    return FOLDER_ORDER.index(folder) if folder in FOLDER_ORDER else len(FOLDER_ORDER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_folder_rank)
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
