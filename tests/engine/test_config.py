"""engine.config: resolving, validating and overriding configs; `runctl configs`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runctl.engine.config import (
    CONFIG_KEYS,
    SECTIONS,
    apply_overrides,
    builtin_configs,
    load_config,
    validate_config,
)
from runctl.runs.errors import RunctlError
from support import REPO
from support.cli import cli_stdout_without_torch, run_cli

BUILTINS = ("digits_mlp", "digits_cnn", "digits_vit", "char_gpt")


def write(tmp_path: Path, body: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_builtin_configs_are_listed_with_descriptions() -> None:
    found = builtin_configs()
    assert list(found)[:4] == list(BUILTINS)  # simplest first, for menus
    for name in BUILTINS:
        assert found[name].description, name
        assert found[name].path.is_file()


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_config_resolves_every_key(name: str) -> None:
    cfg = load_config(name)
    assert tuple(cfg) == CONFIG_KEYS
    assert cfg["task"] == name
    for section, fields in SECTIONS.items():
        assert set(cfg[section]) >= set(fields), section
    assert cfg["model"], "built-in tasks fill their model defaults"


def test_defaults_fill_a_minimal_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "task: digits_cnn\n"))
    assert cfg["model"] == {"channels": 32, "depth": 2}
    assert cfg["optim"]["betas"] == [0.9, 0.95]
    assert cfg["checkpoint"] == {"every": 500, "keep_last": 3, "keep_best": True, "async": True}
    assert cfg["curriculum"] == []
    # defaults are copied, never shared between configs
    cfg["optim"]["betas"].append(1)
    assert load_config(write(tmp_path, "task: digits_cnn\n"))["optim"]["betas"] == [0.9, 0.95]


def test_loading_configs_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import runctl.engine.config, runctl.engine.schedule, runctl.engine.curriculum, runctl.engine.tasks\n"
        "from runctl.engine.config import load_config\n"
        "from runctl.engine.schedule import Schedule\n"
        "cfg = load_config('char_gpt', ['optim.lr=3e-4'])\n"
        "Schedule.from_config(cfg).lr(10)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# (file body, dotted key the message must name). Every row is a distinct user mistake.
BAD_CONFIGS = [
    ("task: digits_mlp\nlearning_rate: 0.1\n", "learning_rate"),
    ("task: digits_mlp\noptim: {lrr: 0.1}\n", "optim.lrr"),
    ("task: digits_mlp\noptim: {lr: 0}\n", "optim.lr"),
    ("task: digits_mlp\noptim: {lr: -1.0e-3}\n", "optim.lr"),
    ("task: digits_mlp\noptim: {lr: fast}\n", "optim.lr"),
    ("task: digits_mlp\noptim: {name: adam}\n", "optim.name"),
    ("task: digits_mlp\noptim: {betas: [0.9]}\n", "optim.betas"),
    ("task: digits_mlp\noptim: {grad_accum: 0}\n", "optim.grad_accum"),
    ("task: digits_mlp\ndata: {batch_size: 0}\n", "data.batch_size"),
    ("task: digits_mlp\ndata: {batch_size: true}\n", "data.batch_size"),
    ("task: digits_mlp\ndata: {batch_size: 12.5}\n", "data.batch_size"),
    ("task: digits_mlp\ndata: {stride: -4}\n", "data.stride"),
    ("task: digits_mlp\ndata: {val_fraction: 1.0}\n", "data.val_fraction"),
    ("task: digits_mlp\ndata: 64\n", "data"),
    ("task: digits_mlp\nmax_steps: 0\n", "max_steps"),
    ("task: digits_mlp\nmax_steps: '1000'\n", "max_steps"),
    ("task: digits_mlp\nseed: -1\n", "seed"),
    ("task: digits_mlp\ncompile: 1\n", "compile"),
    ("task: digits_mlp\ndevice: gpu\n", "device"),
    ("task: digits_mlp\ndevice: 'cuda:x'\n", "device"),
    ("task: digits_mlp\nprecision: fp8\n", "precision"),
    ("task: digits_mlp\nschedule: {name: linear}\n", "schedule.name"),
    ("task: digits_mlp\nschedule: {warmup_steps: -5}\n", "schedule.warmup_steps"),
    ("task: digits_mlp\nschedule: {min_lr_ratio: 1.5}\n", "schedule.min_lr_ratio"),
    ("task: digits_mlp\nlog: {every: 0}\n", "log.every"),
    ("task: digits_mlp\neval: {every: 0}\n", "eval.every"),
    ("task: digits_mlp\neval: {mode: lowest}\n", "eval.mode"),
    ("task: digits_mlp\neval: {metric: val/accuracy}\n", "eval.metric"),
    ("task: digits_mlp\neval: {metric: val/acc, mode: min}\n", "eval.mode"),
    ("task: digits_mlp\ncheckpoint: {keep_last: 0}\n", "checkpoint.keep_last"),
    ("task: digits_mlp\ncheckpoint: {async: 'yes please'}\n", "checkpoint.async"),
    ("task: digits_mlp\nema: {decay: 1.0}\n", "ema.decay"),
    ("task: digits_mlp\nnan: {action: ignore}\n", "nan.action"),
    ("task: digits_mlp\nloss: {aux_weight: -0.1}\n", "loss.aux_weight"),
    ("task: digits_mlp\nloss: {temperature: 2}\n", "loss.temperature"),
    ("task: digits_mlp\nmodel: {hidden: 0}\n", "model.hidden"),
    ("task: digits_mlp\nmodel: {channels: 8}\n", "model.channels"),
    ("task: digits_vit\nmodel: {dim: 30, heads: 4}\n", "model.heads"),
    ("task: digits_vit\nmodel: {patch: big}\n", "model.patch"),
    ("task: char_gpt\nmodel: {dropout: 1.0}\n", "model.dropout"),
    ("task: char_gpt\nmodel: {n_embd: 100, n_head: 3}\n", "model.n_head"),
    ("task: digits_transformer\n", "task"),
    ("task: 'my.module'\n", "task"),
    ("task: digits_mlp\ncurriculum: {at_step: 5}\n", "curriculum"),
    ("task: digits_mlp\ncurriculum: [{at_step: 0, set: {loss.aux_weight: 0.1}}]\n", "curriculum[0].at_step"),
    ("task: digits_mlp\ncurriculum: [{set: {loss.aux_weight: 0.1}}]\n", "curriculum[0].at_step"),
    ("task: digits_mlp\ncurriculum: [{at_step: 5, set: {loss.aux_wieght: 0.1}}]\n", "curriculum[0].set.loss.aux_wieght"),
    ("task: digits_mlp\ncurriculum: [{at_step: 5, set: {loss.aux_weight: -1}}]\n", "curriculum[0].set.loss.aux_weight"),
    ("task: digits_mlp\ncurriculum: [{at_step: 5, set: {model.hidden: 64}}]\n", "curriculum[0].set.model.hidden"),
    ("task: digits_mlp\ncurriculum: [{at_step: 5, set: {}}]\n", "curriculum[0].set"),
    ("task: digits_mlp\ncurriculum: [{at_step: 5, sett: {loss.aux_weight: 1}}]\n", "curriculum[0].sett"),
    ("task: digits_mlp\ncurriculum:\n  - {at_step: 9, set: {loss.aux_weight: 1}}\n"
     "  - {at_step: 5, set: {loss.aux_weight: 0}}\n", "curriculum[1].at_step"),
    ("task: digits_mlp\nextensions: [{at_step: 100, max_steps: 50}]\n", "extensions[0].max_steps"),
    ("task: digits_mlp\nparent: 'abc'\n", "parent"),
]


@pytest.mark.parametrize(("body", "key"), BAD_CONFIGS, ids=[key for _, key in BAD_CONFIGS])
def test_bad_config_names_the_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(RunctlError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_bad_config_table_is_large_enough() -> None:
    assert len(BAD_CONFIGS) >= 20


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(RunctlError, match=r"optim\.lrr: unknown key \(did you mean lr\?\)"):
        load_config(write(tmp_path, "optim: {lrr: 0.1}\n"))


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "task: digits_mlp\nseed: 0\noptim: {lr: 0.1\nmax_steps: 5\n")
    with pytest.raises(RunctlError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line ")
    assert "invalid YAML" in str(info.value)


def test_duplicate_key_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "task: digits_mlp\nmax_steps: 5\nmax_steps: 6\n")
    with pytest.raises(RunctlError, match=r"line 3: invalid YAML: duplicate key 'max_steps'"):
        load_config(path)


@pytest.mark.parametrize("body", ["- task: digits_mlp\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(RunctlError, match=r"a config must be a mapping") as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(RunctlError, match="is empty"):
        load_config(write(tmp_path, "# nothing here\n"))


def test_missing_file_and_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(RunctlError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(RunctlError, match=r"digits_mpl: no such config file or built-in config \(did you mean digits_mlp\?\)"):
        load_config("digits_mpl")
    with pytest.raises(RunctlError, match="is a directory"):
        load_config(str(tmp_path) + "/")


def test_scientific_notation_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads 3e-4 as a string; users write it anyway
    cfg = load_config(write(tmp_path, "optim: {lr: 3e-4}\n"))
    assert cfg["optim"]["lr"] == pytest.approx(3e-4)


def test_overrides_parse_yaml_scalars() -> None:
    cfg = load_config("digits_mlp", ["optim.lr=3e-4", "data.batch_size=8", "compile=true",
                                     "schedule.name=constant", "model.hidden=16", "data.path=null",
                                     "optim.betas=[0.8, 0.9]"])
    assert cfg["optim"]["lr"] == pytest.approx(3e-4)
    assert cfg["data"]["batch_size"] == 8
    assert cfg["compile"] is True
    assert cfg["schedule"]["name"] == "constant"
    assert cfg["model"]["hidden"] == 16
    assert cfg["optim"]["betas"] == [0.8, 0.9]


def test_override_of_the_task_starts_from_its_model_defaults() -> None:
    cfg = load_config("digits_mlp", ["task=digits_cnn"])
    assert cfg["model"] == {"channels": 32, "depth": 2}
    cfg = load_config("digits_mlp", ["model.depth=3", "task=digits_vit"])
    assert cfg["model"] == {"patch": "auto", "dim": 64, "depth": 3, "heads": 4}


def test_exponent_notation_for_counts() -> None:
    cfg = load_config("digits_mlp", ["max_steps=1e4", "checkpoint.every=2.5e3"])
    assert cfg["max_steps"] == 10_000 and cfg["checkpoint"]["every"] == 2500
    with pytest.raises(RunctlError, match=r"max_steps: expected an integer, got a number 1500.5"):
        load_config("digits_mlp", ["max_steps=1.5005e3"])


def test_data_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "text.txt").write_text("some text")
    (tmp_path / "mine.txt").write_text("more text")
    path = write(tmp_path / "configs", "task: char_gpt\ndata: {path: ../corpus/text.txt}\n")
    assert load_config(path)["data"]["path"] == str(tmp_path / "corpus" / "text.txt")  # beside the file
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, ["data.path=mine.txt"])
    assert cfg["data"]["path"] == str(tmp_path / "mine.txt")  # --set: the current directory
    absolute = str(tmp_path / "mine.txt")
    assert load_config("char_gpt", [f"data.path={absolute}"])["data"]["path"] == absolute


def test_missing_data_path_is_caught_at_load(tmp_path: Path) -> None:
    with pytest.raises(RunctlError, match=r"^char_gpt \(built-in config\): data\.path: .*nope\.txt: no such text file$"):
        load_config("char_gpt", [f"data.path={tmp_path / 'nope.txt'}"])
    with pytest.raises(RunctlError, match=r"data\.path: .*: is a folder; char_gpt wants a UTF-8 text file"):
        load_config("char_gpt", [f"data.path={tmp_path}"])
    with pytest.raises(RunctlError, match=r"data\.path: .*: no such folder of MNIST IDX files"):
        load_config("digits_cnn", [f"data.path={tmp_path / 'mnist'}"])

def test_custom_task_data_path_is_its_own_business(tmp_path: Path, user_module: str) -> None:
    path = write(tmp_path, 'task: "e1tasks.squares:factory"\ndata: {path: /no/such}\n')
    assert load_config(path)["data"]["path"] == "/no/such"


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("e1tasks.squares:guarded", None),
        ("e1tasks.dynamic:anything", None),
        ("e1tasks.squares:fatory", r"task: e1tasks\.squares:fatory: module e1tasks\.squares \(.*squares\.py\) has no top-level fatory"),
        ("e1tasks.nothere:factory", r"task: e1tasks\.nothere:factory: cannot find module e1tasks\.nothere"),
        ("no_such_pkg_e1.mod:factory", r"task: no_such_pkg_e1\.mod:factory: cannot import no_such_pkg_e1\.mod"),
        ("e1tasks.broken:factory", r"task: e1tasks\.broken:factory: .*broken\.py: cannot be read as Python \(SyntaxError"),
    ],
)
def test_custom_task_is_located_at_load_without_running_it(tmp_path: Path, user_module: str, task: str,
                                                           expected: str | None) -> None:
    path = write(tmp_path, f'task: "{task}"\n')
    if expected is None:
        assert load_config(path)["task"] == task
    else:
        with pytest.raises(RunctlError, match=f"^{re.escape(str(path))}: {expected}"):
            load_config(path)


def test_run_yaml_of_a_vanished_custom_task_still_validates() -> None:
    cfg = validate_config({"task": "gone_pkg_e1.mod:factory", "run_id": "r"}, "run.yaml")
    assert cfg["task"] == "gone_pkg_e1.mod:factory"


def test_override_can_set_a_curriculum() -> None:
    cfg = load_config("digits_mlp", ["curriculum=[{at_step: 50, set: {loss.aux_weight: 0.2}}]"])
    assert cfg["curriculum"] == [{"at_step": 50, "set": {"loss.aux_weight": 0.2}}]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1", r"digits_mlp \(built-in config\): --set optim\.lrr: unknown key optim\.lrr \(did you mean lr\?\)"),
        ("optimizer.lr=1", r"--set optimizer\.lr: unknown key optimizer"),
        ("optim.lr", r"--set 'optim\.lr': expected KEY=VALUE"),
        ("optim.lr=[1", r"--set optim\.lr: value '\[1' is not valid YAML"),
        ("optim.lr=-1", r"optim\.lr: must be > 0"),
        ("data.batch_size=yes", r"data\.batch_size: expected an integer, got a boolean True"),
        ("optim.lr.x=1", r"--set optim\.lr\.x: optim\.lr is not a mapping"),
    ],
)
def test_bad_override(override: str, expected: str) -> None:
    with pytest.raises(RunctlError, match=expected):
        load_config("digits_mlp", [override])


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package `e1tasks` with a module whose import would fail: checks must not run it."""
    package = tmp_path / "pkgs" / "e1tasks"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "squares.py").write_text(textwrap.dedent("""\
        raise RuntimeError("executed at config time")

        def factory(cfg):
            return None

        if True:
            def guarded(cfg):
                return None
        """))
    (package / "dynamic.py").write_text("def __getattr__(name):\n    return lambda cfg: None\n")
    (package / "broken.py").write_text("def factory(:\n")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    return "e1tasks"


