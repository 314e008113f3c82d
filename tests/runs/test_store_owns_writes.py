"""Only runs/store.py changes a run folder: no other module renames, replaces or removes files,
writes a manifest or writes a file in place.

A scan of the installed source (engine/, runs/, tui/, runctl/) for the calls that do those
things; the few legitimate ones elsewhere are listed below with the reason they are not a change
to a run folder's contents. A newcomer who adds such a call gets this test's message pointing at
runs/store.py; an allow-list entry that no longer matches anything fails too, so the list stays true.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("engine", "runs", "tui", "runctl")
OWNER = "runs/store.py"

# Calls by function name, whatever they are called on (Path.unlink, os.unlink, ...).
DESTRUCTIVE_METHODS = {"unlink", "rename", "rmdir", "rmtree", "removedirs", "write_text", "write_bytes"}
# Calls that need their module to be recognisable (list.remove and str.replace are harmless).
DESTRUCTIVE_OS = {"replace", "remove", "rename", "unlink", "rmdir", "removedirs"}
DESTRUCTIVE_SHUTIL = {"move", "rmtree"}
# Writers that put a whole file in place; only the store may aim them at a run folder.
WRITERS = {"write_manifest", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "remove_stale_temps"}

ALLOWED: dict[tuple[str, str], str] = {
    ("runs/atomic.py", "os.replace"): "the atomic-write primitive itself (temp file over its final name)",
    ("runs/atomic.py", "unlink"): "removes its own temp file after a failed write, and stale temps",
    ("runs/atomic.py", "os.unlink"): "remove_stale_temps, the primitive behind RunStore.clean_temps",
    ("runs/atomic.py", "atomic_write"): "atomic_write_bytes is built on atomic_write",
    ("runs/atomic.py", "atomic_write_bytes"): "atomic_write_text is built on atomic_write_bytes",
    ("runs/atomic.py", "atomic_write_text"): "atomic_write_json is built on atomic_write_text",
    ("runs/manifest.py", "atomic_write_json"): "write_manifest, the primitive RunStore calls",
    ("engine/control.py", "atomic_write_json"): "one control command, one new file in control/: "
                                                "no other write depends on it",
    ("engine/control.py", "unlink"): "the engine deletes each control command it has acted on",
    ("tui/commands/archive.py", "atomic_write"): "export writes the user's --out zip, outside any run",
    ("tui/commands/archive.py", "shutil.rmtree"): "import removes its own staging folder (never a run; "
                                                  "the run is renamed out of it by RunStore.adopt)",
    ("engine/config_docs.py", "write_text"): "a developer tool rewriting the repository's docs "
                                              "(README, ARCHITECTURE), never a run",
    ("engine/tasks/idx.py", "write_bytes"): "write_idx writes a dataset file where its caller asks, "
                                            "not into a run",
}


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id if func.id in WRITERS else None
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if owner == "os" and func.attr in DESTRUCTIVE_OS:
        return f"os.{func.attr}"
    if owner == "shutil" and func.attr in DESTRUCTIVE_SHUTIL:
        return f"shutil.{func.attr}"
    if func.attr in WRITERS:
        return func.attr
    if func.attr in DESTRUCTIVE_METHODS:
        return func.attr
    # Path.replace(target) takes one argument; str.replace(old, new) takes two or three.
    if func.attr == "replace" and len(call.args) == 1 and not call.keywords:
        return "replace"
    return None


def _calls() -> list[tuple[str, int, str]]:
    found = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and (name := _call_name(node)) is not None:
                    found.append((relative, node.lineno, name))
    return found


def test_only_the_store_renames_removes_or_rewrites_files() -> None:
    calls = _calls()
    offending = [f"{file}:{line}: {name}()" for file, line, name in calls
                 if file != OWNER and (file, name) not in ALLOWED]
    assert not offending, (
        "these calls change files outside runs/store.py; a run folder is changed only through "
        "RunStore (add a method there, with its order of writes in the module docstring), or, if "
        "the file is not part of a run folder, add it to ALLOWED with the reason:\n  "
        + "\n  ".join(offending))


def test_every_allowed_call_still_exists() -> None:
    present = {(file, name) for file, _, name in _calls()}
    stale = sorted(set(ALLOWED) - present)
    assert not stale, f"allow-list entries that match no call any more (remove them): {stale}"


def test_the_scan_sees_the_calls_it_looks_for() -> None:
    source = ("import os, shutil\nos.replace(a, b)\np.unlink()\nshutil.rmtree(d)\nwrite_manifest(d, m)\n"
              "p.replace(q)\n'x'.replace('a', 'b')\nitems.remove(x)\n")
    names = [_call_name(node) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    assert sorted(n for n in names if n) == ["os.replace", "replace", "shutil.rmtree", "unlink",
                                             "write_manifest"]
