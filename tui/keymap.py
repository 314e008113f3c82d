"""User key remapping: ~/.config/runctl/keys.yaml (or $RUNCTL_KEYS) maps binding ids to keys.

    runctl.resume: ctrl+r        # one key
    runctl.stop: "x,ctrl+x"      # several keys, comma-separated

Every Binding in the UI has an id ("runctl.<action>"); the app hands this mapping to
App.set_keymap. A bad file never stops the UI from opening: the caller shows the error.
"""

from __future__ import annotations

import os
from pathlib import Path

from runctl.runs import safe_files
from runctl.runs.errors import RunctlError

ENV_VAR = "RUNCTL_KEYS"


def default_keymap_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(config_home).expanduser() / "runctl" / "keys.yaml"


def load_keymap(path: Path) -> dict[str, str]:
    """The id -> keys mapping in `path`; {} when the file does not exist. RunctlError names the fault."""
    try:
        text = safe_files.read_text(path, limit=1024 * 1024)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise RunctlError(f"{path}: cannot read key map ({err.strerror})") from None
    except UnicodeDecodeError:
        raise RunctlError(f"{path}: key map is not UTF-8 text") from None
    import yaml  # only when there is a key map: most starts have none (first paint)
    from runctl.runs.safe_yaml import load_yaml

    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RunctlError(f"{path}:{where} invalid YAML in key map") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RunctlError(f"{path}: key map must be a mapping of binding id to keys, e.g. 'runctl.resume: ctrl+r'")
    keymap: dict[str, str] = {}
    for binding_id, keys in data.items():
        if not isinstance(binding_id, str):
            raise RunctlError(f"{path}: binding id {binding_id!r} must be a string")
        if isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys):
            keys = ",".join(keys)
        if not isinstance(keys, str) or not keys.strip():
            raise RunctlError(f"{path}: {binding_id}: keys must be a string such as 'ctrl+r' or 'x,ctrl+x'")
        keymap[binding_id] = ",".join(part.strip() for part in keys.split(",") if part.strip())
    return keymap


def unknown_ids(keymap: dict[str, str], known: set[str]) -> list[str]:
    return sorted(binding_id for binding_id in keymap if binding_id not in known)
