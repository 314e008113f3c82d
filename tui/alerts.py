"""Alerts in the UI: a Textual notification, the terminal bell, and a desktop notification the
terminal raises (OSC 9 or OSC 777), which reaches the user's laptop over SSH in the terminals that
support it. Inside tmux the escape sequence is wrapped in tmux's DCS passthrough (tmux needs
`set -g allow-passthrough on`). Each channel can be turned off (`runctl --no-bell ...`).

The scanning (runs.alerts.AlertScanner) runs on a thread worker of the app; alerts come back as
`AlertRaised` messages and are delivered on the UI thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from runctl.runs.alerts import Alert
from textual.message import Message

DESKTOP_CHOICES = ("osc9", "osc777", "both", "off")
SCAN_SECONDS = 2.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AlertSettings:
    enabled: bool = True     # scan for alerts at all
    toast: bool = True       # a Textual notification
    bell: bool = True        # BEL
    desktop: str = "osc9"    # one of DESKTOP_CHOICES


class AlertRaised(Message):
    def __init__(self, alert: Alert) -> None:
        super().__init__()
        self.alert = alert


def terminal_sequence(alert: Alert, settings: AlertSettings, tmux: bool | None = None) -> str:
    """What to write to the terminal for `alert`: BEL and/or the desktop notification escape."""
    if tmux is None:
        tmux = bool(os.environ.get("TMUX"))
    title = _clean(f"runctl: {alert.run} {alert.kind}")
    body = _clean(alert.message)
    parts = []
    if settings.desktop in ("osc9", "both"):
        parts.append(f"\x1b]9;{title}: {body}\x07")
    if settings.desktop in ("osc777", "both"):
        parts.append(f"\x1b]777;notify;{title.replace(';', ',')};{body.replace(';', ',')}\x07")
    sequence = "".join(_passthrough(p) if tmux else p for p in parts)
    return sequence + ("\x07" if settings.bell else "")


def _passthrough(sequence: str) -> str:
    """tmux's DCS passthrough: ESC P tmux; <sequence with every ESC doubled> ESC \\ ."""
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def _clean(text: str) -> str:
    """No control characters: they would end or corrupt the escape sequence."""
    return _CONTROL.sub(" ", text)[:400]


def severity(alert: Alert) -> str:
    if alert.kind == "finished":
        return "information"
    if alert.kind in ("crashed", "checkpoint_failed", "nan"):
        return "error"
    return "warning"
