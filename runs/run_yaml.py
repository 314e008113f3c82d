"""Reading run.yaml without ever raising: the whole file, or just the keys a listing shows."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.layout import RUN_YAML


def read_run_yaml(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """run.yaml as a dict and a problem line if it is missing or garbage; never raises."""
    path = Path(run_dir) / RUN_YAML
    text, problem = _read_text(path)
    if text is None:
        return {}, problem
    return _parse_yaml(text, path)


def _read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        return safe_files.read_text(path), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path}: unreadable ({getattr(exc, 'strerror', None) or exc.__class__.__name__})"


def _parse_yaml(text: str, path: Path) -> tuple[dict[str, Any], str | None]:
    import yaml  # only when a run.yaml is read: keeps `import runs` light
    from runctl.runs.safe_yaml import YAMLBombError, load_yaml

    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        if isinstance(exc, YAMLBombError):
            return {}, f"{path}: {exc.problem}{where}"
        return {}, f"{path}: not valid YAML{where}"
    if data is None:
        return {}, f"{path}: empty"
    if not isinstance(data, dict):
        return {}, f"{path}: not a mapping"
    return data, None


# The run.yaml keys a listing shows; parsing only these is most of what keeps `runctl ls` fast. The
# line is engine.schema.LISTING_KEYS, written by `python -m runctl.engine.config_docs --write`
# (runs/ never imports the engine).
_LISTING_KEYS = frozenset({"run_id", "name", "created_at", "parent", "extensions", "max_steps", "checkpoint"})
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
    simple = _simple_mapping(snippet) if snippet else None
    if simple is not None:
        cfg, problem = simple, None
    else:
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


# The one-line values the engine writes (yaml.safe_dump) for the listing's keys, resolved as
# PyYAML's SafeLoader (YAML 1.1) resolves them. Anything else is left to PyYAML, whose
# constructor is most of the cost of reading 1,000 run.yaml files.
_NULL_WORDS = {"~": None, "null": None, "Null": None, "NULL": None}
_BOOL_WORDS = {word: value for value, words in ((True, "yes Yes YES true True TRUE on On ON"),
                                                 (False, "no No NO false False FALSE off Off OFF"))
               for word in words.split()}
_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
# YAML 1.1 floats need a dot, and an exponent needs its sign ("1e-05" and "1.5e3" are strings).
_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTED = re.compile(r"'([^']*)'|\"([^\"\\]*)\"")
_UNSET = object()


def _simple_mapping(snippet: str) -> dict[str, Any] | None:
    """The top-level `key: value` lines of `snippet` as SafeLoader reads them, or None as soon as
    a line is not one this reader knows exactly (the caller then asks PyYAML)."""
    result: dict[str, Any] = {}
    for line in snippet.splitlines():
        if not line or line[0] == "#":
            continue
        key, colon, rest = line.partition(":")
        if not colon or not _is_key(key) or (rest and rest[0] != " "):
            return None
        value = _simple_value(rest.strip())
        if value is _UNSET:
            return None
        result[key] = value
    return result


def _simple_value(text: str) -> Any:
    if text.startswith("{") and text.endswith("}"):
        inner = text[1:-1].strip()
        if any(c in inner for c in "{}[]'\"#"):
            return _UNSET
        mapping: dict[str, Any] = {}
        for item in inner.split(",") if inner else ():
            key, sep, value = item.strip().partition(": ")
            scalar = _scalar(value.strip()) if sep and _is_key(key) and ":" not in value else _UNSET
            if scalar is _UNSET:
                return _UNSET
            mapping[key] = scalar
        return mapping
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        if any(c in inner for c in "{}[]'\"#:"):
            return _UNSET
        items = [_scalar(item.strip()) if item.strip() else _UNSET for item in inner.split(",")] if inner else []
        return _UNSET if any(item is _UNSET for item in items) else items
    quoted = _QUOTED.fullmatch(text)
    if quoted:
        return quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
    return _scalar(text)


def _scalar(text: str) -> Any:
    """A plain scalar: null, bool, int, float or a word; _UNSET for anything else."""
    if text == "" or text in _NULL_WORDS:
        return None
    if text in _BOOL_WORDS:
        return _BOOL_WORDS[text]
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _WORD.fullmatch(text):
        return text
    return _UNSET


def _is_key(text: str) -> bool:
    return bool(_KEY.fullmatch(text)) and text not in _NULL_WORDS and text not in _BOOL_WORDS
