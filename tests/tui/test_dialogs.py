"""The run view's dialogs: extend (target rules, LR preview), branch (validation), confirm delete,
and the delete itself. Each dialog runs on a bare host App: it needs nothing of the main app."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from runctl.engine.config import load_config
from runctl.runs.errors import RunctlError
from runctl.runs.layout import CHECKPOINT_DIR, RUN_YAML
from runctl.runs.lock import RunLock
from runctl.runs.manifest import read_manifest, write_manifest
from runctl.tui.screens.branch_dialog import (
    BranchDialog,
    BranchRequest,
    build_request,
    config_text,
    parse_overrides,
)
from runctl.tui.screens.confirm_delete import ConfirmDeleteScreen, delete_checkpoint
from runctl.tui.screens.extend_dialog import ExtendDialog, check_target, parse_target, sampled_curves
from support.run_view import write_run
from textual.app import App
from textual.widgets import Button, Input, Label, Switch, TextArea
from textual_plotext import PlotextPlot

NO_RESULT = object()


class DialogHost(App):
    """Pushes one dialog and keeps what it dismissed with."""

    def __init__(self, dialog: Any) -> None:
        super().__init__()
        self.dialog = dialog
        self.result: Any = NO_RESULT
        self.live_clock = False  # as make_app with a fixed clock: no blinking cursors

    def on_mount(self) -> None:
        self.push_screen(self.dialog, self._dismissed)

    def _dismissed(self, result: Any) -> None:
        self.result = result


def run_cfg(max_steps: int = 400) -> dict[str, Any]:
    cfg = load_config("digits_mlp", [f"max_steps={max_steps}", "schedule.warmup_steps=20"])
    return {**cfg, "run_id": "alpha", "name": "alpha", "created_at": 0.0, "parent": None, "extensions": []}


# ------------------------------------------------------------------------------ extend

def test_parse_target_reads_plus_n_and_n() -> None:
    assert parse_target("+100", 400) == 500
    assert parse_target(" 1_000 ", 400) == 1000
    for bad in ("", "abc", "+0", "-5", "1.5"):
        with pytest.raises(ValueError):
            parse_target(bad, 400)


def test_check_target_refuses_what_the_engine_refuses() -> None:
    cfg = run_cfg(400)
    check_target(cfg, 300, 500)
    with pytest.raises(ValueError, match="current step"):
        check_target(cfg, 300, 300)
    with pytest.raises(ValueError, match="max_steps"):
        check_target(cfg, 300, 350)


def test_sampled_curves_match_before_the_extension_and_decay_after() -> None:
    (old_x, old_y), (new_x, new_y) = sampled_curves(run_cfg(400), 300, 800, points=100)
    assert old_x[-1] == 399 and new_x[-1] == 799
    shared = [i for i, step in enumerate(new_x) if step < 300 and step in old_x]
    assert shared and all(new_y[i] == old_y[old_x.index(new_x[i])] for i in shared)
    after = [y for x, y in zip(new_x, new_y, strict=True) if x >= 300]
    assert after == sorted(after, reverse=True)  # a cosine decay, no second warmup


async def test_extend_dialog_validates_previews_and_returns_the_new_max_steps() -> None:
    host = DialogHost(ExtendDialog("alpha", run_cfg(400), current_step=300))
    async with host.run_test(size=(90, 30)) as pilot:
        dialog = host.dialog
        confirm = dialog.query_one("#confirm", Button)
        verdict = dialog.query_one("#verdict", Label)
        await pilot.press("2", "0", "0")  # below the current step
        assert confirm.disabled and "current step (300)" in str(verdict.render())
        await pilot.press("enter")
        assert host.result is NO_RESULT  # refused in the dialog
        dialog.query_one("#target", Input).value = ""
        await pilot.press("+", "1", "0", "0")
        await pilot.pause()
        assert not confirm.disabled and "400 -> 500" in str(verdict.render())
        assert dialog.previewed == 500
        chart = dialog.query_one("#lr-preview", PlotextPlot)
        assert "extended" in chart.plt.build()  # the legend names both curves
        await pilot.press("enter")
        await pilot.pause()
        assert host.result == 500


async def test_extend_dialog_escape_cancels() -> None:
    host = DialogHost(ExtendDialog("alpha", run_cfg(400), current_step=300))
    async with host.run_test(size=(90, 30)) as pilot:
        await pilot.press("escape")
        await pilot.pause()
        assert host.result is None


# ------------------------------------------------------------------------------ branch

def test_parse_overrides() -> None:
    assert parse_overrides("optim.lr=3e-4  'loss.aux_weight=0.1'") == ["optim.lr=3e-4", "loss.aux_weight=0.1"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides("optim.lr")


def test_build_request_validates_name_overrides_and_yaml() -> None:
    original = config_text(run_cfg())
    assert "run_id" not in original and "max_steps: 400" in original
    request = build_request("alpha-b", "optim.lr=5e-4", original, original, weights_only=True)
    assert request == BranchRequest("alpha-b", ["optim.lr=5e-4"], None, True)

    edited = original.replace("max_steps: 400", "max_steps: 900")
    assert build_request("alpha-b", "", edited, original, False).config_yaml == edited

    with pytest.raises(ValueError, match="name"):
        build_request("../escape", "", original, original, False)
    with pytest.raises(ValueError, match="optim.lrr"):
        build_request("alpha-b", "optim.lrr=1", original, original, False)
    with pytest.raises(ValueError, match="not valid YAML"):
        build_request("alpha-b", "", "model: [", original, False)
    with pytest.raises(ValueError, match="optimm"):
        build_request("alpha-b", "", original + "optimm: {}\n", original, False)


async def test_branch_dialog_shows_errors_in_place_and_returns_a_request() -> None:
    host = DialogHost(BranchDialog("alpha", "step_00000300.pt", 300, run_cfg()))
    async with host.run_test(size=(110, 40)) as pilot:
        dialog = host.dialog
        assert dialog.query_one("#name", Input).value == "alpha-s300"
        assert "max_steps: 400" in dialog.query_one("#config", TextArea).text
        dialog.query_one("#overrides", Input).value = "nonsense"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert host.result is NO_RESULT
        assert "KEY=VALUE" in str(dialog.query_one("#verdict", Label).render())
        dialog.query_one("#overrides", Input).value = "optim.lr=5e-4"
        dialog.query_one("#weights-only", Switch).value = True
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert host.result == BranchRequest("alpha-s300", ["optim.lr=5e-4"], None, True)


# ------------------------------------------------------------------------------ delete

@pytest.mark.parametrize(("keys", "expected"), [(("y",), True), (("n",), False), (("escape",), False)])
async def test_confirm_delete_answers(keys: tuple[str, ...], expected: bool) -> None:
    host = DialogHost(ConfirmDeleteScreen("step_00000100.pt", "step 100, periodic"))
    async with host.run_test(size=(80, 20)) as pilot:
        await pilot.press(*keys)
        await pilot.pause()
        assert host.result is expected


def test_delete_checkpoint_removes_file_and_manifest_entry(tmp_path: Path) -> None:
    run = write_run(tmp_path, "alpha")
    ckpt_dir = run / CHECKPOINT_DIR
    manifest = read_manifest(ckpt_dir)
    manifest.best = {"file": "step_00000200.pt", "metric": "val/loss", "value": 0.3, "step": 200}
    write_manifest(ckpt_dir, manifest)

    delete_checkpoint(run, "step_00000200.pt")

    after = read_manifest(ckpt_dir)
    assert not (ckpt_dir / "step_00000200.pt").exists()
    assert set(after.files) == {"step_00000100.pt", "step_00000300.pt"}
    assert after.best is None
    data = (ckpt_dir / "step_00000300.pt").read_bytes()
    assert after.files["step_00000300.pt"].sha256 == hashlib.sha256(data).hexdigest()


def test_delete_checkpoint_refuses_a_locked_run_and_bad_names(tmp_path: Path) -> None:
    run = write_run(tmp_path, "alpha")
    with RunLock(run), pytest.raises(RunctlError, match="locked"):
        delete_checkpoint(run, "step_00000100.pt")
    assert (run / CHECKPOINT_DIR / "step_00000100.pt").is_file()
    for bad in ("step_00000999.pt", "../run.yaml", "manifest/../x"):
        with pytest.raises(RunctlError):
            delete_checkpoint(run, bad)
    assert (run / RUN_YAML).is_file()
    assert yaml.safe_load((run / RUN_YAML).read_text())["name"] == "alpha"
