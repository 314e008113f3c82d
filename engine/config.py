"""Load, resolve and validate run configs (YAML) without importing torch.

`load_config(source, overrides)` reads a YAML file or a built-in config (engine/configs/<name>.yaml),
fills every missing key with its default, applies `--set key=value` overrides and validates the
result. Every mistake is a RunctlError of one line, `<file>: <dotted.key>: <what is wrong>`, so the
CLI can refuse a bad config before it creates a run folder or pays for torch.

The resolved schema is in docs/ARCHITECTURE.md. Decisions worth knowing:
- `warmup_steps >= max_steps` is allowed (a short smoke run of a big config); the LR then ramps for
  the whole run.
- a built-in config's description is its first comment line, so the schema has no extra key.
- curriculum stages may set only keys the loop re-reads at every step: `loss.*`,
  `optim.weight_decay` and `optim.grad_clip` (CURRICULUM_KEYS); anything else (model shape, batch
  size, the LR schedule) cannot change mid-run without breaking resume, so it is an error at load.
- run.yaml is a resolved config plus RUN_META_KEYS; validate_config accepts it for reloading.
- `data.path` is stored absolute: a relative path in a YAML file is relative to that file's folder
  (so a config and its data travel together), one given with --set to the current directory.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from runctl.engine.fields import Field, Invalid, boolean, choice, describe, integer, number, number_pair, text
from runctl.engine.tasks.custom import factory_problem
from runctl.engine.tasks.specs import BUILTIN_METRICS, BUILTIN_TASKS, MODEL_SPECS
from runctl.runs.errors import RunctlError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

RUN_META_KEYS: tuple[str, ...] = ("run_id", "name", "created_at", "parent", "extensions")

# Keys a curriculum stage may set: prefixes ending in "." cover a whole section.
CURRICULUM_KEYS: tuple[str, ...] = ("loss.", "optim.weight_decay", "optim.grad_clip")

_CUSTOM_TASK = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*")
_DEVICE = r"auto|cpu|cuda|cuda:\d+"

# Top-level leaves, then sections of leaves. "model", "loss" and "curriculum" have their own rules.
TOP_FIELDS: dict[str, Field] = {
    "seed": integer(0, lo=0, hi=2**32 - 1),
    "device": text("auto", pattern=_DEVICE, hint="auto, cpu, cuda or cuda:N"),
    "precision": choice("fp32", ("fp32", "bf16", "fp16")),
    "compile": boolean(False),
    "max_steps": integer(2000, lo=1),
}

SECTIONS: dict[str, dict[str, Field]] = {
    "data": {
        "batch_size": integer(64, lo=1),
        "path": text(None, nullable=True, doc="a folder of MNIST IDX files, or a UTF-8 text file"),
        "stride": integer(None, lo=1, nullable=True, doc="char_gpt window stride; null = block_size // 2"),
        "val_fraction": number(0.1, lo=0.0, hi=1.0, lo_open=True, hi_open=True),
    },
    "optim": {
        "name": choice("adamw", ("adamw", "sgd")),
        "lr": number(1.0e-3, lo=0.0, lo_open=True),
        "weight_decay": number(0.1, lo=0.0),
        "betas": number_pair([0.9, 0.95], 0.0, 1.0),
        "momentum": number(0.9, lo=0.0, hi=1.0, hi_open=True),
        "grad_clip": number(1.0, lo=0.0, nullable=True, doc="max grad norm; 0 or null = no clipping"),
        "grad_accum": integer(1, lo=1),
    },
    "schedule": {
        "name": choice("cosine", ("cosine", "constant")),
        "warmup_steps": integer(100, lo=0),
        "min_lr_ratio": number(0.1, lo=0.0, hi=1.0),
    },
    "log": {"every": integer(10, lo=1)},
    "eval": {
        "every": integer(100, lo=1),
        "batches": integer(20, lo=1),
        "metric": text("val/loss"),
        "mode": choice("min", ("min", "max")),
    },
    "checkpoint": {
        "every": integer(500, lo=1),
        "keep_last": integer(3, lo=1),
        "keep_best": boolean(True),
        "async": boolean(True),
    },
    "ema": {
        "enabled": boolean(False),
        "decay": number(0.999, lo=0.0, hi=1.0, lo_open=True, hi_open=True),
    },
    "nan": {"action": choice("stop", ("stop", "warn"))},
    "loss": {"aux_weight": number(0.0, lo=0.0)},
}

# The resolved config's key order (and so run.yaml's).
CONFIG_KEYS: tuple[str, ...] = (
    "task", "seed", "device", "precision", "compile", "max_steps", "model", "data", "optim",
    "schedule", "log", "eval", "checkpoint", "ema", "nan", "loss", "curriculum",
)


@dataclass(frozen=True)
class BuiltinConfig:
    name: str
    description: str
    path: Path


def builtin_configs() -> dict[str, BuiltinConfig]:
    """The configs shipped in engine/configs, by name; the description is the file's first comment."""
    found: dict[str, BuiltinConfig] = {}
    # the built-in tasks' own configs first, simplest first; any others after, by name
    order = {name: index for index, name in enumerate(BUILTIN_TASKS)}
    for path in sorted(CONFIG_DIR.glob("*.yaml"), key=lambda p: (order.get(p.stem, len(order)), p.stem)):
        description = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                description = line.lstrip("#").strip()
                break
        found[path.stem] = BuiltinConfig(path.stem, description, path)
    return found


