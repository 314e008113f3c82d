"""A run's state as a reader should believe it: status.json, checked against the lock and heartbeat.

An engine killed with SIGKILL cannot rewrite its status.json, so "running" is only believed while
the run's lock is held and the heartbeat is fresh; otherwise the run shows as interrupted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from runctl.runs import safe_files
from runctl.runs.layout import LIVE_STATES, STATES, STATUS_JSON
from runctl.runs.lock import is_locked

# The engine beats at least every 5 s; six missed beats means it is gone.
HEARTBEAT_STALE_SECONDS = 30.0


def read_status(run_dir: Path) -> dict[str, Any]:
    """status.json as a dict; never raises.

    A missing file gives {}; an unreadable or garbage one gives {"state": "unknown",
    "problem": "<file>: <what is wrong>"}.
    """
    path = Path(run_dir) / STATUS_JSON
    try:
        status = safe_files.read_json(path)
    except FileNotFoundError:
        return {}
    except safe_files.NotRegularFile as exc:
        return {"state": "unknown", "problem": f"{path}: {exc.strerror}"}
    except OSError as exc:
        return {"state": "unknown", "problem": f"{path}: unreadable ({exc.strerror or exc.__class__.__name__})"}
    except ValueError:  # UnicodeDecodeError included
        return {"state": "unknown", "problem": f"{path}: not valid JSON"}
    if not isinstance(status, dict):
        return {"state": "unknown", "problem": f"{path}: not a JSON object"}
    state = status.get("state")
    if state not in STATES:
        status["problem"] = f"{path}: unknown state {state!r}"
        status["state"] = "unknown"
    return status


def heartbeat_age(status: dict[str, Any], now: float | None = None) -> float | None:
    beat = status.get("heartbeat_at")
    if not isinstance(beat, (int, float)) or isinstance(beat, bool):
        return None
    return (time.time() if now is None else now) - float(beat)


def effective_state(status: dict[str, Any], run_dir: Path, now: float | None = None) -> str:
    """The state to show: a "running" (or "stalled") run whose lock is free or heartbeat stale was
    killed. Stalled: the engine's heartbeat is fresh but its step has not advanced (engine.stall)."""
    state = status.get("state")
    if not isinstance(state, str) or state not in STATES:
        return "unknown"
    if state not in LIVE_STATES:
        return state
    age = heartbeat_age(status, now)
    if age is None or age > HEARTBEAT_STALE_SECONDS or not is_locked(Path(run_dir)):
        return "interrupted"
    return state


def error_line(status: dict[str, Any]) -> str | None:
    """The crash's last line (status.json "error" may hold a whole traceback)."""
    error = status.get("error")
    if not isinstance(error, str) or not error.strip():
        return None
    return error.strip().splitlines()[-1].strip()
