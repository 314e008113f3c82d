"""Finding a user's task factory ("package.module:factory").

`factory_problem` answers "would this load?" without executing the user's module (so without
importing torch): it finds the module's file and reads its top-level names. `load_factory` imports
it for real. Both look in the current directory too, as `python -m` would, so a task module next to
the config works without PYTHONPATH.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from runctl.runs.errors import RunctlError


def split_spec(spec: str) -> tuple[str, str]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RunctlError(f"task: {spec!r}: a custom task is \"package.module:factory\"")
    return module_name, attr


def _cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after everything else: never shadows an installed module


def factory_problem(spec: str) -> str | None:
    """Why `spec` cannot load (module not found, no such top-level name), or None if it looks fine.

    Only the module's parent packages are imported (as find_spec must); the module itself is parsed,
    not run. A module that defines names dynamically (`__getattr__`, `import *`) gets the benefit
    of the doubt.
    """
    module_name, attr = split_spec(spec)
    _cwd_on_path()
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as err:
        return f"cannot import {module_name} ({err}); is it installed, on PYTHONPATH or in the current directory?"
    except Exception as err:  # a parent package's __init__ failed: report it, do not crash the CLI
        return f"importing the parents of {module_name} failed: {err.__class__.__name__}: {err}"
    if found is None:
        return f"cannot find module {module_name}; is it installed, on PYTHONPATH or in the current directory?"
    origin = found.origin
    if not origin or not origin.endswith(".py"):
        return None  # a namespace package or compiled module: only importing can tell
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"), filename=origin)
    except (OSError, UnicodeDecodeError, SyntaxError) as err:
        return f"{origin}: cannot be read as Python ({err.__class__.__name__}: {err})"
    if attr in _top_level_names(tree) or _defines_names_dynamically(tree):
        return None
    return f"module {module_name} ({origin}) has no top-level {attr}"


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.If | ast.Try | ast.With):  # definitions under `if`/`try` count too
            inner = ast.Module(body=[n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)],
                               type_ignores=[])
            names |= _top_level_names(inner)
    return names


def _defines_names_dynamically(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
            return True
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return True
        if isinstance(node, ast.Name) and node.id in ("globals", "setattr"):
            return True
    return False


def load_factory(spec: str) -> Any:
    """Import `package.module` of "package.module:factory" and return its callable `factory`."""
    module_name, attr = split_spec(spec)
    _cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RunctlError(f"task: {spec}: cannot import {module_name} ({err}); is it installed, "
                          "on PYTHONPATH or in the current directory?") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise RunctlError(f"task: {spec}: module {module_name} has no {attr}")
    if not callable(factory):
        raise RunctlError(f"task: {spec}: {attr} is not callable")
    return factory
