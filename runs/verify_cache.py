"""Verification results kept between runs of runctl, in the user's cache directory.

Reading a large checkpoint for its CRCs and sha256 takes seconds; the answer holds for as long as
the file is the same version, which (path, size, mtime_ns, inode) identifies. The cache lives in
`$XDG_CACHE_HOME/runctl/` (default `~/.cache/runctl/`), never in a run's folder: runctl writes
nothing into folders it did not create. It is an SQLite file, so several runctl processes can share
it. Any trouble with it (a read-only home, a damaged file, a lock held too long) only means the
file is read again: the cache never decides a verdict.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import orjson

_FILE_NAME = "verify.sqlite3"
_lock = threading.Lock()
_connection: Any = None
_connection_for: tuple[int, str] | None = None   # (pid, cache dir) the connection was opened for
_disabled_for: str | None = None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "runctl"


def _connect() -> Any:
    """The process's connection (reopened after a fork or a change of cache dir), or None."""
    global _connection, _connection_for, _disabled_for
    import sqlite3

    where = str(cache_dir())
    if _disabled_for == where:
        return None
    if _connection is not None and _connection_for == (os.getpid(), where):
        return _connection
    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
        connection = sqlite3.connect(os.path.join(where, _FILE_NAME), timeout=0.5, check_same_thread=False,
                                     isolation_level=None)
        # A cache: losing the last writes in a crash only means reading those files again, so no
        # fsync per result (thousands of files are verified in one command).
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("CREATE TABLE IF NOT EXISTS facts (path TEXT, size INTEGER, mtime_ns INTEGER, "
                           "inode INTEGER, level TEXT, facts TEXT, PRIMARY KEY (path, size, mtime_ns, inode, level))")
    except (OSError, sqlite3.Error):
        _disabled_for = where
        return None
    _connection, _connection_for = connection, (os.getpid(), where)
    return connection


def load(key: tuple[str, int, int, int], level: str) -> dict[str, Any] | None:
    """The stored facts for this file version at exactly `level`, or None."""
    import sqlite3

    with _lock:
        connection = _connect()
        if connection is None:
            return None
        try:
            row = connection.execute(
                "SELECT facts FROM facts WHERE path=? AND size=? AND mtime_ns=? AND inode=? AND level=?",
                (*key, level)).fetchone()
        except sqlite3.Error:
            return None
    if row is None:
        return None
    try:
        data = orjson.loads(row[0])  # a listing looks up every nanoGPT and Lightning checkpoint here
    except orjson.JSONDecodeError:  # NaN, an infinity, an integer past 64 bits: json.dumps writes them
        try:
            data = json.loads(row[0])
        except ValueError:
            return None
    return data if isinstance(data, dict) and data.get("level") == level else None


def store(key: tuple[str, int, int, int], level: str, facts: dict[str, Any]) -> None:
    import sqlite3

    with _lock:
        connection = _connect()
        if connection is None:
            return
        try:
            # Older versions of the same path are dead entries: one row per path and level.
            with connection:  # one transaction
                connection.execute("DELETE FROM facts WHERE path=? AND level=?", (key[0], level))
                connection.execute("INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?, ?, ?)",
                                   (*key, level, json.dumps(facts)))
        except sqlite3.Error:
            return


def clear() -> None:
    """Forget every stored result (the cache file stays)."""
    import sqlite3

    with _lock:
        connection = _connect()
        if connection is None:
            return
        try:
            connection.execute("DELETE FROM facts", ())
        except sqlite3.Error:
            return
