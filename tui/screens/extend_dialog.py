"""The extend dialog: how far to extend a run, with the old and new LR schedules plotted before confirming.

The user types `+N` (add N steps) or `N` (extend to step N). The new end must lie beyond both the
current step and the current max_steps (engine.schedule.extend_config's rule, so the dialog and the
engine refuse the same things). The preview samples both schedules at a few hundred steps, so it
stays instant for runs of millions of steps.
"""

from __future__ import annotations

from typing import Any

from runctl.engine.schedule import Schedule, extend_config
from runctl.tui.frame_timer import SteadyFrames
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label
from textual_plotext import PlotextPlot

PREVIEW_POINTS = 240


def parse_target(text: str, max_steps: int) -> int:
    """`+N` -> max_steps + N, `N` -> N; ValueError with a one-line reason otherwise."""
    raw = text.strip().replace("_", "").replace(",", "")
    if not raw:
        raise ValueError("type +N to add N steps, or N to extend to step N")
    relative = raw.startswith("+")
    digits = raw[1:] if relative else raw
    if not digits.isdigit():
        raise ValueError(f"{text.strip()!r} is not a whole number of steps")
    value = int(digits)
    if relative and value == 0:
        raise ValueError("add at least one step")
    return max_steps + value if relative else value


def check_target(cfg: dict[str, Any], current_step: int, target: int) -> None:
    """Raise ValueError when extending to `target` is not allowed (same rule as the engine)."""
    extend_config(cfg, current_step, target)


def sampled_curves(cfg: dict[str, Any], current_step: int, target: int,
                   points: int = PREVIEW_POINTS) -> tuple[tuple[list[int], list[float]], tuple[list[int], list[float]]]:
    """(steps, lr) of the schedule as it is and as it would be after extending, sampled evenly."""
    before = Schedule.from_config(cfg)
    after = before.extended(current_step, target)

    def sample(schedule: Schedule, end: int) -> tuple[list[int], list[float]]:
        stride = max(1, end // points)
        steps = list(range(0, end, stride))
        if steps[-1] != end - 1:
            steps.append(end - 1)
        return steps, [schedule.lr(step) for step in steps]

    return sample(before, before.end_step), sample(after, target)


class ExtendDialog(SteadyFrames, ModalScreen[int | None]):
    """Dismisses with the new max_steps, or None when cancelled."""

    CSS_PATH = "../styles/dialogs.tcss"

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="runctl.dialog.cancel"),
    ]

    def __init__(self, run_name: str, cfg: dict[str, Any], current_step: int) -> None:
        super().__init__()
        self.run_name = run_name
        self.cfg = cfg
        self.current_step = current_step
        self.max_steps = int(cfg["max_steps"])
        self.target: int | None = None
        self.previewed: int | None = None  # the target the LR preview currently shows

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog -extend"):
            yield Label(f"Extend {self.run_name}", classes="dialog-title")
            yield Label(f"now at step {self.current_step} of max_steps {self.max_steps}",
                        classes="dialog-detail")
            yield Input(placeholder="+N adds N steps; N extends to step N", id="target")
            yield Label("", id="verdict", classes="dialog-hint")
            yield PlotextPlot(id="lr-preview")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Extend", variant="primary", id="confirm", disabled=True)
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        target = self.query_one("#target", Input)
        # A fixed clock (tests, snapshots) means nothing may change by itself: no blinking cursor.
        target.cursor_blink = getattr(self.app, "live_clock", True)
        target.focus()
        self._preview(None)

    @on(Input.Changed, "#target")
    def _target_changed(self, event: Input.Changed) -> None:
        verdict = self.query_one("#verdict", Label)
        try:
            target = parse_target(event.value, self.max_steps)
            check_target(self.cfg, self.current_step, target)
        except ValueError as err:
            self.target = None
            verdict.update(str(err) if event.value.strip() else "")
            verdict.set_class(bool(event.value.strip()), "-error")
            self.query_one("#confirm", Button).disabled = True
            self._preview(None)
            return
        self.target = target
        verdict.update(f"max_steps {self.max_steps} -> {target} (+{target - self.max_steps} steps)")
        verdict.set_class(False, "-error")
        self.query_one("#confirm", Button).disabled = False
        self._preview(target)

    @on(Input.Submitted, "#target")
    def _target_submitted(self) -> None:
        if self.target is not None:
            self.dismiss(self.target)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm" and self.target is not None:
            self.dismiss(self.target)
        elif event.button.id == "cancel":
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _preview(self, target: int | None) -> None:
        chart = self.query_one("#lr-preview", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.title("learning rate: current schedule" + (" vs extended" if target else ""))
        plt.xlabel("step")
        try:
            if target is None:
                before = Schedule.from_config(self.cfg)
                end = before.end_step
                stride = max(1, end // PREVIEW_POINTS)
                steps = list(range(0, end, stride))
                plt.plot(steps, [before.lr(s) for s in steps], label="current", color="cyan", marker="braille")
            else:
                (old_x, old_y), (new_x, new_y) = sampled_curves(self.cfg, self.current_step, target)
                plt.plot(new_x, new_y, label="extended", color="orange", marker="braille")
                plt.plot(old_x, old_y, label="current", color="cyan", marker="braille")
                plt.vertical_line(self.current_step, color="gray")
        except (KeyError, TypeError, ValueError) as err:
            self.previewed = None
            plt.title(f"no LR preview: {err}")
        else:
            self.previewed = target
        chart.refresh()
