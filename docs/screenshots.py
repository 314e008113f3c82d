"""Regenerate the README's screenshots from real runs: `python docs/screenshots.py`.

Trains two small built-in runs (one is branched with a different LR), then saves SVGs of the
runs list and the run view exactly as Textual renders them.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runctl.engine import api  # noqa: E402
from runctl.tui.app import make_app  # noqa: E402

OUT = ROOT / "docs" / "img"


def _train_runs(root: Path) -> Path:
    overrides = ["max_steps=400", "eval.every=50", "checkpoint.every=100", "checkpoint.keep_last=10", "log.every=5"]
    base = api.new_run("digits_mlp", root, name="mlp-baseline", overrides=overrides)
    api.train(base)
    branch = api.branch_run(base, "step_00000200.pt", "mlp-lr3e-3", overrides=["optim.lr=3e-3"])
    api.train(branch.run_dir, resume_from="auto")
    cnn = api.new_run("digits_cnn", root, name="cnn-small", overrides=[*overrides, "max_steps=300"])
    api.train(cnn)
    return base


async def _shoot(root: Path, base: Path) -> None:
    app = make_app(root, watch=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(1.5)
        app.save_screenshot(str(OUT / "runs-list.svg"))
        app.open_run(base)
        await pilot.pause(2.5)
        app.save_screenshot(str(OUT / "run-view.svg"))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        root.mkdir()
        base = _train_runs(root)
        asyncio.run(_shoot(root, base))
    print(f"wrote {OUT}/runs-list.svg and run-view.svg")


if __name__ == "__main__":
    main()
