"""`runctl [ROOT] [--poll]`: open the UI on ROOT (the default ./runs is created if missing)."""

from __future__ import annotations

import argparse
from pathlib import Path

from runctl.runs.errors import RunctlError
from runctl.runs.layout import DEFAULT_DEPTH


def run(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser()
    if root.exists() and not root.is_dir():
        raise RunctlError(f"{root}: not a directory (ROOT must be a folder of runs)")
    if not root.exists() and getattr(args, "explicit_root", False):
        raise RunctlError(f"{root}: no such folder (`mkdir {root}` first to open a new folder of runs)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunctlError(f"{root}: cannot create the runs folder ({err.strerror})") from None

    from runctl.tui.alerts import AlertSettings
    from runctl.tui.app import make_app

    alerts = AlertSettings(enabled=not getattr(args, "no_alerts", False),
                           bell=not getattr(args, "no_bell", False),
                           desktop=getattr(args, "desktop_notify", None) or "osc9")
    app = make_app(root.resolve(), poll=bool(getattr(args, "poll", False)), alerts=alerts,
                   depth=getattr(args, "depth", DEFAULT_DEPTH), engine=getattr(args, "engine", "thread"))
    code = app.run()
    return int(code or 0)
