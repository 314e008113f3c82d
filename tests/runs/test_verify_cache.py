"""The verification cache gives back what was stored, the values JSON has no literal for included
(a diverged run's NaN loss, an infinity, an integer past 64 bits)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from runctl.runs import verify_cache


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_facts_come_back_as_stored(cache_home: Path) -> None:
    key = ("/runs/a/ckpt.pt", 123, 456, 789)
    facts = {"level": "peek", "top": {"iter_num": 2000, "config": {"lr": 6e-4, "name": "gpt"}}}
    verify_cache.store(key, "peek", facts)
    assert verify_cache.load(key, "peek") == facts
    assert verify_cache.load(key, "full") is None
    assert verify_cache.load(("/runs/a/ckpt.pt", 124, 456, 789), "peek") is None
    assert (cache_home / "runctl").is_dir()


def test_nan_infinity_and_big_integers_come_back(cache_home: Path) -> None:
    key = ("/runs/b/ckpt.pt", 1, 2, 3)
    verify_cache.store(key, "peek", {"level": "peek", "top": {"best_val_loss": math.nan, "lr": math.inf,
                                                             "seed": 2**70}})
    top = verify_cache.load(key, "peek")["top"]
    assert math.isnan(top["best_val_loss"]) and top["lr"] == math.inf and top["seed"] == 2**70
