"""Alerts in the UI: a run that finishes while the app watches shows a notification; the bytes for
the terminal are BEL plus OSC 9 / OSC 777, wrapped in tmux's passthrough inside tmux."""

from __future__ import annotations

import threading
from pathlib import Path

from runctl.runs.alerts import Alert
from runctl.tui.alerts import AlertSettings, terminal_sequence
from runctl.tui.app import make_app
from support.runs import engine_run
from support.ui import Notifications
from support.waiting import pilot_wait_for

ALERT = Alert(Path("/runs/mlp-a"), "mlp-a", "crashed", "crashed", 12, "mlp-a crashed at step 12: boom\x1b]0;x")


async def test_a_run_finishing_while_the_app_watches_is_a_notification(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    engine_run(root, "before", max_steps=2, finished=True)  # history: no alert
    app = make_app(root, watch=False, keymap_path=tmp_path / "no-keys.yaml", alerts=AlertSettings())
    async with app.run_test(size=(120, 36)) as pilot:
        seen = Notifications(app)
        trained = threading.Thread(target=engine_run, args=(root, "after"),
                                   kwargs={"max_steps": 3, "finished": True})
        trained.start()
        await pilot_wait_for(pilot, lambda: bool(seen.matching("after finished at step 3")), "the finished alert")
        trained.join()
        assert not seen.matching("before")


def test_terminal_sequences() -> None:
    plain = terminal_sequence(ALERT, AlertSettings(desktop="osc9"), tmux=False)
    assert plain == "\x1b]9;runctl: mlp-a crashed: mlp-a crashed at step 12: boom ]0;x\x07\x07"  # no ESC inside
    both = terminal_sequence(ALERT, AlertSettings(desktop="both", bell=False), tmux=False)
    assert both == ("\x1b]9;runctl: mlp-a crashed: mlp-a crashed at step 12: boom ]0,x\x07".replace("0,x", "0;x")
                    + "\x1b]777;notify;runctl: mlp-a crashed;mlp-a crashed at step 12: boom ]0,x\x07")
    wrapped = terminal_sequence(ALERT, AlertSettings(desktop="osc777"), tmux=True)
    assert wrapped == ("\x1bPtmux;\x1b\x1b]777;notify;runctl: mlp-a crashed;mlp-a crashed at step 12: boom ]0,x"
                       "\x07\x1b\\\x07")
    assert terminal_sequence(ALERT, AlertSettings(desktop="off", bell=False), tmux=False) == ""
