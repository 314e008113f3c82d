"""The run view's checkpoint table shows a checkpoint that a resume moved to quarantine/.

The quarantine is made by the same store call the engine makes when a resume skips a damaged
newest checkpoint; the row says `quarantined` with the reason, sits beside the new file of the
same step, and offers no delete or verify (the file is outside checkpoints/).
"""

from __future__ import annotations

from pathlib import Path

from runctl.runs.layout import CHECKPOINT_DIR, QUARANTINE_DIR, checkpoint_name
from runctl.runs.store import RunStore
from runctl.tui.widgets.checkpoint_table import CheckpointTable
from support.run_view import make_test_app, write_run
from support.ui import Notifications, select
from support.waiting import pilot_wait_for

REASON = "corrupt (CRC mismatch in record data/0)"

SIZE = (120, 36)


async def test_a_quarantined_checkpoint_is_a_row_with_its_reason(tmp_path: Path) -> None:
    run = write_run(tmp_path, "alpha", step=300, max_steps=400, every=100, keep_last=10,
                    checkpoints=(100, 200, 300))
    store = RunStore(run)
    with store.lock():
        folder = store.set_aside([checkpoint_name(300)], QUARANTINE_DIR, 200,
                                 reasons={checkpoint_name(300): REASON})
    assert folder is not None
    row = f"{QUARANTINE_DIR}/{folder.name}/{checkpoint_name(300)}"
    app = make_test_app(tmp_path, tmp_path)
    notes = Notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run)
        def shown() -> bool:
            tables = app.screen.query(CheckpointTable)
            return bool(tables) and row in tables.first().infos

        await pilot_wait_for(pilot, shown, "the quarantined row")
        screen = app.screen
        table = screen.query_one(CheckpointTable)
        info = table.infos[row]
        assert info.status == "quarantined" and REASON in (info.reason or "") and info.step == 300
        assert (run / CHECKPOINT_DIR / checkpoint_name(300)).exists() is False
        await select(pilot, screen, row)
        for action in ("resume_from", "branch", "verify", "delete"):
            assert screen.check_action(action, ()) is None, action
        await pilot.press("d", "v")
        await pilot.pause()
        assert notes.messages == []
        assert (folder / checkpoint_name(300)).is_file()
