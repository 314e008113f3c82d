"""The run config's schema: one pydantic model, the source of defaults, checks, docs and JSON Schema.

`Config` is a config file resolved (every key filled in); `RunConfig` is run.yaml: a Config plus
the run's own keys (RUN_META_KEYS). Torch-free: the CLI validates a config before paying for torch.
Types are strict with YAML-flavoured numbers (engine.fields.Section).

Every mistake becomes one line, `<dotted.key>: <what is wrong>`, by `first_problem`: range, choice
and type messages are worded from the JSON Schema, so a key added here with pydantic's own
`Field(default, ge=..., description=...)` reports its mistakes like every other key. A key's
`description` is what the README's config table and `runctl schema` show; a key whose type errors
need a better word than "a list" says it with `json_schema_extra={"x-expected": ...}`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from runctl.engine.fields import KeyProblem, Section, describe, suggest, unknown_key_hint
from runctl.engine.tasks.specs import BUILTIN_METRICS, BUILTIN_TASKS, MODEL_SPECS, FreeFormModel, TaskModel

CUSTOM_TASK_PATTERN = r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*"
_CUSTOM_TASK = re.compile(CUSTOM_TASK_PATTERN)
_DEVICE_PATTERN = r"auto|cpu|cuda|cuda:\d+"

# Keys a curriculum stage may set: prefixes ending in "." cover a whole section. These are the
# settings the loop re-reads at every step; anything else (model shape, batch size, the LR
# schedule) cannot change mid-run without breaking resume.
CURRICULUM_KEYS: tuple[str, ...] = ("loss.", "optim.weight_decay", "optim.grad_clip")


# ---------------------------------------------------------------- sections

class Data(Section):
    batch_size: int = Field(64, ge=1, description="samples (or token windows) per optimizer step and rank")
    path: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="a folder of MNIST IDX files or a UTF-8 text file; relative to the config file")
    stride: int | None = Field(None, ge=1, description="char_gpt: how far apart training windows start; "
                                                       "null = block_size // 2")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share of the data held out for evaluation")


class Optim(Section):
    name: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    lr: float = Field(1.0e-3, gt=0.0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0.0, description="decoupled weight decay (adamw) or L2 (sgd)")
    betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.9, 0.95], min_length=2, max_length=2, description="adamw betas",
        json_schema_extra={"x-expected": "a list of two numbers"})
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd momentum")
    grad_clip: float | None = Field(1.0, ge=0.0, description="max gradient norm; 0 or null = no clipping")
    grad_accum: int = Field(1, ge=1, description="micro-batches accumulated per optimizer step")


class Schedule(Section):
    name: Literal["cosine", "constant"] = Field("cosine", description="LR after warmup: cosine decay or constant")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps (may exceed max_steps)")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine ends at lr * min_lr_ratio")


class Log(Section):
    every: int = Field(10, ge=1, description="steps between metrics lines")


class Eval(Section):
    every: int = Field(100, ge=1, description="steps between evaluations")
    batches: int = Field(20, ge=1, description="validation batches per evaluation")
    metric: Annotated[str, Field(min_length=1)] = Field(
        "val/loss", description="metric that picks the best checkpoint (built-in tasks: val/loss, val/acc)")
    mode: Literal["min", "max"] = Field("min", description="whether a lower or higher metric is better")


class Checkpoint(Section):
    every: int = Field(500, ge=1, description="steps between periodic checkpoints")
    keep_last: int = Field(3, ge=1, description="periodic checkpoints kept")
    keep_best: bool = Field(True, description="also keep the best checkpoint by eval.metric")
    async_save: bool = Field(True, alias="async", description="write checkpoints on a background thread")


class Parallel(Section):
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="with several processes: ddp (a full copy per rank, one checkpoint file) or fsdp "
                           "(FSDP2 fully_shard: weights and optimizer sharded, step folders saved with "
                           "torch.distributed.checkpoint)")


class Ema(Section):
    enabled: bool = Field(False, description="keep an exponential moving average of the weights")
    decay: float = Field(0.999, gt=0.0, lt=1.0, description="EMA decay per step")


class Nan(Section):
    action: Literal["stop", "warn"] = Field(
        "stop", description="on a non-finite loss: stop (checkpoint the last finite step) or warn")


class Stall(Section):
    after_s: float | None = Field(None, gt=0.0, description="seconds without a finished step before the run "
                                  "is stalled; null = the larger of 300 and 20 x the median step time")
    grace_s: float = Field(10.0, ge=0.0, description="seconds a stop waits for a stalled step to end "
                                                     "before interrupting it")


class Loss(Section):
    """Built-in tasks' loss settings; a custom task may add its own keys (checked by Config)."""

    model_config = ConfigDict(extra="allow")

    aux_weight: float = Field(0.0, ge=0.0, description="weight of the auxiliary loss term")


