"""runs.run_yaml: the listing's own reader of run.yaml agrees with PyYAML's SafeLoader, value for
value, on whatever it accepts, and leaves everything else to PyYAML."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from runctl.runs import run_yaml

# Plain scalars whose YAML 1.1 meaning is easy to get wrong: bools, nulls, octal and sexagesimal
# ints, floats without a dot or an exponent sign (strings), dates, comments, flow indicators.
TRICKY = [
    "yes", "No", "ON", "off", "y", "n", "true", "False", "null", "Null", "~", "", "nan", ".nan", "inf",
    ".inf", "-.inf", "0", "-0", "+0", "00", "010", "0x1F", "0b11", "1_000", "1:30", "+5", "-7", "42",
    "1.", "1.5", "-2.25", "01.5", ".5", "1e-05", "1.0e-05", "1.5e3", "1.5e+3", "1795317183.5571723",
    "2026-11-22", "2026-11-22 03:12:57", "digits_mlp", "run-0001", "val/loss", "a.b", "my run",
    "a: b", "a #b", "a#b", "é", "'quoted'", "'it''s'", '"double"', '"esc\\tape"', "[]", "[1, 2]",
    "[a, yes, 1.5]", "[a,]", "[a, , b]", "{}", "{every: 10}", "{every: 10, keep_last: null}",
    "{on: 1}", "{a: {b: 1}}", "{a: 1,}", "{a:1}", "{a: 'x'}", "{a: b c}", "- x", "&anchor x", "!!str 1",
    "|", ">", "*alias", "@at", "`tick", "%pct", "?q", "=", "<<",
]


def _check(tmp_path: Path, text: str) -> None:
    """Whatever the listing's reader accepts, PyYAML reads the same; and where the whole file is
    valid YAML, the listing gives the full parse's values of its keys."""
    snippet = run_yaml._top_level_entries(text, run_yaml._LISTING_KEYS)
    simple = run_yaml._simple_mapping(snippet) if snippet else None
    if simple is not None:
        assert simple == yaml.load(snippet, Loader=yaml.SafeLoader), snippet  # noqa: S506 - a safe loader
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "run.yaml").write_text(text)
    run_yaml._run_yaml_cache.clear()
    listed, listed_problem = run_yaml.run_yaml_for_listing(run)
    full, problem = run_yaml.read_run_yaml(run)
    if problem is None:
        assert listed_problem is None, text
        assert listed == {k: v for k, v in full.items() if k in run_yaml._LISTING_KEYS}, text


@pytest.mark.parametrize("token", TRICKY)
def test_each_tricky_value_reads_as_pyyaml_reads_it(tmp_path: Path, token: str) -> None:
    _check(tmp_path, f"task: digits_mlp\nname: {token}\nmax_steps: 10\ncheckpoint: {token}\n")
    _check(tmp_path, f"name: x\ncheckpoint: {{every: {token}}}\nextensions: [{token}]\n")


def test_random_run_yaml_files_read_as_pyyaml_reads_them(tmp_path: Path) -> None:
    rng = random.Random(0)
    keys = sorted(run_yaml._LISTING_KEYS) + ["task", "seed", "model"]
    for _ in range(500):
        lines = []
        for key in rng.sample(keys, rng.randint(1, 3)):
            kind = rng.random()
            if kind < 0.4:
                lines.append(f"{key}: {rng.choice(TRICKY)}")
            elif kind < 0.6:
                inner = ", ".join(f"{k}: {rng.choice(TRICKY)}" for k in rng.sample(["every", "keep_last", "on"], 2))
                lines.append(f"{key}: {{{inner}}}")
            elif kind < 0.7:
                lines.append(f"{key}: [{', '.join(rng.choice(TRICKY) for _ in range(rng.randint(0, 3)))}]")
            else:  # as the engine writes it
                value = rng.choice([None, True, 3, -2, 1.5e-05, 1e20, 0.1, "yes", "run 1", "1.0", "null", "",
                                    {"every": 10, "keep_last": None}, [], [1, 2], [{"at_step": 5}],
                                    {"run_id": "p0", "checkpoint": "step_00000010.pt"}])
                lines.append(yaml.safe_dump({key: value}, default_flow_style=None).rstrip("\n"))
        _check(tmp_path, "\n".join(lines) + "\n")


def test_the_engines_run_yaml_is_read_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"run_id": "r1", "name": "run-1", "created_at": 1795317183.5571723, "parent": None, "extensions": [],
           "task": "digits_mlp", "max_steps": 20000, "model": {"hidden": 128, "depth": 2},
           "checkpoint": {"every": 1000, "keep_last": None, "keep_best": True, "async": True}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))

    def no_pyyaml(text: str, path: Path) -> None:
        raise AssertionError("parsed with PyYAML")

    monkeypatch.setattr(run_yaml, "_parse_yaml", no_pyyaml)
    run_yaml._run_yaml_cache.clear()
    listed, problem = run_yaml.run_yaml_for_listing(tmp_path)
    assert problem is None
    assert listed == {k: v for k, v in cfg.items() if k in run_yaml._LISTING_KEYS}
