"""`runctl [ROOT] [--poll]`: open the UI on ROOT (the default ./runs is created if missing)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runctl.runs.errors import RunctlError
from runctl.runs.layout import DEFAULT_DEPTH

if TYPE_CHECKING:
    from runctl.tui.app import RunctlApp


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

    code = build_app(root, args).run()
    return int(code or 0)


def build_app(root: Path, args: argparse.Namespace | None = None, **options: Any) -> RunctlApp:
    """The app `runctl ROOT` runs, with `args`' options (or the defaults) and `options` passed on
    to make_app. The first listing starts being read in a child process before the UI's imports
    (tui.early_listing): call this first thing."""
    from runctl.tui.early_listing import EarlyListing
    from runctl.tui.run_rows import QUICK_ROWS

    root = Path(root).resolve()
    depth = getattr(args, "depth", DEFAULT_DEPTH)
    early = EarlyListing.start(root, newest=QUICK_ROWS, depth=depth)

    from runctl.tui.alerts import AlertSettings
    from runctl.tui.app import make_app

    alerts = AlertSettings(enabled=not getattr(args, "no_alerts", False),
                           bell=not getattr(args, "no_bell", False),
                           desktop=getattr(args, "desktop_notify", None) or "osc9")
    return make_app(root, poll=bool(getattr(args, "poll", False)), alerts=alerts, depth=depth,
                    engine=getattr(args, "engine", "thread"), early_listing=early, **options)