class Stage(Section):
    at_step: int = Field(ge=1, description="the step from which the settings apply")
    set: dict[str, Any] = Field(min_length=1, description="dotted keys and their values",
                                json_schema_extra={"x-expected": "a non-empty mapping of dotted keys"})

    model_config = ConfigDict(json_schema_extra={"x-owner": "a stage",
                                                 "x-expected": "a mapping {at_step: N, set: {key: value}}"})


class Extension(Section):
    at_step: int = Field(ge=0)
    max_steps: int = Field(ge=1)
    from_max_steps: int | None = Field(None, ge=1)

    model_config = ConfigDict(json_schema_extra={"x-owner": "an extension",
                                                 "x-expected": "a mapping {at_step, max_steps}"})

    @model_serializer(mode="wrap")
    def _omit_unknown_start(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if out.get("from_max_steps") is None:
            out.pop("from_max_steps", None)
        return out


TaskName = Annotated[str, WithJsonSchema({
    "anyOf": [{"enum": list(BUILTIN_TASKS)},
              {"type": "string", "pattern": f"^{CUSTOM_TASK_PATTERN}$", "x-hint": '"package.module:factory"'}],
    "description": "a built-in task, or \"package.module:factory\"",
    "x-expected": "a task name",
})]


# ---------------------------------------------------------------- the config

# Marks the config keys a runs listing reads from run.yaml (with the run's own keys): see LISTING_KEYS.
_LISTED = {"x-listing": True}

class Config(Section):
    """A config file, resolved: every key present."""

    task: TaskName = Field("digits_mlp", description="a built-in task or \"package.module:factory\"")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds Python, numpy and torch")
    device: str = Field("auto", pattern=f"^({_DEVICE_PATTERN})$", description="where to train; auto: cuda if present",
                        json_schema_extra={"x-hint": "auto, cpu, cuda or cuda:N"})
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp16 uses a GradScaler")
    compile: bool = Field(False, description="torch.compile the model")
    max_steps: int = Field(2000, ge=1, description="optimizer steps of the run", json_schema_extra=_LISTED)
    model: SerializeAsAny[TaskModel] = Field(
        default_factory=dict, validate_default=True, description="task-specific; built-in tasks check their own keys")
    data: Data = Field(default_factory=Data, description="what to train on")
    optim: Optim = Field(default_factory=Optim, description="the optimizer")
    schedule: Schedule = Field(default_factory=Schedule, description="the learning rate: linear warmup, then cosine or constant")
    log: Log = Field(default_factory=Log, description="metrics lines")
    eval: Eval = Field(default_factory=Eval, description="evaluation and the best checkpoint")
    checkpoint: Checkpoint = Field(default_factory=Checkpoint, description="periodic, best and final checkpoints", json_schema_extra=_LISTED)
    parallel: Parallel = Field(default_factory=Parallel, description="how several processes share the model")
    ema: Ema = Field(default_factory=Ema, description="an average of the weights, saved with each checkpoint")
    nan: Nan = Field(default_factory=Nan, description="a non-finite loss: stop (checkpoint the last finite step, state crashed) or warn")
    stall: Stall = Field(default_factory=Stall, description="when a run whose step stopped advancing is stalled, "
                         "and how long a stop waits for its step")
    loss: Loss = Field(default_factory=Loss, description="the task's loss settings; the curriculum may change them")
    curriculum: list[Stage] = Field(
        default_factory=list, description="settings that change from a step on",
        json_schema_extra={"x-expected": "a list of stages {at_step, set}"})

    @model_validator(mode="before")
    @classmethod
    def _null_is_empty(cls, data: Any) -> Any:
        """`optim:` with nothing under it (null in YAML) is an empty section, so all defaults."""
        if isinstance(data, dict):
            data = {key: ({} if value is None and key in _SECTION_KEYS else
                          [] if value is None and key in ("curriculum", "extensions") else value)
                    for key, value in data.items()}
        return data

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if not task:
            raise ValueError(f"expected a task name, got {describe(task)}")
        if task in BUILTIN_TASKS or _CUSTOM_TASK.fullmatch(task):
            return task
        raise ValueError(f"unknown task {task!r}{suggest(task, BUILTIN_TASKS)}; built-ins are "
                         f"{', '.join(BUILTIN_TASKS)}, a custom task is \"package.module:factory\"")

    @field_validator("model", mode="before")
    @classmethod
    def _task_model(cls, value: Any, info: ValidationInfo) -> TaskModel:
        if value is None:
            value = {}
        if isinstance(value, TaskModel):
            value = value.model_dump()
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {describe(value)}")
        spec = MODEL_SPECS.get(info.data.get("task", ""))
        if spec is None:  # a custom task owns its model settings
            return FreeFormModel.model_validate(copy.deepcopy(value))
        try:
            return spec.model_validate(value)
        except ValidationError as err:
            raise KeyProblem(*first_problem(err, spec)) from None

    @model_validator(mode="after")
    def _across_keys(self) -> Config:
        builtin = self.task in BUILTIN_TASKS
        if builtin and self.loss.model_extra:
            key = next(iter(self.loss.model_extra))
            raise KeyProblem(f"loss.{key}", f"unknown key{unknown_key_hint(key, Loss.model_fields, 'loss')}")
        if builtin:
            metric, mode = self.eval.metric, self.eval.mode
            if metric not in BUILTIN_METRICS:
                raise KeyProblem("eval.metric", f"{self.task} reports {', '.join(BUILTIN_METRICS)}, "
                                 f"not {metric!r}{suggest(metric, BUILTIN_METRICS)}")
            if mode != BUILTIN_METRICS[metric]:
                raise KeyProblem("eval.mode", f"{metric} is better when {'lower' if mode == 'max' else 'higher'}; "
                                 f"use mode: {BUILTIN_METRICS[metric]}")
        previous = 0
        for index, stage in enumerate(self.curriculum):
            if stage.at_step < previous:
                raise KeyProblem(f"curriculum[{index}].at_step",
                                 f"stages must be in step order ({stage.at_step} after {previous})")
            previous = stage.at_step
            stage.set = {str(key): self._stage_setting(str(key), value, f"curriculum[{index}].set.{key}")
                         for key, value in stage.set.items()}
        return self

    def _stage_setting(self, key: str, value: Any, where: str) -> Any:
        """A curriculum value, checked like the key's own value in the config."""
        if not any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in CURRICULUM_KEYS):
            raise KeyProblem(where, "a curriculum may only set " + ", ".join(
                k + "*" if k.endswith(".") else k for k in CURRICULUM_KEYS))
        section_name, _, leaf = key.partition(".")
        section: Section = getattr(self, section_name)
        current = section.to_dict()
        if leaf not in current:
            raise KeyProblem(where, f"unknown key {key}{suggest(leaf, current)}")
        if leaf not in type(section).model_fields:  # a custom task's own loss setting: free-form
            return copy.deepcopy(value)
        try:
            checked = type(section).model_validate({**current, leaf: value})
        except ValidationError as err:
            raise KeyProblem(where, first_problem(err, type(section))[1]) from None
        return checked.to_dict()[leaf]


