"""engine.schema: the one model of a config; `runctl schema` prints its JSON Schema for YAML editors."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import pytest
import yaml
from pydantic import Field, ValidationError
from runctl.engine.config import CONFIG_KEYS, builtin_configs, load_config
from runctl.engine.fields import Section
from runctl.engine.schema import Config, first_problem
from runctl.engine.tasks.specs import MODEL_SPECS
from support import REPO
from support.cli import cli_stdout_without_torch, run_cli


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """What `runctl schema` prints, from a subprocess that must not import torch."""
    document = json.loads(cli_stdout_without_torch("schema"))
    jsonschema.Draft7Validator.check_schema(document)
    return document


def test_runctl_schema_through_the_cli() -> None:
    result = run_cli(["schema"], REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["title"] == "runctl config"


def problems(schema: dict[str, Any], document: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [".".join(map(str, error.absolute_path)) for error in validator.iter_errors(document)]


@pytest.mark.parametrize("name", list(builtin_configs()))
def test_every_builtin_config_passes_the_schema(schema: dict[str, Any], name: str) -> None:
    document = yaml.safe_load(builtin_configs()[name].path.read_text())
    assert problems(schema, document) == []
    resolved = {key: value for key, value in load_config(name).items() if key != "curriculum" or value}
    resolved["data"] = {k: v for k, v in resolved["data"].items() if v is not None or k == "stride"}
    assert problems(schema, resolved) == []


# (document, the path the editor must underline). The schema holds what one key can say alone.
EDITOR_MISTAKES = [
    ({"optim": {"lrr": 0.1}}, "optim"),
    ({"optim": {"lr": 0}}, "optim.lr"),
    ({"optim": {"name": "adam"}}, "optim.name"),
    ({"optim": {"betas": [0.9]}}, "optim.betas"),
    ({"data": {"batch_size": True}}, "data.batch_size"),
    ({"device": "gpu"}, "device"),
    ({"precision": "fp8"}, "precision"),
    ({"learning_rate": 0.1}, ""),
    ({"task": "digits_transformer"}, "task"),
    ({"checkpoint": {"async": "yes"}}, "checkpoint.async"),
    ({"curriculum": [{"set": {"loss.aux_weight": 0.1}}]}, "curriculum.0"),
    ({"task": "digits_cnn", "model": {"hidden": 8}}, "model"),
    ({"model": {"channels": 8}}, "model"),  # no task: the default task's model keys
    ({"task": "char_gpt", "model": {"dropout": 1.0}}, "model.dropout"),
]


@pytest.mark.parametrize(("document", "where"), EDITOR_MISTAKES, ids=[str(d) for d, _ in EDITOR_MISTAKES])
def test_schema_flags_what_an_editor_can_see(schema: dict[str, Any], document: dict[str, Any], where: str) -> None:
    assert where in problems(schema, document)


def test_a_custom_task_keeps_model_free_form(schema: dict[str, Any]) -> None:
    assert problems(schema, {"task": "mypkg.tasks:factory", "model": {"width": 3, "act": "tanh"}}) == []


def test_config_keys_come_from_the_model() -> None:
    assert CONFIG_KEYS == tuple(info.alias or name for name, info in Config.model_fields.items())


def test_every_key_says_what_it_is() -> None:
    """The README's table and editors' hovers show these; a new key needs its description."""
    def is_section(annotation: Any) -> bool:
        return isinstance(annotation, type) and issubclass(annotation, Section)

    missing = [f"{name}.{key}" for name, info in Config.model_fields.items() if is_section(info.annotation)
               for key, sub in info.annotation.model_fields.items() if not sub.description]
    missing += [name for name, info in Config.model_fields.items()
                if not info.description and not is_section(info.annotation)]
    missing += [f"model.{key} ({task})" for task, spec in MODEL_SPECS.items()
                for key, sub in spec.model_fields.items() if not sub.description]
    assert missing == []


class _NewSection(Section):
    """What a helper adding a key writes: pydantic's own Field, nothing about messages."""

    threshold: float = Field(300.0, gt=0, description="seconds")
    window: int | None = Field(None, ge=1, le=100, description="steps")
    mode: Literal["fast", "slow"] = Field("fast", description="how")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"threshold": 0}, ("threshold", "must be > 0, got 0.0")),
        ({"threshold": "soon"}, ("threshold", "expected a number, got a string 'soon'")),
        ({"window": 101}, ("window", "must be in [1, 100], got 101")),
        ({"window": True}, ("window", "expected an integer or null, got a boolean True")),
        ({"mode": "medium"}, ("mode", "must be one of fast, slow, got a string 'medium'")),
        ({"treshold": 5}, ("treshold", "unknown key (did you mean threshold?)")),
    ],
)
def test_a_new_key_reports_mistakes_like_every_other(data: dict[str, Any], expected: tuple[str, str]) -> None:
    with pytest.raises(ValidationError) as info:
        _NewSection.model_validate(data)
    assert first_problem(info.value, _NewSection) == expected


def test_a_new_key_reads_numbers_as_yaml_users_write_them() -> None:
    assert _NewSection.model_validate({"threshold": "3e2", "window": 1e1}).to_dict() == {
        "threshold": 300.0, "window": 10, "mode": "fast"}
