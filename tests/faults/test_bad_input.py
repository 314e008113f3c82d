"""Bad input everywhere: configs, command lines, garbage in run files, a loss that goes NaN.

A mistake the user can fix is exit 2 with exactly one line on stderr that names the culprit (the
file, key or argument), never a traceback, and it creates or changes nothing on disk: the root's
tree, sizes and mtimes are compared before and after. Damaged run files must not stop `runctl ls`
(text or --json): it keeps listing and says which file is wrong.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.checkpoints import all_finite, load_state
from support.cli import cli_env, run_cli
from support.configs import TINY_MLP
from support.filesystems import diff_snapshots, tree_snapshot
from support.run_files import events, find_run_dir, manifest, read_jsonl, status, strict_json

SMALL = "task: digits_mlp\nmax_steps: 4\nmodel: {hidden: 16, depth: 1}\n"

# id -> (config file text, substrings of which at least one must appear in the error line)
BAD_CONFIGS: dict[str, tuple[str | bytes, tuple[str, ...]]] = {
    "invalid_yaml": ("task: digits_mlp\nmodel: {hidden: 16\n", ("invalid YAML",)),
    "empty_file": ("", ("empty",)),
    "top_level_list": ("- task: digits_mlp\n", ("mapping",)),
    "not_utf8": (b"task: digits_mlp\nname: \xff\xfe\n", ("UTF-8",)),
    "duplicate_key": (SMALL + "max_steps: 8\n", ("max_steps",)),
    "unknown_top_key": (SMALL + "max_step: 10\n", ("max_step",)),
    "unknown_task": ("task: digits_rnn\n", ("task",)),
    "negative_max_steps": ("task: digits_mlp\nmax_steps: -5\n", ("max_steps",)),
    "zero_max_steps": ("task: digits_mlp\nmax_steps: 0\n", ("max_steps",)),
    "max_steps_as_text": ("task: digits_mlp\nmax_steps: ten\n", ("max_steps",)),
    "negative_seed": (SMALL + "seed: -1\n", ("seed",)),
    "negative_lr": (SMALL + "optim: {lr: -0.001}\n", ("optim.lr",)),
    "nan_lr": (SMALL + "optim: {lr: .nan}\n", ("optim.lr",)),
    "infinite_weight_decay": (SMALL + "optim: {weight_decay: .inf}\n", ("optim.weight_decay",)),
    "unknown_optimizer": (SMALL + "optim: {name: adam}\n", ("optim.name",)),
    "betas_of_one_number": (SMALL + "optim: {betas: [0.9]}\n", ("optim.betas",)),
    "section_not_a_mapping": (SMALL + "optim: 0.001\n", ("optim",)),
    "unknown_precision": (SMALL + "precision: fp8\n", ("precision",)),
    "unknown_device": (SMALL + "device: gpu\n", ("device",)),
    "zero_hidden": ("task: digits_mlp\nmax_steps: 4\nmodel: {hidden: 0}\n", ("model.hidden",)),
    "unknown_model_key": ("task: digits_mlp\nmax_steps: 4\nmodel: {width: 16}\n", ("model.width",)),
    "heads_do_not_divide_dim": ("task: digits_vit\nmax_steps: 4\nmodel: {dim: 30, heads: 4}\n", ("model.heads",)),
    "zero_batch_size": (SMALL + "data: {batch_size: 0}\n", ("data.batch_size",)),
    "val_fraction_above_one": (SMALL + "data: {val_fraction: 1.5}\n", ("data.val_fraction",)),
    "unknown_schedule": (SMALL + "schedule: {name: linear}\n", ("schedule.name",)),
    "zero_checkpoint_every": (SMALL + "checkpoint: {every: 0}\n", ("checkpoint.every",)),
    "negative_keep_last": (SMALL + "checkpoint: {keep_last: -1}\n", ("checkpoint.keep_last",)),
    "async_as_text": (SMALL + 'checkpoint: {async: "yes"}\n', ("checkpoint.async",)),
    "unknown_eval_mode": (SMALL + "eval: {mode: avg}\n", ("eval.mode",)),
    "unknown_nan_action": (SMALL + "nan: {action: ignore}\n", ("nan.action",)),
    "curriculum_not_a_list": (SMALL + "curriculum: {at_step: 2}\n", ("curriculum",)),
    "curriculum_changes_the_model": (SMALL + "curriculum: [{at_step: 2, set: {model.hidden: 32}}]\n",
                                     ("curriculum[0]",)),
    "custom_task_module_missing": ('task: "no_such_module_xyz:factory"\nmax_steps: 4\n', ("no_such_module_xyz",)),
    "custom_task_factory_missing": ('task: "support.tasks:no_such_factory"\nmax_steps: 4\n', ("no_such_factory",)),
}


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A root holding one finished run ("existing", 4 steps, checkpoints at 2 and 4) and a plain file."""
    tmp = tmp_path_factory.mktemp("badinput")
    root = tmp / "runs"
    done = run_cli(["train", "digits_mlp", "--root", root, "--name", "existing",
                    *[a for s in [*TINY_MLP, "max_steps=4", "checkpoint.every=2"] for a in ("--set", s)]],
                   cwd=tmp, timeout=180)
    assert done.returncode == 0, done.stderr
    run_dir = find_run_dir(root)
    assert run_dir is not None and status(run_dir).get("state") == "finished"
    (root / "notes.txt").write_text("a plain file among the runs\n")
    return {"tmp": tmp, "root": root, "run_dir": run_dir, "file": root / "notes.txt"}