_SECTION_KEYS = frozenset(name for name, info in Config.model_fields.items()
                          if isinstance(info.annotation, type) and issubclass(info.annotation, Section))


_NON_EMPTY = {"x-expected": "a non-empty string"}


class RunConfig(Config):
    """run.yaml: a resolved config plus the run's own keys (each optional, kept only if present)."""

    run_id: Annotated[str, Field(min_length=1)] | None = Field(None, json_schema_extra=_NON_EMPTY)
    name: Annotated[str, Field(min_length=1)] | None = Field(None, json_schema_extra=_NON_EMPTY)
    created_at: str | int | float | None = None
    parent: Any = None
    extensions: list[Extension] = Field(default_factory=list,
                                        json_schema_extra={"x-expected": "a list of {at_step, max_steps}"})

    @field_validator("run_id", "name", mode="before")
    @classmethod
    def _given_means_text(cls, value: Any) -> Any:
        """Absent is None; present, these are never null."""
        if value is None:
            raise ValueError("expected a non-empty string, got null")
        return value

    @field_validator("created_at", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"expected a timestamp, got {describe(value)}")
        return value

    @field_validator("parent")
    @classmethod
    def _parent(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("run_id"), str):
            raise ValueError(f"expected null or {{run_id, checkpoint}}, got {describe(value)}")
        return copy.deepcopy(value)

    def to_dict(self) -> dict[str, Any]:
        """run.yaml's mapping: CONFIG_KEYS in order, then the run's own keys that were given."""
        out = self.model_dump(mode="python", by_alias=True)
        resolved = {key: out[key] for key in CONFIG_KEYS}
        resolved.update({key: out[key] for key in RUN_META_KEYS if key in self.model_fields_set})
        return resolved

    @model_validator(mode="after")
    def _extension_order(self) -> RunConfig:
        previous_max = previous_at = 0
        for index, entry in enumerate(self.extensions):
            where = f"extensions[{index}]"
            if entry.max_steps <= entry.at_step:
                raise KeyProblem(f"{where}.max_steps", f"must be greater than at_step ({entry.at_step})")
            if entry.max_steps <= previous_max:
                raise KeyProblem(f"{where}.max_steps",
                                 f"must be greater than the previous max_steps ({previous_max})")
            if entry.at_step < previous_at:
                raise KeyProblem(f"{where}.at_step",
                                 f"extensions must be in step order ({entry.at_step} after {previous_at})")
            previous_max, previous_at = entry.max_steps, entry.at_step
        return self


