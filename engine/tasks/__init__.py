"""Tasks: a model, its data and its loss behind one small protocol (engine/tasks/base.py).

`build_task(cfg)` returns a built-in task (digits_mlp, digits_cnn, digits_vit, char_gpt) or calls
a user's `factory(cfg)` for `task: "package.module:factory"`. Importing this package does not
import torch; building a task does.
"""

from __future__ import annotations

from typing import Any

from runctl.engine.tasks.base import PROTOCOL_MEMBERS, UNITS, Task
from runctl.engine.tasks.custom import load_factory
from runctl.engine.tasks.specs import BUILTIN_TASKS
from runctl.runs.errors import RunctlError

__all__ = ["BUILTIN_TASKS", "Task", "build_task", "load_factory"]


def build_task(cfg: dict[str, Any]) -> Task:
    """The task a resolved config names, checked against the protocol. RunctlError names `task`."""
    name = cfg["task"]
    if name in BUILTIN_TASKS:
        return _build_builtin(name, cfg)
    task = load_factory(name)(cfg)
    _check_protocol(task, name)
    return task


def _build_builtin(name: str, cfg: dict[str, Any]) -> Task:
    if name == "char_gpt":
        from runctl.engine.tasks.char_gpt import CharGPTTask

        return CharGPTTask(cfg)
    from runctl.engine.tasks.digits import DigitsTask

    return DigitsTask(cfg, family=name.removeprefix("digits_"))


def _check_protocol(task: Any, name: str) -> None:
    missing = [member for member in PROTOCOL_MEMBERS if not hasattr(task, member)]
    if missing:
        raise RunctlError(f"task: {name}: the factory's task lacks {', '.join(missing)} "
                          "(see the protocol in engine/tasks/base.py)")
    for member in ("train_size", "val_size"):
        size = getattr(task, member)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise RunctlError(f"task: {name}: {member} must be a positive int, got {size!r}")
    if task.unit not in UNITS:
        raise RunctlError(f"task: {name}: unit must be one of {', '.join(UNITS)}, got {task.unit!r}")
