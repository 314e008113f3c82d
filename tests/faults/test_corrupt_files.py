"""Corrupted and hostile checkpoint files: `verify` names each, resume skips each, nothing executes.

One real run (15 steps, a checkpoint at every step) is damaged in eleven ways at once: the four
oldest checkpoints stay intact, seven are damaged in place (the manifest still lists what they
were), and four are replaced by foreign files that the manifest does not list (a file copied in by
hand). `runctl verify` at every level must call each one what it is, and `runctl resume` must
skip all eleven, say so, resume from step 4 and arrive at the very same final weights. The
hostile pickle would create a marker file if anything ever unpickled it.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.checkpoints import load_state, state_differences
from support.cli import run_cli, start_cli, verify_json
from support.configs import TINY_MLP
from support.run_files import events, find_run_dir, records_by_name, status

MAX_STEPS = 15
INTACT_STEPS = (1, 2, 3, 4)


def name(step: int) -> str:
    return f"step_{step:08d}.pt"


class RunsCode:
    """Unpickling this runs `exec`, which creates the marker file: the attack a checkpoint can carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


# ---------------------------------------------------------------- damage done in place

def truncate_to(size: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: size(len(data))])
    return damage


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def flip_tensor_bit(path: Path) -> None:
    """One bit in the middle of the largest tensor's bytes (a stored zip record under data/)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len = int.from_bytes(header[26:28], "little")
    extra_len = int.from_bytes(header[28:30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    flip_bit(path, start + info.file_size // 2, bit=3)


def flip_zip_header_bit(path: Path) -> None:
    flip_bit(path, 2)  # the first local file header's signature: PK\x03\x04 -> PK\x02\x04


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(5).randbytes(path.stat().st_size))


# ---------------------------------------------------------------- foreign files planted

def zip_not_checkpoint(path: Path, **_: Any) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "a perfectly valid zip, but no checkpoint\n")


def pickle_running_code(path: Path, marker: Path, **_: Any) -> None:
    import torch

    torch.save({"format": "runctl/1", "step": 13, "model": RunsCode(marker)}, path)


def raw_pickle_running_code(path: Path, marker: Path, **_: Any) -> None:
    path.write_bytes(pickle.dumps({"format": "runctl/1", "model": RunsCode(marker)}, protocol=2))


def other_models_checkpoint(path: Path, other: Path, **_: Any) -> None:
    shutil.copyfile(other, path)


# kind -> (step, damage, status at full, reason prefixes at full, status at deep)
IN_PLACE: dict[str, tuple[int, Callable[[Path], None], tuple[str, ...]]] = {
    "truncated_to_10_bytes": (5, truncate_to(lambda n: 10), ("truncated",)),
    "truncated_to_half": (6, truncate_to(lambda n: n // 2), ("truncated",)),
    "truncated_by_1_byte": (7, truncate_to(lambda n: n - 1), ("truncated",)),
    "bit_flip_in_tensor_data": (8, flip_tensor_bit, ("crc mismatch",)),
    "bit_flip_in_zip_header": (9, flip_zip_header_bit, ("not a checkpoint", "crc mismatch")),
    "zero_bytes": (10, zero_bytes, ("empty", "truncated")),
    "random_bytes": (11, random_bytes, ("not a checkpoint",)),
}
PLANTED: dict[str, tuple[int, Callable[..., None], str, tuple[str, ...], str]] = {
    "raw_pickle_running_code": (12, raw_pickle_running_code, "corrupt", ("not a checkpoint", "unsafe pickle"),
                                "corrupt"),
    "zip_not_a_checkpoint": (13, zip_not_checkpoint, "corrupt", ("not a checkpoint",), "corrupt"),
    "torch_pickle_running_code": (14, pickle_running_code, "corrupt", ("unsafe pickle",), "corrupt"),
    "checkpoint_of_another_model": (15, other_models_checkpoint, "unverified", ("no manifest entry",),
                                    "incompatible"),
}
ALL_KINDS = [*IN_PLACE, *PLANTED]


def set_args(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The damaged run, the pristine final checkpoint, and `verify --json` at each level."""
    tmp = tmp_path_factory.mktemp("corrupt")
    common = [*TINY_MLP, "checkpoint.every=1", "checkpoint.keep_last=100", "eval.every=5", "eval.batches=2"]
    base = start_cli(["train", "digits_mlp", "--root", tmp / "runs", "--name", "target",
                      *set_args([*common, f"max_steps={MAX_STEPS}"])], cwd=tmp, log_dir=tmp / "logs")
    other = start_cli(["train", "digits_mlp", "--root", tmp / "other", "--name", "other",
                       *set_args([*common, "max_steps=1", "model.hidden=32"])], cwd=tmp, log_dir=tmp / "logs")
    try:
        assert base.wait() == 0, base.stderr()
        assert other.wait() == 0, other.stderr()
    finally:
        base.ensure_dead()
        other.ensure_dead()
    run_dir = find_run_dir(tmp / "runs")
    other_dir = find_run_dir(tmp / "other")
    assert run_dir is not None and other_dir is not None
    folder = run_dir / "checkpoints"
    pristine_final = tmp / "pristine_final.pt"
    shutil.copyfile(folder / name(MAX_STEPS), pristine_final)

    marker = tmp / "CODE_RAN"
    for step, damage, _ in IN_PLACE.values():
        damage(folder / name(step))
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for step, plant, *_ in PLANTED.values():
        (folder / name(step)).unlink()
        plant(folder / name(step), marker=marker, other=other_dir / "checkpoints" / name(1))
        manifest["files"].pop(name(step), None)
    manifest_path.write_text(json.dumps(manifest))
    steps_used = sorted(s for s, *_ in [*IN_PLACE.values(), *PLANTED.values()])
    assert steps_used == list(range(len(INTACT_STEPS) + 1, MAX_STEPS + 1))

    pristine_run = tmp / "pristine_copy"
    shutil.copytree(run_dir, pristine_run / run_dir.name)
    reports = {level: verify_json(run_dir, cwd=tmp, level=level) for level in ("quick", "full", "deep")}
    return {"tmp": tmp, "run_dir": run_dir, "pristine_final": pristine_final, "marker": marker,
            "reports": reports, "copy": pristine_run / run_dir.name}


