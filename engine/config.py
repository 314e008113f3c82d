"""Load, resolve and validate run configs (YAML) without importing torch.

`load_config(source, overrides)` reads a YAML file or a built-in config (engine/configs/<name>.yaml),
fills every missing key with its default, applies `--set key=value` overrides and validates the
result. Every mistake is a RunctlError of one line, `<file>: <dotted.key>: <what is wrong>`, so the
CLI can refuse a bad config before it creates a run folder or pays for torch.

The schema (keys, defaults, checks) is the model in engine/schema.py. Decisions worth knowing:
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from runctl.engine.fields import describe, suggest
from runctl.engine.schema import CONFIG_KEYS, CURRICULUM_KEYS, RUN_META_KEYS, SECTIONS, first_problem, resolve
from runctl.engine.tasks.custom import factory_problem
from runctl.engine.tasks.specs import BUILTIN_TASKS
from runctl.runs import safe_files
from runctl.runs.errors import RunctlError
from runctl.runs.safe_yaml import load_yaml

__all__ = ["CONFIG_KEYS", "CURRICULUM_KEYS", "RUN_META_KEYS", "SECTIONS", "BuiltinConfig", "apply_overrides",
           "builtin_configs", "load_config", "validate_config"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


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
            value = load_yaml(value_text) if value_text.strip() else None
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
    for key in cfg:
        if not isinstance(key, str):
            raise RunctlError(f"{origin}: {key!r}: config keys must be strings")
    try:
        return resolve(cfg)
    except ValidationError as err:
        key, message = first_problem(err)
        raise _fail(origin, key, message) from None


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
    raise RunctlError(f"{text_source}: no such config file or built-in config{suggest(text_source, builtins)} "
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
        content = safe_files.read_text(path)
    except UnicodeDecodeError:
        raise RunctlError(f"{origin}: not a UTF-8 text file") from None
    except OSError as err:
        raise RunctlError(f"{origin}: cannot read: {err.strerror or err}") from None
    try:
        data = load_yaml(content, _StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise RunctlError(f"{origin}: {where}invalid YAML: {_yaml_problem(err)}") from None
    if data is None:
        raise RunctlError(f"{origin}: the file is empty; a config is a mapping such as `task: digits_mlp`")
    return data


def _fail(origin: str, key: str, message: str) -> RunctlError:
    return RunctlError(f"{origin}: {key}: {message}")


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
            raise RunctlError(f"{origin}: --set {key}: unknown key {here}{suggest(part, node)}")
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
