"""One intra-op torch thread for tests that train in this process.

Tiny models on a busy 2-core box: one thread is many times faster than two that spin against other
processes (the subprocesses get OMP_NUM_THREADS=1 likewise, support.cli.cli_env). A test module
takes it for every test with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`; the
fixture is registered suite-wide by tests/conftest.py. torch is imported only when it is used."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    with single_torch_thread():
        yield