CONFIG_KEYS: tuple[str, ...] = tuple(info.alias or name for name, info in Config.model_fields.items())
_TOP_ORDER = {key: index for index, key in enumerate(RunConfig.model_fields)}
RUN_META_KEYS: tuple[str, ...] = tuple(name for name in RunConfig.model_fields if name not in Config.model_fields)
# The run.yaml keys `runctl ls` and the runs list read (runs.run_yaml parses only these).
LISTING_KEYS: tuple[str, ...] = (*RUN_META_KEYS, *(
    info.alias or name for name, info in Config.model_fields.items()
    if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("x-listing")))
# The sections of plain settings and their keys (model, loss extras and curriculum have own rules).
SECTIONS: dict[str, tuple[str, ...]] = {
    name: tuple(info.alias or key for key, info in Config.model_fields[name].annotation.model_fields.items())
    for name in Config.model_fields if name in _SECTION_KEYS and name != "model"
}


def resolve(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a config or run.yaml mapping; the resolved plain dict (CONFIG_KEYS order, then the
    run's own keys that were given). Raises ValidationError; `first_problem` words it."""
    return RunConfig.model_validate(data).to_dict()


def as_run_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    """The typed config the engine reads (`cfg.optim.lr`), from a resolved mapping or as it is."""
    return cfg if isinstance(cfg, RunConfig) else RunConfig.model_validate(cfg)


# ---------------------------------------------------------------- one line per mistake

@cache
def _validation_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, mode="validation")


def _resolve_ref(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node = {**root["$defs"][name], **extra}
    return node


def _non_null(node: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema of a value without its `null` alternative, and whether null is allowed."""
    node = _resolve_ref(node, root)
    options = node.get("anyOf")
    if not options:
        return node, False
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) == 1 and len(kept) < len(options):
        merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **_resolve_ref(kept[0], root)}
        return merged, True
    return node, False


def _schema_at(loc: tuple[Any, ...], root: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    node: dict[str, Any] = root
    nullable = False
    for part in loc:
        node, _ = _non_null(node, root)
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
        node, nullable = _non_null(node, root)
    return node, nullable


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def bounds_text(node: dict[str, Any]) -> str:
    """'in [0, 1)', '> 0', '>= 1' from a JSON Schema's minimum/maximum keywords."""
    lo_open = "exclusiveMinimum" in node
    hi_open = "exclusiveMaximum" in node
    lo = node.get("exclusiveMinimum", node.get("minimum"))
    hi = node.get("exclusiveMaximum", node.get("maximum"))
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    return f"{'<' if hi_open else '<='} {_num(hi)}"


_WANTED = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a non-empty string",
           "dict": "a mapping", "model": "a mapping", "list": "a list"}
_TYPE_ERRORS = {"int_type": "int", "int_parsing": "int", "int_from_float": "int", "float_type": "float",
                "float_parsing": "float", "bool_type": "bool", "bool_parsing": "bool", "string_type": "string",
                "dict_type": "dict", "model_type": "model", "model_attributes_type": "model",
                "list_type": "list"}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _report_order(error: Any) -> tuple[int, int, bool]:
    """Unknown keys at the top first, then by key in the config's order, an unknown key first
    within a section: a misspelt key explains the default that follows from it."""
    loc = error["loc"]
    unknown = error["type"] in ("extra_forbidden", "invalid_key")
    position = _TOP_ORDER.get(loc[0], len(_TOP_ORDER)) if loc else -1
    return (0 if unknown and len(loc) <= 1 else 1, position, not unknown)


def _key_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def first_problem(err: ValidationError, model: type[BaseModel] = RunConfig) -> tuple[str, str]:
    """The mistake to report, as (dotted key, message). Unknown keys come first: a misspelt key
    explains the default that follows from it."""
    error = min(err.errors(include_url=False), key=_report_order)
    loc = tuple(error["loc"])
    if error["type"] == "invalid_key":  # a number as a key: unknown, like any other
        error = {**error, "type": "extra_forbidden"}
        loc = (*loc[:-1], str(loc[-1]))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, KeyProblem):
        return (_key_text(loc) + "." if loc else "") + cause.key, str(cause)
    return _key_text(loc), _message(error, loc, model)


def _message(error: dict[str, Any], loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    kind, value = error["type"], error.get("input")
    root = _validation_schema(model)
    node, nullable = _schema_at(loc, root)
    if kind == "extra_forbidden":
        parent, _ = _schema_at(loc[:-1], root)
        if not loc[:-1] and model is RunConfig:
            known: Any = CONFIG_KEYS
            return f"unknown key{suggest(str(loc[-1]), known) or ' (keys: ' + ', '.join(known) + ')'}"
        if issubclass(model, TaskModel) and not loc[:-1]:
            owner = f"the {model.task_name} model"
        else:
            owner = parent.get("x-owner") or _key_text(loc[:-1])
        return f"unknown key{unknown_key_hint(str(loc[-1]), parent.get('properties', {}), owner)}"
    if kind == "missing":
        return "missing"
    if kind == "value_error":
        return str((error.get("ctx") or {}).get("error", error["msg"]))
    if kind == "string_pattern_mismatch":
        return f"must be {node.get('x-hint') or 'of the form ' + node.get('pattern', '')}, got {value!r}"
    if kind == "finite_number":
        return f"must be finite, got {value!r}"
    if kind in _RANGE_ERRORS:
        return f"must be {bounds_text(node)}, got {value!r}"
    if kind == "literal_error" or "enum" in node and kind not in _TYPE_ERRORS:
        return f"must be one of {', '.join(map(str, node.get('enum', [])))}, got {describe(value)}"
    expected = node.get("x-expected")
    if expected and (kind in _TYPE_ERRORS or kind in ("too_short", "too_long", "string_too_short")):
        return f"expected {expected}, got {describe(value)}"
    if kind in _TYPE_ERRORS or kind == "string_too_short":
        wanted = _WANTED[_TYPE_ERRORS.get(kind, "string")]
        return f"expected {wanted}{' or null' if nullable else ''}, got {describe(value)}"
    return str(error["msg"])


# ---------------------------------------------------------------- JSON Schema for editors

def _public(node: Any) -> Any:
    """The schema without our x- wording keys, which editors do not need."""
    if isinstance(node, dict):
        return {key: _public(value) for key, value in node.items() if not str(key).startswith("x-")}
    if isinstance(node, list):
        return [_public(item) for item in node]
    return node


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, for YAML editors: each built-in task's `model:` keys apply
    when `task:` names it (if/then; no `task:` means the default task), any other task's `model:`
    is free-form."""
    schema = copy.deepcopy(Config.model_json_schema(by_alias=True, mode="validation"))
    defs = schema.setdefault("$defs", {})
    defs.pop(TaskModel.__name__, None)
    schema["properties"]["model"] = {"type": "object", "description": Config.model_fields["model"].description}
    default_task = Config.model_fields["task"].default
    rules = []
    for task, spec in MODEL_SPECS.items():
        spec_schema = spec.model_json_schema(by_alias=True, mode="validation")
        defs.update(spec_schema.pop("$defs", {}))
        defs[spec.__name__] = spec_schema
        named = {"properties": {"task": {"const": task}}, "required": ["task"]}
        condition = {"anyOf": [named, {"not": {"required": ["task"]}}]} if task == default_task else named
        rules.append({"if": condition, "then": {"properties": {"model": {"$ref": f"#/$defs/{spec.__name__}"}}}})
    schema["allOf"] = rules
    schema["title"] = "runctl config"
    return {"$schema": "http://json-schema.org/draft-07/schema#", **_public(schema)}