def assert_refused(done: Any, culprits: tuple[str, ...], changes: list[str]) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}, stderr {done.stderr!r}"
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert any(c in lines[0] for c in culprits), f"{lines[0]!r} does not name any of {culprits}"
    assert not changes, f"a refused command changed the disk: {changes[:10]}"


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_refused(existing: dict[str, Any], case: str) -> None:
    text, culprits = BAD_CONFIGS[case]
    config = existing["tmp"] / "configs" / f"{case}.yaml"
    config.parent.mkdir(exist_ok=True)
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text)
    root = existing["root"]
    before = tree_snapshot(root)
    done = run_cli(["train", config, "--root", root], cwd=existing["tmp"])
    assert_refused(done, culprits, diff_snapshots(before, tree_snapshot(root)))


@pytest.mark.parametrize("case", ["invalid_yaml", "negative_max_steps", "custom_task_module_missing"])
def test_bad_config_creates_no_root(existing: dict[str, Any], case: str) -> None:
    text, culprits = BAD_CONFIGS[case]
    config = existing["tmp"] / "configs" / f"fresh-{case}.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(str(text))
    fresh_root = existing["tmp"] / f"never-{case}"
    done = run_cli(["train", config, "--root", fresh_root], cwd=existing["tmp"])
    assert_refused(done, culprits, [])
    assert not fresh_root.exists(), f"a refused config created {fresh_root}"


def bad_invocations(existing: dict[str, Any]) -> dict[str, tuple[list[Any], tuple[str, ...]]]:
    root, run, file = existing["root"], existing["run_dir"], existing["file"]
    sets = ["--set", "model.hidden=16", "--set", "max_steps=2"]
    return {
        "resume_unknown_run": (["resume", "nosuchrun", "--root", root], ("nosuchrun",)),
        "resume_a_file": (["resume", file, "--root", root], ("notes.txt",)),
        "extend_unknown_run": (["extend", "ghost-run", "--root", root, "--to", "10"], ("ghost-run",)),
        "train_existing_name": (["train", "digits_mlp", "--root", root, "--name", "existing", *sets],
                                ("existing",)),
        "train_root_is_a_file": (["train", "digits_mlp", "--root", file, *sets], ("notes.txt",)),
        "train_negative_steps": (["train", "digits_mlp", "--root", root, "--set", "max_steps=-3"], ("max_steps",)),
        "train_unknown_set_key": (["train", "digits_mlp", "--root", root, "--set", "optim.lrr=0.1"], ("optim.lrr",)),
        "train_set_without_value": (["train", "digits_mlp", "--root", root, "--set", "max_steps"], ("max_steps",)),
        "train_set_invalid_yaml": (["train", "digits_mlp", "--root", root, "--set", "model={hidden: 16"], ("model",)),
        "train_missing_config_file": (["train", "nothere.yaml", "--root", root], ("nothere.yaml",)),
        "train_unknown_builtin": (["train", "digits_rnn", "--root", root], ("digits_rnn",)),
        "train_bad_name": (["train", "digits_mlp", "--root", root, "--name", "../escape", *sets], ("--name",)),
        "train_zero_nproc": (["train", "digits_mlp", "--root", root, "--nproc", "0", *sets], ("nproc",)),
        "extend_below_current_step": (["extend", run, "--root", root, "--to", "2"], ("--to", "step")),
        "extend_negative_steps": (["extend", run, "--root", root, "--steps", "-5"], ("--steps",)),
        "extend_without_amount": (["extend", run, "--root", root], ("--steps", "--to")),
        "branch_from_missing_checkpoint": (["branch", run, "--root", root, "--from", "step_00000099.pt",
                                            "--name", "newbranch"], ("step_00000099.pt",)),
        "branch_to_existing_name": (["branch", run, "--root", root, "--from", "step_00000002.pt",
                                     "--name", "existing"], ("existing",)),
        "resume_from_missing_checkpoint": (["resume", run, "--root", root, "--from", "step_00000099.pt"],
                                           ("step_00000099.pt",)),
        "verify_missing_path": (["verify", root / "nope"], ("nope",)),
        "ls_unknown_flag": (["ls", root, "--bogus"], ("--bogus",)),
        "unknown_subcommand_option": (["train", "digits_mlp", "--root", root, "--max-steps", "5"], ("--max-steps",)),
    }