def test_custom_task_keeps_model_and_loss_free_form(tmp_path: Path, user_module: str) -> None:
    path = write(tmp_path, """\
        task: "e1tasks.squares:factory"
        model: {width: 64, act: tanh}
        loss: {smoothness: 0.5}
        curriculum: [{at_step: 10, set: {loss.smoothness: 0.0}}]
    """)
    cfg = load_config(path, ["model.depth=3"])
    assert cfg["model"] == {"width": 64, "act": "tanh", "depth": 3}
    assert cfg["loss"] == {"aux_weight": 0.0, "smoothness": 0.5}
    with pytest.raises(RunctlError, match="loss.aux_weight"):
        load_config(path, ["loss.aux_weight=-1"])


def test_best_metric_may_be_accuracy() -> None:
    cfg = load_config("char_gpt", ["eval.metric=val/acc", "eval.mode=max"])
    assert cfg["eval"] == {"every": 100, "batches": 10, "metric": "val/acc", "mode": "max"}


def test_run_yaml_round_trip() -> None:
    cfg = load_config("digits_mlp")
    run = dict(cfg, run_id="20261122-abc", name="first", created_at="2026-11-22T00:00:00Z",
               parent={"run_id": "x", "checkpoint": "step_00000100.pt"},
               extensions=[{"at_step": 1000, "max_steps": 2000, "from_max_steps": 1000}], max_steps=2000)
    again = validate_config(json.loads(json.dumps(run)), "runs/x/run.yaml")
    assert again == run
    assert validate_config(again, "run.yaml") == again  # idempotent