def expected(kind: str, level: str) -> tuple[str, tuple[str, ...]]:
    if kind in IN_PLACE:
        return "corrupt", IN_PLACE[kind][2]
    _, _, full_status, reasons, deep_status = PLANTED[kind]
    if level == "deep" and deep_status != full_status:
        return deep_status, ()
    return full_status, reasons


def step_of(kind: str) -> int:
    return IN_PLACE[kind][0] if kind in IN_PLACE else PLANTED[kind][0]


@pytest.mark.parametrize("level", ["full", "deep"])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_verify_names_the_damage(damaged: dict[str, Any], kind: str, level: str) -> None:
    code, document = damaged["reports"][level]
    record = records_by_name(document)[name(step_of(kind))]
    want_status, reasons = expected(kind, level)
    assert record["status"] == want_status, f"{kind} at {level}: {record}"
    assert not reasons or str(record.get("reason") or "").startswith(reasons), f"{kind} at {level}: {record}"
    assert code == 1, f"verify exits 1 when it finds a corrupt checkpoint, got {code}"
    assert not damaged["marker"].exists(), "verify ran the code in a hostile pickle"


def test_verify_keeps_the_intact_ones(damaged: dict[str, Any]) -> None:
    for level in ("quick", "full", "deep"):
        records = records_by_name(damaged["reports"][level][1])
        for step in INTACT_STEPS:
            assert records[name(step)]["status"] == "ok", f"{name(step)} at {level}: {records[name(step)]}"


def test_quick_level_catches_structural_damage(damaged: dict[str, Any]) -> None:
    """quick reads no tensor bytes, but sizes, zip structure and the pickle's globals it does check."""
    records = records_by_name(damaged["reports"]["quick"][1])
    for kind in ("truncated_to_10_bytes", "truncated_to_half", "truncated_by_1_byte", "zero_bytes",
                 "random_bytes", "zip_not_a_checkpoint", "torch_pickle_running_code"):
        assert records[name(step_of(kind))]["status"] == "corrupt", f"{kind} at quick: {records[name(step_of(kind))]}"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_verify_one_file(damaged: dict[str, Any], kind: str) -> None:
    path = damaged["run_dir"] / "checkpoints" / name(step_of(kind))
    code, document = verify_json(path, cwd=damaged["tmp"])
    record = records_by_name(document)[path.name]
    want_status, reasons = expected(kind, "full")
    assert record["status"] == want_status, record
    assert not reasons or str(record.get("reason") or "").startswith(reasons), record
    assert code == (1 if want_status == "corrupt" else 0)
    assert not damaged["marker"].exists()


def test_resume_skips_every_bad_file_and_says_so(damaged: dict[str, Any]) -> None:
    run_dir = damaged["copy"]  # the damaged run, untouched by the verify tests
    done = run_cli(["resume", run_dir], cwd=damaged["tmp"], timeout=180)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    resumed = events(run_dir, "resumed")
    assert resumed and Path(str(resumed[-1]["from"])).name == name(INTACT_STEPS[-1]), resumed
    skipped_events = {Path(str(e.get("file"))).name: e.get("reason") for e in events(run_dir, "skipped_checkpoint")}
    for kind in ALL_KINDS:
        bad = name(step_of(kind))
        assert bad in skipped_events, f"no skipped_checkpoint event for {bad} ({kind}): {skipped_events}"
        assert skipped_events[bad], f"skipped {bad} without a reason"
        assert bad in done.stderr + done.stdout, f"resume did not tell the user it skipped {bad} ({kind})"
    assert status(run_dir).get("state") == "finished"
    final = run_dir / "checkpoints" / name(MAX_STEPS)
    differences = state_differences(load_state(final), load_state(damaged["pristine_final"]))
    assert not differences, f"resumed past the damage, the final weights differ: {differences[:5]}"
    assert not damaged["marker"].exists(), "resume ran the code in a hostile pickle"


def test_resume_from_a_named_bad_file_is_refused(damaged: dict[str, Any]) -> None:
    """`resume --from` a corrupt or hostile file: exit 2 naming it, nothing changes, no code runs."""
    run_dir = damaged["run_dir"]
    for kind in ("bit_flip_in_tensor_data", "torch_pickle_running_code", "checkpoint_of_another_model"):
        bad = name(step_of(kind))
        done = run_cli(["resume", run_dir, "--from", bad], cwd=damaged["tmp"], timeout=180)
        assert done.returncode == 2, f"{kind}: exit {done.returncode}: {done.stderr}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and bad in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not damaged["marker"].exists()