BAD_INVOCATION_IDS = ["resume_unknown_run", "resume_a_file", "extend_unknown_run", "train_existing_name",
                      "train_root_is_a_file", "train_negative_steps", "train_unknown_set_key",
                      "train_set_without_value", "train_set_invalid_yaml", "train_missing_config_file",
                      "train_unknown_builtin", "train_bad_name", "train_zero_nproc", "extend_below_current_step",
                      "extend_negative_steps", "extend_without_amount", "branch_from_missing_checkpoint",
                      "branch_to_existing_name", "resume_from_missing_checkpoint", "verify_missing_path",
                      "ls_unknown_flag", "unknown_subcommand_option"]


@pytest.mark.parametrize("case", BAD_INVOCATION_IDS)
def test_bad_invocation_is_refused(existing: dict[str, Any], case: str) -> None:
    args, culprits = bad_invocations(existing)[case]
    before = tree_snapshot(existing["root"])
    done = run_cli(args, cwd=existing["tmp"])
    assert_refused(done, culprits, diff_snapshots(before, tree_snapshot(existing["root"])))


def test_every_bad_invocation_case_runs() -> None:
    assert len(BAD_CONFIGS) >= 20 and len(BAD_INVOCATION_IDS) >= 10


# ---------------------------------------------------------------- damaged run files: ls keeps working

def damage_metrics_garbage(run: Path) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write("this is not json\n[1, 2, 3]\n{\"step\": \"five\", \"train/loss\": {}}\n\x00\x01\x02\n")


def damage_metrics_nan(run: Path) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "time": 1.0, "train/loss": NaN}\n')


def damage_metrics_infinity(run: Path) -> None:
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "time": 1.0, "train/loss": Infinity}\n{"step": 6, "time": 1.0, "train/loss": -Infinity}\n')


