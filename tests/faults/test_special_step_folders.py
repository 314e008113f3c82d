"""No file inside a sharded checkpoint can hang runctl: FIFOs, sockets, devices and links planted
among a step folder's files (`.metadata`, `__0_0.distcp`, `runctl.pt`).

One real run of `parallel.strategy: fsdp` in one process (DCP step folders at steps 2 and 4, each
with its manifest entry) is copied per case, and a special file is planted in place of one file of
the newest folder. Each case is driven the way a user meets it: `runctl verify` (quick, full,
deep), `ls`, `summary` and `extend` in a subprocess with a timeout (a blocking open of a FIFO
would hang them for ever), and the run view through Pilot. The folder must be named corrupt with
what the file is, and everything else goes on: the older folder verifies, a resume skips the
newest and trains on from step 2.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import verify_json
from support.run_files import records_by_name
from support.runs import train_finished_run
from support.special_files import assert_extend_skips, assert_listed, make_socket, run_view_table

NEWEST = "step_00000004"
OLDER = "step_00000002"
SHARD = "__0_0.distcp"


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = train_finished_run(tmp_path_factory.mktemp("special-step-folders"),
                                 ["max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=5",
                                  "parallel.strategy=fsdp", "device=cpu"])
    for step_folder in (OLDER, NEWEST):
        names = sorted(p.name for p in (run_dir / "checkpoints" / step_folder).iterdir())
        assert names == [".metadata", SHARD, "runctl.pt"], names  # what DCP and runctl wrote
    return run_dir


def _replace(path: Path) -> None:
    path.unlink()


def _fifo(path: Path, run: Path) -> None:
    _replace(path)
    os.mkfifo(path)


def _socket(path: Path, run: Path) -> None:
    _replace(path)
    make_socket(path)


def _link_to_fifo(path: Path, run: Path) -> None:
    _replace(path)
    os.mkfifo(run.parent.parent / "elsewhere.fifo")
    path.symlink_to(run.parent.parent / "elsewhere.fifo")


def _link_to_dev_zero(path: Path, run: Path) -> None:
    _replace(path)
    path.symlink_to("/dev/zero")


def _link_leaving_the_folder(path: Path, run: Path) -> None:
    outside = run.parent.parent / f"outside{path.name}"
    shutil.copyfile(path, outside)  # the same bytes: only where the link leads is wrong
    _replace(path)
    path.symlink_to(outside)


# case -> (plant, the file of the newest folder it replaces, what the reason says it is)
SPECIAL: dict[str, tuple[Callable[[Path, Path], None], str, str]] = {
    "shard_fifo": (_fifo, SHARD, "fifo"),
    "metadata_fifo": (_fifo, ".metadata", "fifo"),
    "metadata_socket": (_socket, ".metadata", "socket"),
    "shard_link_to_fifo": (_link_to_fifo, SHARD, "link to fifo"),
    "state_link_to_dev_zero": (_link_to_dev_zero, "runctl.pt", "link to character device"),
    "shard_link_leaving": (_link_leaving_the_folder, SHARD, "link leaving the step folder"),
    "metadata_link_leaving": (_link_leaving_the_folder, ".metadata", "link leaving the step folder"),
}
# A resume costs a torch start-up each: the kinds that would block an open are trained past.
TRAINED_CASES = {"shard_fifo", "metadata_fifo", "metadata_socket"}


def copy_run(sharded_run: Path, tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(sharded_run, root / "base", symlinks=True)
    return root / "base"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(SPECIAL))
def test_a_special_file_in_a_step_folder_is_named_and_never_opened(sharded_run: Path, tmp_path: Path,
                                                                   case: str) -> None:
    plant, member, what = SPECIAL[case]
    run = copy_run(sharded_run, tmp_path)
    plant(run / "checkpoints" / NEWEST / member, run)
    reason = f"not a regular file: {member} is a {what}"

    for level in ("quick", "full", "deep"):
        code, document = verify_json(run, cwd=tmp_path, level=level)
        records = records_by_name(document)
        assert records[NEWEST]["status"] == "corrupt" and records[NEWEST]["reason"] == reason, (level, records[NEWEST])
        assert records[OLDER]["status"] == "ok", (level, records[OLDER])
        assert code == 1, (level, code)

    assert_listed(tmp_path / "runs", tmp_path, reason)
    if case in TRAINED_CASES:  # resume skips the newest folder and trains on from step 2 to step 5
        assert_extend_skips(run, tmp_path, NEWEST, reason, final_step=5)


@pytest.mark.timeout(240)
async def test_the_run_view_shows_a_fifo_shard_and_quits(sharded_run: Path, tmp_path: Path) -> None:
    """The UI: the run view of a run whose newest step folder holds a FIFO shard opens, shows
    the folder corrupt with the FIFO named, the older folder ok, and the app quits."""
    run = copy_run(sharded_run, tmp_path)
    _fifo(run / "checkpoints" / NEWEST / SHARD, run)
    table = await run_view_table(tmp_path / "runs", run, tmp_path / "no-keys.yaml",
                                 ready=lambda t: NEWEST in t and OLDER in t and t[OLDER].level in ("full", "deep"))
    assert table[NEWEST].status == "corrupt", table[NEWEST]
    assert table[NEWEST].reason == f"not a regular file: {SHARD} is a fifo", table[NEWEST]
    assert table[OLDER].status == "ok", table[OLDER]