def load_config(source: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML file or built-in config name, resolve defaults, apply `--set` overrides, validate."""
    path, origin = _locate(source)
    raw = _read_yaml(path, origin)
    cfg = validate_config(raw, origin)
    cfg["data"]["path"] = _absolute_data_path(cfg["data"]["path"], path.parent)
    if overrides:
        cfg = apply_overrides(cfg, overrides, origin)
    _check_data_path_exists(cfg, origin)
    if cfg["task"] not in BUILTIN_TASKS:
        problem = factory_problem(cfg["task"])
        if problem:
            raise _fail(origin, "task", f"{cfg['task']}: {problem}")
    return cfg


def _check_data_path_exists(cfg: dict[str, Any], origin: str) -> None:
    """Catch a wrong data.path before a run folder exists (only in load_config: a run.yaml whose
    data has moved must still load, to be shown). Custom tasks interpret data.path themselves."""
    data_path = cfg["data"]["path"]
    if data_path is None or cfg["task"] not in BUILTIN_TASKS:
        return
    path = Path(data_path)
    wants_file = cfg["task"] == "char_gpt"
    if wants_file and not path.is_file():
        problem = "is a folder; char_gpt wants a UTF-8 text file" if path.is_dir() else "no such text file"
        raise _fail(origin, "data.path", f"{data_path}: {problem}")
    if not wants_file and not path.is_dir():
        problem = ("is a file; the digits tasks want a folder of MNIST IDX files" if path.exists()
                   else "no such folder of MNIST IDX files")
        raise _fail(origin, "data.path", f"{data_path}: {problem}")


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | tuple[str, ...], origin: str) -> dict[str, Any]:
    """Apply `a.b=VALUE` overrides (VALUE is a YAML scalar or flow value) and revalidate.

    `cfg` is a resolved config (or a run.yaml); every key exists in it, so a key that does not is a
    typo. Under a custom task's `model:` and `loss:` new keys may be added.
    """
    out = copy.deepcopy(cfg)
    model_overrides: set[str] = set()
    for item in overrides:
        key, sep, value_text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RunctlError(f"{origin}: --set {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else None
        except yaml.YAMLError as err:
            raise RunctlError(f"{origin}: --set {key}: value {value_text!r} is not valid YAML ({_yaml_problem(err)})") from None
        _set_dotted(out, key, value, origin, allow_new=_free_form_sections(out))
        if key.startswith("model."):
            model_overrides.add(key.split(".")[1])
    if out.get("task") != cfg.get("task") and isinstance(out.get("model"), dict):
        # another task: the old task's model settings do not apply, the new task's defaults do
        out["model"] = {k: v for k, v in out["model"].items() if k in model_overrides}
    resolved = validate_config(out, origin)
    resolved["data"]["path"] = _absolute_data_path(resolved["data"]["path"], Path.cwd())
    return resolved


def _absolute_data_path(value: str | None, base: Path) -> str | None:
    """data.path made absolute, so run.yaml means the same file from any working directory:
    relative to the config file's folder when written in a file, to the current directory when
    given with --set."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def validate_config(cfg: Any, origin: str) -> dict[str, Any]:
    """Return `cfg` resolved (every key present, values normalised) or raise RunctlError naming the key.

    Accepts a run.yaml too: a resolved config plus RUN_META_KEYS.
    """
    if not isinstance(cfg, dict):
        raise RunctlError(f"{origin}: a config must be a mapping of keys (task: ..., max_steps: ...), "
                          f"got {describe(cfg)}")
    allowed = set(CONFIG_KEYS) | set(RUN_META_KEYS)
    for key in cfg:
        if not isinstance(key, str):
            raise RunctlError(f"{origin}: {key!r}: config keys must be strings")
        if key not in allowed:
            hint = _suggest(key, CONFIG_KEYS) or f" (keys: {', '.join(CONFIG_KEYS)})"
            raise RunctlError(f"{origin}: {key}: unknown key{hint}")

    out: dict[str, Any] = {}
    out["task"] = _check_task(cfg.get("task", "digits_mlp"), origin)
    for key, fld in TOP_FIELDS.items():
        out[key] = _check_leaf(cfg, key, fld, key, origin)
    out["model"] = _check_model(out["task"], cfg.get("model"), origin)
    for section, fields in SECTIONS.items():
        free_form = section == "loss" and out["task"] not in BUILTIN_TASKS
        out[section] = _check_section(cfg.get(section), section, fields, origin, free_form)
    _check_eval_metric(out, origin)
    out["curriculum"] = _check_curriculum(cfg.get("curriculum"), out, origin)
    for key in RUN_META_KEYS:
        if key in cfg:
            out[key] = _check_meta(key, cfg[key], out, origin)
    return out


# ---------------------------------------------------------------- reading

def _locate(source: str | Path) -> tuple[Path, str]:
    text_source = str(source)
    path = Path(source)
    looks_like_path = isinstance(source, Path) or "/" in text_source or text_source.endswith((".yaml", ".yml"))
    if path.is_file() or looks_like_path:
        if path.is_dir():
            raise RunctlError(f"{text_source}: is a directory, not a config file")
        if not path.exists():
            raise RunctlError(f"{text_source}: no such config file")
        return path, text_source
    builtins = builtin_configs()
    if text_source in builtins:
        return builtins[text_source].path, f"{text_source} (built-in config)"
    names = ", ".join(builtins)
    raise RunctlError(f"{text_source}: no such config file or built-in config{_suggest(text_source, builtins)} "
                      f"(built-ins: {names})")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str | int | float | bool | type(None)):
            continue  # an unhashable key: SafeLoader's own construct_mapping reports it
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return str(problem)


