"""Reading run.yaml without ever raising: the whole file, or just the keys a listing shows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runs.layout import RUN_YAML


def read_run_yaml(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """run.yaml as a dict and a problem line if it is missing or garbage; never raises."""
    path = Path(run_dir) / RUN_YAML
    text, problem = _read_text(path)
    if text is None:
        return {}, problem
    return _parse_yaml(text, path)


def _read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc.__class__.__name__})"


def _parse_yaml(text: str, path: Path) -> tuple[dict[str, Any], str | None]:
    import yaml  # only when a run.yaml is read: keeps `import runs` light

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return {}, f"{path}: not valid YAML{where}"
    if data is None:
        return {}, f"{path}: empty"
    if not isinstance(data, dict):
        return {}, f"{path}: not a mapping"
    return data, None


# The run.yaml keys a listing shows; parsing only these is most of what keeps `runctl ls` fast.
_LISTING_KEYS = frozenset({"run_id", "name", "created_at", "parent", "max_steps", "checkpoint", "extensions"})
_run_yaml_cache: dict[str, tuple[tuple[int, int, int], dict[str, Any], str | None]] = {}


def run_yaml_for_listing(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The listing's keys of run.yaml, cached per process by file identity (the UI re-lists often).

    Only the top-level entries named in _LISTING_KEYS are parsed (a block mapping's top-level keys
    start at column 0; each entry runs to the next such line). Anything unusual (anchors, tags,
    documents markers, a non-mapping, a parse error) falls back to parsing the whole file, so
    the answer is always what read_run_yaml gives for those keys. The result is shared: read only.
    """
    path = Path(run_dir) / RUN_YAML
    try:
        st = os.stat(path)
    except OSError:
        return read_run_yaml(run_dir)
    key = (st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _run_yaml_cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    text, problem = _read_text(path)
    if text is None:
        return {}, problem
    snippet = _top_level_entries(text, _LISTING_KEYS)
    cfg, problem = _parse_yaml(snippet, path) if snippet else ({}, "no listing keys")
    if problem is not None:
        cfg, problem = _parse_yaml(text, path)
        cfg = {k: v for k, v in cfg.items() if k in _LISTING_KEYS}
    _run_yaml_cache[str(path)] = (key, cfg, problem)
    return cfg, problem


def _top_level_entries(text: str, keys: frozenset[str]) -> str | None:
    """The lines of the top-level entries named `keys`, or None when the text is not a plain block
    mapping this simple cut can handle (the caller then parses everything)."""
    if "&" in text or "!" in text or "\t" in text:
        return None
    kept: list[str] = []
    keep = False
    for line in text.splitlines():
        if not line or line[0] in " #":
            if keep:
                kept.append(line)
            continue
        name, colon, _ = line.partition(":")
        if not colon or line.startswith(("-", "?", "---", "...", "%", "[", "{", "\"", "'")):
            return None
        keep = name in keys
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else None
