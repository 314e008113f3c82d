"""runs.watch on the runs the real tools wrote, deep under the root: a Lightning checkpoint or
metrics.csv row, a Hugging Face checkpoint-N/, a new version_N/ and a removed output_dir each
become typed changes of the right run, with a real watchdog observer, native and polling."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from runctl.runs.watch import Change, ChangeKind, RunWatcher

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"
WAIT = 10.0
LIGHTNING = "lightning/lightning_logs/version_0"
HF = "hf/out"


class Changes:
    """What the watcher delivered; `wait_for` blocks (bounded) until a matching change arrived."""

    def __init__(self) -> None:
        self.seen: list[Change] = []
        self._cond = threading.Condition()

    def __call__(self, changes: list[Change]) -> None:
        with self._cond:
            self.seen.extend(changes)
            self._cond.notify_all()

    def wait_for(self, kind: ChangeKind, path: Path) -> Change:
        def match() -> Change | None:
            return next((c for c in self.seen if c.kind == kind and c.path == path), None)

        with self._cond:
            assert self._cond.wait_for(match, timeout=WAIT), f"no {kind} for {path}; got {self.seen}"
            return match()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES, root, symlinks=True)
    return root


@pytest.fixture(params=["native", "polling"])
def watching(request: pytest.FixtureRequest, root: Path) -> Iterator[tuple[RunWatcher, Changes]]:
    changes = Changes()
    watcher = RunWatcher(root, changes, poll=request.param == "polling", poll_interval=0.05,
                         discovery_interval=0.2)
    watcher.start()
    assert watcher.mode == request.param
    try:
        yield watcher, changes
    finally:
        watcher.stop()


def test_the_real_tools_runs_are_known_at_start(watching: tuple[RunWatcher, Changes], root: Path) -> None:
    watcher, _ = watching
    known = {path.relative_to(root).as_posix() for path in watcher.known_runs()}
    assert {LIGHTNING, HF, "hf_bin/out", "nanogpt/out-tiny", "tensorboard/runs/Dec03_18-19-31_vm",
            "plain/checkpoints/cnn_deep_mnist", "plain/logs/old-run"} <= known
    assert not any(name.startswith(f"{HF}/") for name in known), "a checkpoint-N/ is part of its run"


def test_a_new_lightning_checkpoint_and_metrics_row(watching: tuple[RunWatcher, Changes], root: Path) -> None:
    _, changes = watching
    run = root / LIGHTNING
    new = run / "checkpoints" / "epoch=2-step=24.ckpt"
    shutil.copyfile(run / "checkpoints" / "epoch=1-step=16.ckpt", new)
    assert changes.wait_for(ChangeKind.CHECKPOINT_ADDED, new).run_dir == run
    with open(run / "metrics.csv", "a") as file:
        file.write("2,17,1.5,\n")
    assert changes.wait_for(ChangeKind.METRICS_APPENDED, run / "metrics.csv").run_dir == run
    (run / "checkpoints" / "epoch=1-step=12.ckpt").unlink()  # save_top_k rotating one out
    changes.wait_for(ChangeKind.CHECKPOINT_REMOVED, run / "checkpoints" / "epoch=1-step=12.ckpt")


def test_a_new_hugging_face_checkpoint_folder(watching: tuple[RunWatcher, Changes], root: Path) -> None:
    _, changes = watching
    run = root / HF
    shutil.copytree(run / "checkpoint-6", run / "checkpoint-8")
    added = changes.wait_for(ChangeKind.CHECKPOINT_ADDED, run / "checkpoint-8" / "model.safetensors")
    assert added.run_dir == run
    changes.wait_for(ChangeKind.METRICS_APPENDED, run / "checkpoint-8" / "trainer_state.json")


def test_runs_appearing_deeper_and_going_away(watching: tuple[RunWatcher, Changes], root: Path) -> None:
    watcher, changes = watching
    version_1 = root / "lightning/lightning_logs/version_1"
    shutil.copytree(root / LIGHTNING, version_1)
    changes.wait_for(ChangeKind.RUN_ADDED, version_1)
    nanogpt = root / "more/nested/out-small"
    shutil.copytree(root / "nanogpt/out-tiny", nanogpt)
    changes.wait_for(ChangeKind.RUN_ADDED, nanogpt)
    shutil.rmtree(root / "hf_bin")
    changes.wait_for(ChangeKind.RUN_REMOVED, root / "hf_bin/out")
    # A file of the new run is its own run's change, not a new run.
    with open(version_1 / "metrics.csv", "a") as file:
        file.write("2,17,1.5,\n")
    assert changes.wait_for(ChangeKind.METRICS_APPENDED, version_1 / "metrics.csv").run_dir == version_1
    assert version_1 in watcher.known_runs() and root / "hf_bin/out" not in watcher.known_runs()
    assert len([c for c in changes.seen if c.kind == ChangeKind.RUN_ADDED and c.run_dir == version_1]) == 1
