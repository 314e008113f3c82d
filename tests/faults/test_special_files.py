"""No file in a run folder can hang runctl: FIFOs, sockets, devices, folders and links among the files.

One real run (4 steps, checkpoints at 2 and 4) is copied per case, and a special file is planted
as the newest checkpoint (step 6) or in place of a run file. Each case is driven the way a user
meets it: `runctl verify/ls/summary/extend` in a subprocess with a timeout (a blocking open of a
FIFO would hang them for ever), and the UI through Pilot: open the run view, see the badge, quit.
Every case must name what the file is (`not a regular file: fifo`) and go on with the rest.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import run_cli, verify_json
from support.run_files import records_by_name
from support.runs import train_finished_run
from support.special_files import TIMEOUT, assert_extend_skips, assert_listed, make_socket, run_view_table

NEWEST = "step_00000006.pt"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_finished_run(tmp_path_factory.mktemp("special"),
                              ["max_steps=4", "checkpoint.every=2", "checkpoint.async=false"])


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / "base")
    return root / "base"


def _fifo(path: Path, run: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path, run: Path) -> None:
    make_socket(path)


def _link_to_fifo(path: Path, run: Path) -> None:
    os.mkfifo(run.parent.parent / "elsewhere.fifo")
    path.symlink_to(run.parent.parent / "elsewhere.fifo")


def _link_to_dev_zero(path: Path, run: Path) -> None:
    path.symlink_to("/dev/zero")


def _link_to_dev_null(path: Path, run: Path) -> None:
    path.symlink_to("/dev/null")


def _folder(path: Path, run: Path) -> None:
    path.mkdir()
    (path / "shard_0.pt").write_bytes(b"x")


def _dangling_link(path: Path, run: Path) -> None:
    path.symlink_to(run / "checkpoints" / "no_such_file.pt")


def _link_leaving_the_run(path: Path, run: Path) -> None:
    outside = run.parent.parent / "outside.pt"
    shutil.copyfile(run / "checkpoints" / "step_00000004.pt", outside)
    path.symlink_to(outside)


# plant -> (reason after "not a regular file: ", status)
SPECIAL: dict[str, tuple[Callable[[Path, Path], None], str, str]] = {
    "fifo": (_fifo, "fifo", "corrupt"),
    "socket": (_socket, "socket", "corrupt"),
    "link_to_fifo": (_link_to_fifo, "link to fifo", "corrupt"),
    "link_to_dev_zero": (_link_to_dev_zero, "link to character device", "corrupt"),
    "link_to_dev_null": (_link_to_dev_null, "link to character device", "corrupt"),
    "folder": (_folder, "directory", "unchecked"),
    "dangling_link": (_dangling_link, "dangling link", "corrupt"),
    "link_leaving_the_run": (_link_leaving_the_run, "link leaving the run folder", "corrupt"),
}


# Training on past the special file (extend: resume's choice of checkpoint) costs a torch start-up
# each; the kinds that used to hang an open, or would read for ever, are trained past.
TRAINED_CASES = {"fifo", "link_to_dev_zero", "dangling_link", "folder"}


@pytest.mark.parametrize("case", list(SPECIAL))
def test_a_special_checkpoint_is_named_and_never_opened(finished_run: Path, tmp_path: Path, case: str) -> None:
    plant, what, expected_status = SPECIAL[case]
    run = copy_run(finished_run, tmp_path)
    plant(run / "checkpoints" / NEWEST, run)
    reason = f"not a regular file: {what}"

    for level in ("quick", "deep"):
        code, document = verify_json(run, cwd=tmp_path, level=level)
        records = records_by_name(document)
        assert records[NEWEST]["status"] == expected_status and records[NEWEST]["reason"] == reason, records[NEWEST]
        assert records["step_00000004.pt"]["status"] == "ok" and records["step_00000002.pt"]["status"] == "ok"
        assert code == (1 if expected_status == "corrupt" else 0), (level, code)

    assert_listed(tmp_path / "runs", tmp_path, reason if expected_status == "corrupt" else None)
    # extend (full verification): resume skips the special file, says why, and trains on from
    # step 4 to a final checkpoint at step 5
    if case in TRAINED_CASES:
        assert_extend_skips(run, tmp_path, NEWEST, reason, final_step=5)


def test_special_run_files_do_not_stop_listing(finished_run: Path, tmp_path: Path) -> None:
    """status.json a FIFO, metrics.jsonl a link to /dev/zero, events.jsonl a socket, run.yaml a
    FIFO in a second run, manifest.json a link to /dev/zero: every command answers and names them."""
    run = copy_run(finished_run, tmp_path)
    other = tmp_path / "runs" / "other"
    shutil.copytree(run, other)
    for name in ("status.json", "metrics.jsonl", "events.jsonl"):
        (run / name).unlink()
    os.mkfifo(run / "status.json")
    (run / "metrics.jsonl").symlink_to("/dev/zero")
    _socket(run / "events.jsonl", run)
    (other / "run.yaml").unlink()
    os.mkfifo(other / "run.yaml")
    (other / "checkpoints" / "manifest.json").unlink()
    (other / "checkpoints" / "manifest.json").symlink_to("/dev/zero")

    done = run_cli(["ls", tmp_path / "runs", "--json"], cwd=tmp_path, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    runs = {Path(r["path"]).name: r for r in json.loads(done.stdout)["runs"]}
    problems = " ".join(runs["base"]["problems"])
    assert "status.json: not a regular file: fifo" in problems, problems
    other_problems = " ".join(runs["other"]["problems"])
    assert "run.yaml" in other_problems and "not a regular file: fifo" in other_problems, other_problems
    assert "manifest.json" in other_problems and "character device" in other_problems, other_problems
    for args in (["summary", tmp_path / "runs"], ["verify", tmp_path / "runs"], ["ls", tmp_path / "runs"]):
        done = run_cli(args, cwd=tmp_path, timeout=TIMEOUT)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, (args, done.stderr)


def test_huge_logs_are_not_slurped(finished_run: Path, tmp_path: Path) -> None:
    """A 10 GB metrics.jsonl (sparse: no disk used) of one endless line: ls and summary answer."""
    run = copy_run(finished_run, tmp_path)
    with open(run / "metrics.jsonl", "r+b") as f:
        f.truncate(10 * 2**30)
    for args in (["ls", tmp_path / "runs", "--json"], ["summary", tmp_path / "runs", "--json"]):
        done = run_cli(args, cwd=tmp_path, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr


@pytest.mark.timeout(180)
async def test_the_run_view_shows_special_files_and_quits(finished_run: Path, tmp_path: Path) -> None:
    """The UI: the run view of a run with a FIFO checkpoint, a FIFO metrics.jsonl and a /dev/zero
    events.jsonl opens, shows the FIFO's badge reason, and the app quits."""
    run = copy_run(finished_run, tmp_path)
    os.mkfifo(run / "checkpoints" / NEWEST)
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    (run / "events.jsonl").unlink()
    (run / "events.jsonl").symlink_to("/dev/zero")
    table = await run_view_table(tmp_path / "runs", run, tmp_path / "no-keys.yaml",
                                 ready=lambda t: NEWEST in t and t["step_00000004.pt"].level in ("full", "deep"))
    assert table[NEWEST].status == "corrupt" and table[NEWEST].reason == "not a regular file: fifo"
    assert table["step_00000004.pt"].status == "ok"


FOREIGN = Path(__file__).resolve().parents[1] / "fixtures" / "foreign"


@pytest.mark.parametrize("planted", [
    "hf/out/checkpoint-6/trainer_state.json",
    "hf/out/train.log",
    "lightning/lightning_logs/version_0/metrics.csv",
    "nanogpt/out-tiny/train.log",
])
def test_a_fifo_among_another_tools_records_hangs_nothing(tmp_path: Path, planted: str) -> None:
    """The records other tools write (trainer_state.json, metrics.csv, text logs) are read through
    the same bounded, regular-files-only readers as runctl's own."""
    root = tmp_path / "foreign"
    shutil.copytree(FOREIGN, root, ignore=shutil.ignore_patterns("*.py", "*.txt"))
    target = root / planted
    target.unlink()
    os.mkfifo(target)
    listed = run_cli(["ls", root, "--json"], cwd=tmp_path, timeout=TIMEOUT)
    assert listed.returncode == 0, listed.stderr
    names = {run["name"] for run in json.loads(listed.stdout)["runs"]}
    assert len(names) >= 4, names  # every other run is still listed
    summary = run_cli(["summary", root], cwd=tmp_path, timeout=TIMEOUT)
    assert summary.returncode == 0, summary.stderr