def _read_yaml(path: Path, origin: str) -> Any:
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RunctlError(f"{origin}: not a UTF-8 text file") from None
    except OSError as err:
        raise RunctlError(f"{origin}: cannot read: {err.strerror or err}") from None
    try:
        data = yaml.load(content, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise RunctlError(f"{origin}: {where}invalid YAML: {_yaml_problem(err)}") from None
    if data is None:
        raise RunctlError(f"{origin}: the file is empty; a config is a mapping such as `task: digits_mlp`")
    return data


# ---------------------------------------------------------------- checks

def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _fail(origin: str, key: str, message: str) -> RunctlError:
    return RunctlError(f"{origin}: {key}: {message}")


def _check_leaf(mapping: dict[str, Any], key: str, fld: Field, dotted: str, origin: str) -> Any:
    if key not in mapping:
        return copy.deepcopy(fld.default)
    try:
        return fld.check(mapping[key])
    except Invalid as err:
        raise _fail(origin, dotted, str(err)) from None


def _check_task(task: Any, origin: str) -> str:
    if not isinstance(task, str) or not task:
        raise _fail(origin, "task", f"expected a task name, got {describe(task)}")
    if task in BUILTIN_TASKS or _CUSTOM_TASK.fullmatch(task):
        return task
    raise _fail(origin, "task", f"unknown task {task!r}{_suggest(task, BUILTIN_TASKS)}; built-ins are "
                f"{', '.join(BUILTIN_TASKS)}, a custom task is \"package.module:factory\"")


def _check_section(value: Any, section: str, fields: dict[str, Field], origin: str,
                   free_form: bool = False, owner: str = "") -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _fail(origin, section, f"expected a mapping, got {describe(value)}")
    out: dict[str, Any] = {}
    for key in value:
        if key not in fields and not free_form:
            hint = _suggest(str(key), fields) or f" ({owner or section} has: {', '.join(fields)})"
            raise _fail(origin, f"{section}.{key}", f"unknown key{hint}")
    for key, fld in fields.items():
        out[key] = _check_leaf(value, key, fld, f"{section}.{key}", origin)
    if free_form:
        for key, item in value.items():
            if key not in fields:
                out[str(key)] = copy.deepcopy(item)
    return out


def _check_model(task: str, value: Any, origin: str) -> dict[str, Any]:
    spec = MODEL_SPECS.get(task)
    if spec is None:  # a custom task owns its model settings
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _fail(origin, "model", f"expected a mapping, got {describe(value)}")
        return copy.deepcopy(value)
    model = _check_section(value, "model", spec.fields, origin, owner=f"the {task} model")
    for key, relation in spec.relations:
        try:
            relation(model)
        except Invalid as err:
            raise _fail(origin, f"model.{key}", str(err)) from None
    return model


def _check_eval_metric(cfg: dict[str, Any], origin: str) -> None:
    """A built-in task reports only BUILTIN_METRICS; tracking the best of another, or the best
    accuracy as the lowest, would silently keep the wrong checkpoint."""
    if cfg["task"] not in BUILTIN_TASKS:
        return
    metric, mode = cfg["eval"]["metric"], cfg["eval"]["mode"]
    if metric not in BUILTIN_METRICS:
        raise _fail(origin, "eval.metric", f"{cfg['task']} reports {', '.join(BUILTIN_METRICS)}, "
                    f"not {metric!r}{_suggest(metric, BUILTIN_METRICS)}")
    if mode != BUILTIN_METRICS[metric]:
        raise _fail(origin, "eval.mode", f"{metric} is better when {'lower' if mode == 'max' else 'higher'}; "
                    f"use mode: {BUILTIN_METRICS[metric]}")


def _check_curriculum(value: Any, cfg: dict[str, Any], origin: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(origin, "curriculum", f"expected a list of stages {{at_step, set}}, got {describe(value)}")
    stages: list[dict[str, Any]] = []
    previous = 0
    for index, stage in enumerate(value):
        where = f"curriculum[{index}]"
        if not isinstance(stage, dict):
            raise _fail(origin, where, f"expected a mapping {{at_step: N, set: {{key: value}}}}, got {describe(stage)}")
        for key in stage:
            if key not in ("at_step", "set"):
                raise _fail(origin, f"{where}.{key}", "unknown key (a stage has: at_step, set)")
        if "at_step" not in stage:
            raise _fail(origin, f"{where}.at_step", "missing")
        try:
            at_step = integer(None, lo=1).check(stage["at_step"])
        except Invalid as err:
            raise _fail(origin, f"{where}.at_step", str(err)) from None
        if at_step < previous:
            raise _fail(origin, f"{where}.at_step", f"stages must be in step order ({at_step} after {previous})")
        previous = at_step
        settings = stage.get("set")
        if not isinstance(settings, dict) or not settings:
            raise _fail(origin, f"{where}.set", f"expected a non-empty mapping of dotted keys, got {describe(settings)}")
        checked: dict[str, Any] = {}
        for key, item in settings.items():
            checked[str(key)] = _check_stage_setting(cfg, str(key), item, f"{where}.set.{key}", origin)
        stages.append({"at_step": at_step, "set": checked})
    return stages


def _check_stage_setting(cfg: dict[str, Any], key: str, value: Any, where: str, origin: str) -> Any:
    if not any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in CURRICULUM_KEYS):
        raise _fail(origin, where, "a curriculum may only set " + ", ".join(
            k + "*" if k.endswith(".") else k for k in CURRICULUM_KEYS))
    section, _, leaf = key.partition(".")
    if leaf not in cfg[section]:
        raise _fail(origin, where, f"unknown key {key}{_suggest(leaf, cfg[section])}")
    fld = SECTIONS[section].get(leaf)
    if fld is None:  # a custom task's own loss setting: free-form
        return copy.deepcopy(value)
    try:
        return fld.check(value)
    except Invalid as err:
        raise _fail(origin, where, str(err)) from None


def _check_meta(key: str, value: Any, cfg: dict[str, Any], origin: str) -> Any:
    if key in ("run_id", "name"):
        return _check_leaf({key: value}, key, text(None), key, origin)
    if key == "created_at":
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _fail(origin, key, f"expected a timestamp, got {describe(value)}")
        return value
    if key == "parent":
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("run_id"), str):
            raise _fail(origin, key, f"expected null or {{run_id, checkpoint}}, got {describe(value)}")
        return copy.deepcopy(value)
    return _check_extensions(value, cfg, origin)


