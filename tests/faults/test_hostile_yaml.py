"""A config cannot exhaust the machine: alias bombs and oversized files are refused at once.

The bomb is the real thing: ~350 bytes whose nested aliases expand to 9**9 (387 million) strings,
placed under a key the config accepts (`max_steps`), so nothing but the alias bound can stop it.
Before the bound, `runctl train` on it ran for minutes and grew without limit. Each case goes
through `python -m runctl` with a timeout far below that; the refusal is exit 2, one line naming
the file, nothing created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import one_line_refusal, run_cli
from support.filesystems import tree_snapshot

# Far above the refusal (a Python start-up plus a parse) and far below what the bomb costs unbounded.
REFUSAL_TIMEOUT = 30


def billion_laughs(key: str = "max_steps", levels: int = 9) -> str:
    lines = ["task: digits_mlp", f"{key}: [", '  &a ["x","x","x","x","x","x","x","x","x"],']
    previous = "a"
    for name in "bcdefghijk"[: levels - 1]:
        lines.append(f"  &{name} [" + ",".join([f"*{previous}"] * 9) + "],")
        previous = name
    return "\n".join([*lines, "]"]) + "\n"


def test_the_bomb_is_small_and_really_expands() -> None:
    text = billion_laughs()
    assert len(text.encode()) < 400
    import yaml

    data = yaml.load(text, Loader=yaml.SafeLoader)  # builds shared references quickly: the trap
    node, count = data["max_steps"][-1], 1
    while isinstance(node, list):
        count, node = count * len(node), node[0]
    assert count == 9**9


@pytest.mark.parametrize("key", ["max_steps", "curriculum", "data"])
def test_train_refuses_a_billion_laughs_config(tmp_path: Path, key: str) -> None:
    config = tmp_path / "laughs.yaml"
    config.write_text(billion_laughs(key))
    root = tmp_path / "runs"
    done = run_cli(["train", config, "--root", root], cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    one_line_refusal(done, "laughs.yaml", "aliases")
    assert not root.exists()


def test_train_refuses_a_recursive_alias(tmp_path: Path) -> None:
    config = tmp_path / "loop.yaml"
    config.write_text("task: digits_mlp\nmax_steps: &a [1, *a]\n")
    done = run_cli(["train", config, "--root", tmp_path / "runs"], cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    one_line_refusal(done, "loop.yaml", "alias")


def test_set_value_bomb_is_refused(tmp_path: Path) -> None:
    value = billion_laughs().split("max_steps: ", 1)[1].replace("\n", " ")
    done = run_cli(["train", "digits_mlp", "--root", tmp_path / "runs", "--set", f"max_steps={value}"],
                   cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    one_line_refusal(done, "max_steps", "aliases")


def test_an_oversized_config_is_refused_without_reading_it(tmp_path: Path) -> None:
    config = tmp_path / "huge.yaml"
    with open(config, "wb") as f:  # sparse: 10 GB on paper, nothing on disk
        f.write(b"task: digits_mlp\n# ")
        f.truncate(10 * 2**30)
    done = run_cli(["train", config, "--root", tmp_path / "runs"], cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    one_line_refusal(done, "huge.yaml", "too large")


def test_a_config_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    import os

    config = tmp_path / "pipe.yaml"
    os.mkfifo(config)
    done = run_cli(["train", config, "--root", tmp_path / "runs"], cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    one_line_refusal(done, "pipe.yaml", "not a regular file: fifo")


def make_run(root: Path, name: str, run_yaml: str) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.yaml").write_text(run_yaml)
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 4, "max_steps": 4}))
    return run


def test_listing_survives_run_yaml_bombs(tmp_path: Path) -> None:
    """A run.yaml bomb (and a deeply nested status.json) in one run: ls, summary and verify of the
    root still answer, name the file, and list the healthy run beside it."""
    root = tmp_path / "runs"
    make_run(root, "healthy", "run_id: healthy\nname: healthy\ntask: digits_mlp\nmax_steps: 4\n")
    make_run(root, "laughs", billion_laughs().replace("task: digits_mlp", "run_id: laughs\nname: laughs"))
    nested = make_run(root, "nested", "run_id: nested\nname: nested\nmax_steps: 4\n")
    (nested / "status.json").write_text("[" * 200_000 + "]" * 200_000)
    before = tree_snapshot(root)

    done = run_cli(["ls", root, "--json"], cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    assert done.returncode == 0, done.stderr
    runs = {r["name"] or Path(r["path"]).name: r for r in json.loads(done.stdout)["runs"]}
    assert {"healthy", "laughs", "nested"} <= set(runs), runs.keys()
    assert any("run.yaml" in p and "aliases" in p for p in runs["laughs"]["problems"]), runs["laughs"]
    assert any("status.json" in p for p in runs["nested"]["problems"]), runs["nested"]
    assert not [p for p in runs["healthy"]["problems"] if "run.yaml" in p or "status.json" in p]

    for args in (["ls", root], ["summary", root], ["verify", root]):
        done = run_cli(args, cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
        assert "healthy" in done.stdout
    assert tree_snapshot(root) == before


def test_resume_refuses_a_run_yaml_bomb(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = make_run(root, "laughs", billion_laughs().replace("task: digits_mlp", "run_id: laughs\nname: laughs"))
    done = run_cli(["resume", run], cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    one_line_refusal(done, "run.yaml", "aliases")
    done = run_cli(["extend", run, "--steps", "5"], cwd=tmp_path, timeout=REFUSAL_TIMEOUT)
    one_line_refusal(done, "run.yaml", "aliases")
