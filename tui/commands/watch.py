"""`runctl watch [ROOT] [--notify URL ...] [--exec CMD]`: alerts without a UI.

Scans runctl's runs anywhere under ROOT (down to `--depth` folders, as `runctl ls` finds them)
every `--interval` seconds (runs.alerts) and sends each alert through apprise (the
optional extra `runctl[notify]`: ntfy, Slack, Discord, email, Telegram, a JSON webhook ...) and/or
runs a shell command with the alert in environment variables (RUNCTL_RUN, RUNCTL_RUN_DIR,
RUNCTL_EVENT, RUNCTL_STATE, RUNCTL_STEP, RUNCTL_MESSAGE). Each alert is also one line on stdout.
Runs until SIGINT or SIGTERM (exit 0). Meant for tmux, nohup or a systemd user unit (README).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from runctl.runs.alerts import Alert, AlertScanner
from runctl.runs.errors import RunctlError

# A command that hangs must not stop the alerts after it.
EXEC_TIMEOUT_S = 60.0


def run(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise RunctlError(f"{root}: no such directory")
    if not args.interval > 0:
        raise RunctlError(f"--interval {args.interval:g}: must be more than 0 seconds")
    if not args.window >= 0:
        raise RunctlError(f"--window {args.window:g}: must be 0 or more seconds")
    if args.disk_free_mb is not None and not args.disk_free_mb >= 0:
        raise RunctlError(f"--disk-free-mb {args.disk_free_mb:g}: must be 0 or more")
    senders = [_apprise_sender(args.notify)] if args.notify else []
    if args.exec_cmd:
        senders.append(_exec_sender(args.exec_cmd))
    scanner = AlertScanner(root, window_s=args.window, depth=args.depth,
                           disk_free_bytes=int(args.disk_free_mb * 1024**2) if args.disk_free_mb else None)
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        scanner.scan()  # what is already in the files is history
        print(f"watching {root} (every {args.interval:g} s); Ctrl-C ends", flush=True)
        while not stop.wait(args.interval):
            for alert in scanner.scan():
                print(alert.message, flush=True)
                for send in senders:
                    send(alert)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _apprise_sender(urls: list[str]) -> Callable[[Alert], None]:
    try:
        import apprise
    except ImportError:
        raise RunctlError("--notify needs apprise: pip install 'runctl[notify]' (or pip install apprise)") from None
    notifier = apprise.Apprise()
    for url in urls:
        if not notifier.add(url):
            raise RunctlError(f"--notify {url}: not a notification URL apprise understands")

    def send(alert: Alert) -> None:
        ok = notifier.notify(title=f"runctl: {alert.run} {alert.kind}", body=alert.message,
                             notify_type=_notify_type(apprise, alert.kind))
        if not ok:
            sys.stderr.write(f"runctl: watch: could not deliver to every --notify URL: {alert.message}\n")

    return send


def _notify_type(apprise: Any, kind: str) -> Any:
    if kind == "finished":
        return apprise.NotifyType.SUCCESS
    if kind in ("crashed", "checkpoint_failed", "nan"):
        return apprise.NotifyType.FAILURE
    return apprise.NotifyType.WARNING


def _exec_sender(command: str) -> Callable[[Alert], None]:
    def send(alert: Alert) -> None:
        try:
            done = subprocess.run(command, shell=True, env={**os.environ, **alert.environment()},
                                  timeout=EXEC_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            sys.stderr.write(f"runctl: watch: --exec command still running after {EXEC_TIMEOUT_S:g} s; "
                             "left behind\n")
            return
        if done.returncode != 0:
            sys.stderr.write(f"runctl: watch: --exec command exited {done.returncode} for: {alert.message}\n")

    return send