def _check_extensions(value: Any, cfg: dict[str, Any], origin: str) -> list[dict[str, int]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(origin, "extensions", f"expected a list of {{at_step, max_steps}}, got {describe(value)}")
    out: list[dict[str, int]] = []
    previous_max = previous_at = 0
    for index, item in enumerate(value):
        where = f"extensions[{index}]"
        if not isinstance(item, dict):
            raise _fail(origin, where, f"expected a mapping {{at_step, max_steps}}, got {describe(item)}")
        entry: dict[str, int] = {}
        for key in item:
            if key not in ("at_step", "max_steps", "from_max_steps"):
                raise _fail(origin, f"{where}.{key}", "unknown key (an extension has: at_step, max_steps, from_max_steps)")
        for key, lo in (("at_step", 0), ("max_steps", 1), ("from_max_steps", 1)):
            if key not in item:
                if key == "from_max_steps":
                    continue
                raise _fail(origin, f"{where}.{key}", "missing")
            try:
                entry[key] = integer(None, lo=lo).check(item[key])
            except Invalid as err:
                raise _fail(origin, f"{where}.{key}", str(err)) from None
        if entry["max_steps"] <= entry["at_step"]:
            raise _fail(origin, f"{where}.max_steps", f"must be greater than at_step ({entry['at_step']})")
        if entry["max_steps"] <= previous_max:
            raise _fail(origin, f"{where}.max_steps", f"must be greater than the previous max_steps ({previous_max})")
        if entry["at_step"] < previous_at:
            raise _fail(origin, f"{where}.at_step", f"extensions must be in step order ({entry['at_step']} after {previous_at})")
        previous_max, previous_at = entry["max_steps"], entry["at_step"]
        out.append(entry)
    return out


# ---------------------------------------------------------------- overrides

def _free_form_sections(cfg: dict[str, Any]) -> tuple[str, ...]:
    return () if cfg.get("task") in BUILTIN_TASKS else ("model", "loss")


def _set_dotted(cfg: dict[str, Any], key: str, value: Any, origin: str, allow_new: tuple[str, ...]) -> None:
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if not isinstance(node, dict):
            raise RunctlError(f"{origin}: --set {key}: {'.'.join(parts[:depth])} is not a mapping")
        if part not in node and not (parts[0] in allow_new and depth >= 1):
            here = ".".join(parts[: depth + 1])
            raise RunctlError(f"{origin}: --set {key}: unknown key {here}{_suggest(part, node)}")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
