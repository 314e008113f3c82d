"""Suite-wide options: `--long` turns on the long fault tier (tests marked `slow`), off by default."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the long tier (tests marked slow, e.g. the 200-kill campaign)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip_long = pytest.mark.skip(reason="long tier: run with --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_long)