def damage_status_cut_in_half(run: Path) -> None:
    data = (run / "status.json").read_bytes()
    (run / "status.json").write_bytes(data[: len(data) // 2])


def damage_manifest_garbage(run: Path) -> None:
    (run / "checkpoints" / "manifest.json").write_bytes(b"\x89PNG not a manifest {{{")


def damage_manifest_is_a_folder(run: Path) -> None:
    (run / "checkpoints" / "manifest.json").unlink()
    (run / "checkpoints" / "manifest.json").mkdir()


def damage_run_yaml_garbage(run: Path) -> None:
    (run / "run.yaml").write_text("task: [unclosed\n")


def damage_events_garbage(run: Path) -> None:
    with open(run / "events.jsonl", "a") as f:
        f.write("garbage\n{\"event\": 12}\n")


# id -> (damage, file whose name a problem must mention or None when the data is legal but odd)
DAMAGED_FILES = {
    "metrics_garbage_lines": (damage_metrics_garbage, "metrics.jsonl"),
    "metrics_nan": (damage_metrics_nan, None),
    "metrics_infinity": (damage_metrics_infinity, None),
    "status_cut_in_half": (damage_status_cut_in_half, "status.json"),
    "manifest_garbage": (damage_manifest_garbage, "manifest.json"),
    "manifest_is_a_folder": (damage_manifest_is_a_folder, "manifest.json"),
    "run_yaml_garbage": (damage_run_yaml_garbage, "run.yaml"),
    "events_garbage": (damage_events_garbage, None),
}


@pytest.mark.parametrize("case", list(DAMAGED_FILES))
def test_ls_keeps_working_on_damaged_files(existing: dict[str, Any], case: str) -> None:
    damage, culprit = DAMAGED_FILES[case]
    root = existing["tmp"] / f"damaged-{case}"
    run = root / existing["run_dir"].name
    shutil.copytree(existing["run_dir"], run)  # only the healthy run: other tests may leave junk
    damage(run)

    done = run_cli(["ls", root, "--json"], cwd=existing["tmp"])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    document = strict_json(done.stdout)  # one standard JSON document, NaN or not
    listed = [r for r in document["runs"] if Path(r["path"]).name == run.name]
    assert listed, f"ls --json lost the damaged run: {document}"
    said = " ".join([str(listed[0].get("error") or ""), *map(str, listed[0].get("problems") or [])])
    if culprit:
        assert culprit in said, f"ls --json does not say what is wrong with {culprit}: {listed[0]}"

    text = run_cli(["ls", root], cwd=existing["tmp"])
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    assert run.name in text.stdout, text.stdout
    if culprit:
        assert culprit in text.stdout + text.stderr, f"`runctl ls` does not name {culprit}:\n{text.stdout}"

    verify = run_cli(["verify", run, "--json"], cwd=existing["tmp"])
    assert verify.returncode in (0, 1) and "Traceback" not in verify.stderr, verify.stderr
    strict_json(verify.stdout)


# ---------------------------------------------------------------- a loss that becomes NaN or inf

POISON_STEP = 7  # the curriculum poisons the loss once 7 steps are complete: the 8th update


def poisoned_config(tmp: Path, poison: int, action: str) -> Path:
    config = tmp / f"poison-{poison}-{action}.yaml"
    config.write_text(
        'task: "support.tasks:factory"\n'
        "max_steps: 12\n"
        "model: {hidden: 16}\n"
        "data: {batch_size: 32}\n"
        "log: {every: 1}\n"
        "eval: {every: 100, batches: 2}\n"
        "checkpoint: {every: 5, keep_last: 10}\n"
        "schedule: {warmup_steps: 2}\n"
        f"nan: {{action: {action}}}\n"
        "loss: {poison: 0}\n"
        f"curriculum: [{{at_step: {POISON_STEP}, set: {{loss.poison: {poison}}}}}]\n")
    return config


@pytest.mark.parametrize("poison", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["nan", "inf"])
def test_nonfinite_loss_stops_with_last_finite_checkpoint(tmp_path: Path, poison: int) -> None:
    config = poisoned_config(tmp_path, poison, "stop")
    done = run_cli(["train", config, "--root", tmp_path / "runs"], cwd=tmp_path, timeout=180)
    run = find_run_dir(tmp_path / "runs")
    assert run is not None
    assert done.returncode == 1, f"a run stopped by a non-finite loss is a failed run: {done.returncode} {done.stderr}"
    assert "Traceback" not in done.stderr
    nan_events = events(run, "nan")
    assert nan_events and nan_events[0].get("step") == POISON_STEP + 1, nan_events
    assert status(run).get("state") == "crashed", status(run)
    kept = f"step_{POISON_STEP:08d}.pt"
    files = manifest(run)["files"]
    assert kept in files, f"no checkpoint of the last finite step: {sorted(files)}"
    state = load_state(run / "checkpoints" / kept)
    assert state["step"] == POISON_STEP and all_finite(state["model"]) and all_finite(state["optimizer"])
    assert not any(int(n[5:13]) > POISON_STEP for n in files), f"a checkpoint after the bad step: {sorted(files)}"


def test_nonfinite_loss_warns_and_goes_on(tmp_path: Path) -> None:
    config = poisoned_config(tmp_path, 1, "warn")
    done = run_cli(["train", config, "--root", tmp_path / "runs"], cwd=tmp_path, timeout=180)
    run = find_run_dir(tmp_path / "runs")
    assert run is not None and done.returncode == 0, done.stderr
    assert events(run, "nan"), "nan.action: warn still reports the non-finite loss as an event"
    assert status(run).get("state") == "finished"
    losses = [m["train/loss"] for m in read_jsonl(run / "metrics.jsonl") if "train/loss" in m]
    assert losses and losses[-1] != losses[-1], "the poisoned loss is logged as it is (NaN)"


# The refusals that need no torch to decide: a name taken or malformed, a root that is a file, a
# branch from a checkpoint that is not there or to a name taken. They refuse before torch is
# imported (a torch start-up is seconds of CPU on a small machine for a one-line error).
TORCH_FREE_REFUSALS = ["train_existing_name", "train_root_is_a_file", "train_bad_name",
                       "branch_from_missing_checkpoint", "branch_to_existing_name"]


def test_refusals_of_names_roots_and_checkpoints_import_no_torch(existing: dict[str, Any]) -> None:
    cases = [[str(arg) for arg in bad_invocations(existing)[case][0]] for case in TORCH_FREE_REFUSALS]
    code = ("import sys\nfrom runctl.tui.cli import main\n"
            f"for args in {cases!r}:\n"
            "    assert main(args) == 2, args\n"
            "    assert 'torch' not in sys.modules, f'torch imported before refusing {args}'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=existing["tmp"], env=cli_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
