"""engine.schedule: warmup, cosine/constant, and extensions that never re-warm."""

from __future__ import annotations

import math

import pytest
from runctl.engine.config import load_config, validate_config
from runctl.engine.schedule import Schedule, extend_config, extension_preview


def config(name: str = "cosine", lr: float = 1.0e-3, warmup: int = 100, max_steps: int = 1000,
           ratio: float = 0.1) -> dict:
    return load_config("digits_mlp", [f"optim.lr={lr}", f"schedule.name={name}",
                                      f"schedule.warmup_steps={warmup}", f"max_steps={max_steps}",
                                      f"schedule.min_lr_ratio={ratio}"])


def test_warmup_is_linear_and_reaches_the_peak() -> None:
    sched = Schedule.from_config(config())
    assert sched.lr(0) == pytest.approx(1e-5)  # the first update already moves
    assert sched.lr(49) == pytest.approx(5e-4)
    assert sched.lr(99) == pytest.approx(1e-3)  # update number 100 is at the peak
    assert sched.lr(100) == pytest.approx(1e-3)  # cosine starts at the peak
    steps = [sched.lr(s) for s in range(100)]
    assert steps == sorted(steps)


def test_cosine_reaches_the_minimum_at_max_steps() -> None:
    sched = Schedule.from_config(config())
    assert sched.lr(550) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # half-way
    assert sched.lr(1000) == pytest.approx(1e-4)
    assert sched.lr(5000) == pytest.approx(1e-4)
    decay = [sched.lr(s) for s in range(100, 1001)]
    assert decay == sorted(decay, reverse=True)


def test_constant_schedule() -> None:
    sched = Schedule.from_config(config("constant"))
    assert sched.lr(99) == pytest.approx(1e-3)
    assert {sched.lr(s) for s in range(100, 1000, 50)} == {1e-3}


def test_no_warmup() -> None:
    sched = Schedule.from_config(config(warmup=0))
    assert sched.lr(0) == pytest.approx(1e-3)


def test_warmup_longer_than_the_run_still_ramps() -> None:
    sched = Schedule.from_config(config(warmup=100, max_steps=10))
    assert sched.lr(9) == pytest.approx(1e-4)


def test_extension_is_continuous_and_never_rewarms() -> None:
    cfg = config()
    before = Schedule.from_config(cfg)
    extended_cfg = extend_config(cfg, at_step=600, new_max_steps=3000)
    after = Schedule.from_config(extended_cfg)
    assert extended_cfg["max_steps"] == 3000 and cfg["max_steps"] == 1000
    for step in range(600):  # history is unchanged
        assert after.lr(step) == before.lr(step)
    assert after.lr(600) == pytest.approx(before.lr(600))  # continuous at the seam
    tail = [after.lr(s) for s in range(600, 3001)]
    assert tail == sorted(tail, reverse=True)  # no re-warmup: only decays from here
    assert after.lr(3000) == pytest.approx(1e-4)
    assert after.lr(2999) > 1e-4
    # the decay is stretched over the new horizon, so it is slower than the old one
    assert after.lr(900) > before.lr(900)


def test_extension_of_a_constant_run_decays_from_the_peak() -> None:
    # seed 002: 1k steps at constant LR, then extend to 10k with cosine decay to 10% of peak
    after = Schedule.from_config(extend_config(config("constant", max_steps=1000), 1000, 10000))
    assert after.lr(999) == pytest.approx(1e-3)
    assert after.lr(1000) == pytest.approx(1e-3)
    assert after.lr(5500) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert after.lr(10000) == pytest.approx(1e-4)


def test_extending_a_finished_cosine_run_stays_at_the_minimum() -> None:
    after = Schedule.from_config(extend_config(config(), 1000, 2000))
    assert {round(after.lr(s), 12) for s in range(1000, 2001, 100)} == {1e-4}


def test_several_extensions() -> None:
    cfg = config(max_steps=1000)
    cfg = extend_config(cfg, 400, 1500)
    cfg = extend_config(cfg, 900, 2500)
    cfg = extend_config(cfg, 2500, 3000)  # a finished run extended again
    cfg = validate_config(cfg, "run.yaml")  # and it survives run.yaml validation
    sched = Schedule.from_config(cfg)
    assert sched.end_step == 3000
    first = Schedule.from_config(extend_config(config(max_steps=1000), 400, 1500))
    assert sched.lr(899) == pytest.approx(first.lr(899))
    for seam in (400, 900, 2500):
        assert sched.lr(seam) == pytest.approx(sched.lr(seam - 1), rel=0.01)
    tail = [sched.lr(s) for s in range(400, 3001)]
    assert all(b <= a + 1e-15 for a, b in zip(tail, tail[1:], strict=False))
    assert sched.lr(2500) == pytest.approx(1e-4)


def test_extension_during_warmup_finishes_the_warmup_once() -> None:
    base = Schedule.from_config(config())
    sched = Schedule.from_config(extend_config(config(), 50, 2000))
    assert [sched.lr(s) for s in range(100)] == [base.lr(s) for s in range(100)]  # the same ramp
    assert sched.lr(100) == pytest.approx(1e-3)
    tail = [sched.lr(s) for s in range(100, 2001)]
    assert tail == sorted(tail, reverse=True)  # one warmup, then decay to the new end
    assert sched.lr(2000) == pytest.approx(1e-4)


def test_entry_without_from_max_steps_assumes_a_finished_run() -> None:
    cfg = dict(config(max_steps=2000), extensions=[{"at_step": 1000, "max_steps": 2000}])
    sched = Schedule.from_config(cfg)
    assert sched.max_steps == 1000
    assert sched.lr(1000) == pytest.approx(1e-4)


def test_extend_config_refuses_an_end_not_in_the_future() -> None:
    with pytest.raises(ValueError, match="current step"):
        extend_config(config(), 800, 800)
    with pytest.raises(ValueError, match="max_steps"):
        extend_config(config(), 500, 900)


def test_extension_preview_gives_both_curves() -> None:
    old, new = extension_preview(config(), 600, 2000)
    assert len(old) == 1000 and len(new) == 2000
    assert old[:600] == new[:600]
    assert new[600] == pytest.approx(old[600])
    assert math.isclose(new[-1], 1e-4, rel_tol=0.01) and new[-1] < new[-2]