def test_apply_overrides_on_a_run_yaml_keeps_meta() -> None:
    run = dict(load_config("digits_mlp"), run_id="r1", name="r1", created_at=1.0, parent=None, extensions=[])
    out = apply_overrides(run, ["loss.aux_weight=0.3"], "runs/r1/run.yaml")
    assert out["loss"]["aux_weight"] == 0.3 and out["run_id"] == "r1"
    assert run["loss"]["aux_weight"] == 0.0  # the input is not modified


def test_warmup_longer_than_run_is_allowed() -> None:
    cfg = load_config("digits_mlp", ["max_steps=10"])
    assert cfg["schedule"]["warmup_steps"] > cfg["max_steps"]


def test_runctl_configs_lists_builtins() -> None:
    result = run_cli(["configs"], REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "TASK", "STEPS"]
    for name in BUILTINS:
        assert any(line.startswith(name + " ") for line in lines), name
    assert "runctl train" in result.stdout


def test_runctl_configs_json_without_torch() -> None:
    rows = json.loads(cli_stdout_without_torch("configs", "--json"))
    by_name = {row["name"]: row for row in rows}
    assert set(BUILTINS) <= set(by_name)
    assert by_name["char_gpt"]["task"] == "char_gpt"
    assert by_name["digits_mlp"]["model"] == {"hidden": 128, "depth": 2}
    assert all(row["description"] and row["max_steps"] >= 1 for row in rows)
