"""What the CLI and the UI call to create and drive runs: new, train, resume, extend, branch.

Every function checks everything it can before it touches the disk, so bad input (a config
error, a run name that exists, an incompatible checkpoint) is one RunctlError and no folder
created or changed. `train` is safe to call from a UI worker thread: it installs signal handlers
only in the main thread, takes commands through a `Control`, and hands every event and metrics
line to the callbacks as it also writes them to the run folder.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.engine.config import RUN_META_KEYS, apply_overrides, load_config, validate_config
from runctl.engine.control import Control, ControlFolder, write_command
from runctl.engine.schema import as_run_config
from runctl.runs.atomic import append_jsonl
from runctl.runs.checkpoints import newest_valid
from runctl.runs.errors import RunctlError
from runctl.runs.integrity import RESUME_KEYS
from runctl.runs.layout import (
    CONTROL_DIR,
    EVENTS_JSONL,
    MANIFEST_JSON,
    QUARANTINE_DIR,
    RUN_YAML,
    SUPERSEDED_DIR,
    checkpoint_dir,
    checkpoint_name,
    is_step_folder_name,
    step_folder_name,
    step_from_name,
)
from runctl.runs.lock import RunLock, is_locked, read_holder
from runctl.runs.manifest import read_manifest
from runctl.runs.status import read_status
from runctl.runs.store import RunStore

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

AUTO = "auto"


@dataclass
class TrainResult:
    run_dir: Path
    state: str                    # finished | stopped | interrupted | crashed
    step: int
    max_steps: int
    error: str | None = None      # the crash's last line
    signal: str | None = None     # for interrupted
    warnings: list[str] = field(default_factory=list)


@dataclass
class ExtendResult:
    run_dir: Path
    from_max: int
    to_max: int
    at_step: int
    live: bool                    # True: a running engine was asked; False: run.yaml was changed


# ---------------------------------------------------------------- run.yaml


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """run.yaml, resolved and validated (RunctlError naming the file and key)."""
    store = RunStore(run_dir)
    return validate_config(store.load_config(), str(store.config_path))


def write_run_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    RunStore(run_dir).write_config(cfg)


def _strip_meta(cfg: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in cfg.items() if key not in RUN_META_KEYS}


def _check_new_run_dir(root: Path, name: str) -> Path:
    if not _RUN_NAME.match(name):
        raise RunctlError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (no '/'), starting with a letter or digit")
    if root.exists() and not root.is_dir():
        raise RunctlError(f"{root}: not a directory (--root)")
    run_dir = root / name
    if run_dir.exists():
        raise RunctlError(f"{run_dir}: a run named {name!r} already exists; choose another --name")
    return run_dir


def _create_run(run_dir: Path, cfg: dict[str, Any], first_event: dict[str, Any] | None = None) -> None:
    """mkdir + run.yaml (atomic); a failure removes the half-made folder again."""
    RunStore.create(run_dir, cfg, first_event)


def _generated_name(stem: str, root: Path) -> str:
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, suffix = base, 2
    while (root / name).exists():
        name, suffix = f"{base}-{suffix}", suffix + 1
    return name


# ---------------------------------------------------------------- new, branch, extend


def new_run(config: str | Path, root: str | Path = "runs", name: str | None = None,
            overrides: Sequence[str] = ()) -> Path:
    """Validate `config` (+ overrides) and create ROOT/<name>/run.yaml; returns the run folder."""
    cfg = load_config(config, list(overrides))
    root = Path(root)
    stem = Path(str(config)).stem if str(config).endswith((".yaml", ".yml")) else str(config)
    name = name if name is not None else _generated_name(re.sub(r"[^A-Za-z0-9._-]", "_", stem), root)
    run_dir = _check_new_run_dir(root, name)
    # torch only once the config, the root and the name are valid: a refusal costs no torch start-up.
    from runctl.engine.runtime import check_runtime

    check_runtime(cfg, str(config))
    _create_run(run_dir, {**cfg, "run_id": name, "name": name, "created_at": time.time(),
                          "parent": None, "extensions": []})
    return run_dir


def resolve_checkpoint(run_dir: Path, ref: str | Path) -> Path:
    """A checkpoint of `run_dir` from a path, a file name, a step number, `latest` or `best`."""
    run_dir = Path(run_dir)
    ckpt_dir = checkpoint_dir(run_dir)
    text = str(ref)
    if Path(text).is_file() or is_step_folder_name(Path(text).name) and Path(text).is_dir():
        return Path(text)
    if text == "latest":
        info, _ = newest_valid(run_dir)
        if info is None:
            raise RunctlError(f"{run_dir}: no valid checkpoint to start from")
        return info.path
    if text == "best":
        best_file = (read_manifest(ckpt_dir).best or {}).get("file")
        if not best_file or not (ckpt_dir / best_file).is_file():
            raise RunctlError(f"{ckpt_dir / MANIFEST_JSON}: no best checkpoint recorded")
        return ckpt_dir / best_file
    candidates = [ckpt_dir / text]
    if text.isdigit():
        candidates[:0] = [ckpt_dir / checkpoint_name(int(text)), ckpt_dir / step_folder_name(int(text))]
    for candidate in candidates:
        if candidate.is_file() or is_step_folder_name(candidate.name) and candidate.is_dir():
            return candidate
    raise RunctlError(f"{run_dir}: no checkpoint {text!r} (give a file, a name such as step_00000500.pt, "
                      "a step number, latest or best)")


def extend_run(run_dir: str | Path, steps: int | None = None, to: int | None = None) -> ExtendResult:
    """Raise max_steps by `steps` or to `to`. A running engine is asked through its control folder;
    otherwise run.yaml gets the extension (resume then continues under it). The LR decays from its
    value at the current step to the minimum at the new end; warmup is not repeated."""
    run_dir = Path(run_dir)
    if (steps is None) == (to is None):
        raise RunctlError("extend: give exactly one of --steps N or --to N")
    if steps is not None and steps < 1:
        raise RunctlError(f"extend: --steps {steps}: must be at least 1")
    cfg = read_run_config(run_dir)
    old_max = int(cfg["max_steps"])
    new_max = to if to is not None else old_max + int(steps or 0)

    if is_locked(run_dir):
        current = int(read_status(run_dir).get("step") or 0)
        _check_extension(run_dir, new_max, current, old_max, to)
        write_command(run_dir, "extend", max_steps=new_max)
        return ExtendResult(run_dir, old_max, new_max, current, live=True)

    current = _resume_step(run_dir, cfg)
    _check_extension(run_dir, new_max, current, old_max, to)  # before the lock: a refusal changes nothing
    with RunLock(run_dir):
        if _resume_step(run_dir, cfg) != current:
            raise RunctlError(f"{run_dir}: a checkpoint appeared while extending (another engine?); try again")
        if current == 0:  # nothing trained yet: the whole schedule is simply longer
            extended = {**cfg, "max_steps": new_max}
        else:
            from runctl.engine.schedule import extend_config

            extended = extend_config(cfg, current, new_max)
        write_run_config(run_dir, extended)
        append_jsonl(run_dir / EVENTS_JSONL, {"time": time.time(), "event": "extended", "step": current,
                                              "from_max": old_max, "to_max": new_max})
    return ExtendResult(run_dir, old_max, new_max, current, live=False)


def _check_extension(run_dir: Path, new_max: int, current: int, old_max: int, to: int | None) -> None:
    flag = f"--to {to}" if to is not None else f"--steps (new max_steps {new_max})"
    if new_max <= current:
        raise RunctlError(f"{run_dir}: extend {flag}: must be after the current step {current}")
    if new_max <= old_max:
        raise RunctlError(f"{run_dir}: extend {flag}: max_steps is already {old_max}; extend only raises it")


def _resume_step(run_dir: Path, cfg: dict[str, Any]) -> int:
    """The step a resume of this run would start from (own checkpoint, else the branch point)."""
    info, _ = newest_valid(run_dir)
    if info is not None and info.step is not None:
        return int(info.step)
    parent = cfg.get("parent") or {}
    if parent and not parent.get("weights_only"):
        return int(parent.get("step") or 0)
    return 0


@dataclass
class BranchResult:
    run_dir: Path
    changes: list[str]            # "data.batch_size: 64 -> 128" for watched settings


def branch_run(run_dir: str | Path, from_ckpt: str | Path, name: str, overrides: Sequence[str] = (),
               weights_only: bool = False, root: str | Path | None = None) -> BranchResult:
    """A new run that starts from a checkpoint of `run_dir` with changed settings.

    Full branch: step, optimizer, RNG, data position and best continue under the new settings
    (an A/B test from a shared point). `weights_only`: the weights only; a fresh optimizer and
    schedule from step 0. The checkpoint is verified and fitted to the new model before anything
    is created.
    """
    from runctl.engine.compat import settings_changes

    parent_dir = Path(run_dir)
    parent_cfg = read_run_config(parent_dir)
    parent_id = parent_cfg.get("run_id") or parent_dir.name
    ckpt_path = resolve_checkpoint(parent_dir, from_ckpt)
    origin = f"{parent_dir / RUN_YAML} --set"
    cfg = apply_overrides(_strip_meta(parent_cfg), list(overrides), origin) if overrides \
        else _strip_meta(parent_cfg)
    root = Path(root) if root is not None else parent_dir.parent
    new_dir = _check_new_run_dir(root, name)
    # torch only once the parent, the checkpoint's name and the new name are valid.
    from runctl.engine.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt_path, require=("model",) if weights_only else RESUME_KEYS)
    step = 0 if weights_only else int(state["step"])
    extensions: list[dict[str, int]] = []
    if not weights_only:
        extensions = list(parent_cfg.get("extensions") or [])
        if cfg["max_steps"] <= step:
            raise RunctlError(f"{origin}: max_steps ({cfg['max_steps']}) must be greater than the "
                              f"checkpoint's step ({step})")
        if cfg["max_steps"] != parent_cfg["max_steps"]:
            # A new end for a run already under way: decay from the LR at the branch point.
            extensions.append({"at_step": step, "max_steps": int(cfg["max_steps"]),
                               "from_max_steps": int(parent_cfg["max_steps"])})
    full_cfg = validate_config({**cfg, "run_id": name, "name": name, "created_at": time.time(),
                                "parent": {"run_id": parent_id, "checkpoint": ckpt_path.name,
                                           "path": str(ckpt_path.resolve()), "step": int(state["step"]),
                                           "weights_only": weights_only},
                                "extensions": extensions}, origin)
    from runctl.engine.runtime import check_runtime

    check_runtime(full_cfg, origin)
    _check_model_fits(full_cfg, state, ckpt_path)
    changes = settings_changes(state.get("config") or parent_cfg, full_cfg)
    _create_run(new_dir, full_cfg, first_event={
        "time": time.time(), "event": "branched", "step": step,
        "parent": parent_id, "checkpoint": ckpt_path.name, "weights_only": weights_only})
    return BranchResult(new_dir, changes)


def branch_foreign(ckpt: str | Path, config: str | Path | dict[str, Any], name: str, overrides: Sequence[str] = (),
                   weights_only: bool = False, root: str | Path = "runs") -> ForeignBranchResult:
    """A new runctl run under `root` that starts from a checkpoint another tool wrote (a file, or a
    Hugging Face checkpoint-N/ folder), with the model and settings of `config` (a YAML path, a
    built-in config name, or a config mapping).

    The weights must fit the config's model (else RunctlError naming the keys, exit 2). The
    optimizer state and the step carry over when the optimizer state fits; otherwise, or with
    `weights_only`, the run starts at step 0 from the weights alone and `note` says why. Nothing is
    written beside the checkpoint; run.yaml's parent records its path, step and layout.
    """
    import torch
    from runctl.engine.foreign import fit_weights, optimizer_misfit, read_foreign
    from runctl.engine.runtime import check_runtime
    from runctl.engine.tasks import build_task

    ckpt_path = Path(ckpt)
    if not ckpt_path.exists():
        raise RunctlError(f"{ckpt_path}: no such checkpoint file or folder")
    if isinstance(config, dict):  # a config the UI's dialog holds, not a file
        origin = "branch config"
        cfg = validate_config(config, origin)
        cfg = apply_overrides(cfg, list(overrides), f"{origin} --set") if overrides else cfg
    else:
        origin = str(config)
        cfg = load_config(config, list(overrides))
    check_runtime(cfg, origin)
    new_dir = _check_new_run_dir(Path(root), name)
    checkpoint = read_foreign(ckpt_path)
    with torch.device("meta"):  # shapes only: no memory, no RNG
        model = build_task(cfg).build_model()
    fit_weights(model, checkpoint)
    note = None
    if not weights_only:
        misfit = optimizer_misfit(model, cfg["optim"]["name"], checkpoint.optimizer)
        if misfit is None and checkpoint.step is None:
            misfit = "the checkpoint does not say its step"
        if misfit is None and cfg["max_steps"] <= checkpoint.step:
            raise RunctlError(f"{origin}: max_steps ({cfg['max_steps']}) must be greater than the "
                              f"checkpoint's step ({checkpoint.step})")
        if misfit is not None:
            weights_only = True
            note = f"starting from the weights only (fresh optimizer, step 0): {misfit}"
    step = 0 if weights_only else int(checkpoint.step or 0)
    layout, run_folder = detect_layout(ckpt_path)
    parent = {"run_id": run_folder.name,
              "checkpoint": ckpt_path.name, "path": str(ckpt_path.resolve()),
              "step": checkpoint.step, "weights_only": weights_only, "layout": layout,
              "weights_from": checkpoint.weights_from}
    full_cfg = validate_config({**cfg, "run_id": name, "name": name, "created_at": time.time(),
                                "parent": parent, "extensions": []}, origin)
    _create_run(new_dir, full_cfg, first_event={
        "time": time.time(), "event": "branched", "step": step, "parent": parent["run_id"],
        "checkpoint": str(ckpt_path.resolve()), "weights_only": weights_only, "layout": layout})
    return ForeignBranchResult(new_dir, step, weights_only, note, checkpoint.weights_from, layout)


@dataclass
class ForeignBranchResult:
    run_dir: Path
    step: int                   # the step the run starts at
    weights_only: bool
    note: str | None            # why the optimizer state was not taken, if it was wanted
    weights_from: str           # where in the checkpoint the weights were found
    layout: str                 # the layout of the folder the checkpoint sits in


def detect_layout(path: Path) -> tuple[str, Path]:
    """The foreign run holding checkpoint `path`: (its layout's detector name, its folder), or
    ("file", the file's folder). A tool's own layout wins over "plain" (Lightning's checkpoints/
    is also a plain folder of files)."""
    from runctl.runs.discovery import detect

    folder = path if path.is_dir() else path.parent
    found: list[tuple[str, Path]] = []
    for candidate in (folder, folder.parent, folder.parent.parent):
        detector = detect(candidate)
        if detector is not None:
            found.append((detector.name, candidate))
    return next((hit for hit in found if hit[0] != "plain"), found[0] if found else ("file", folder))


def _check_model_fits(cfg: dict[str, Any], state: dict[str, Any], ckpt_path: Path) -> None:
    import torch
    from runctl.engine.compat import compare_state_dicts, format_incompatibility
    from runctl.engine.tasks import build_task

    task = build_task(cfg)
    with torch.device("meta"):  # shapes only: no memory, no RNG
        model = task.build_model()
    report = compare_state_dicts(model.state_dict(), state["model"])
    if not report.ok:
        raise RunctlError(f"{ckpt_path}: checkpoint does not fit the branch's model: {format_incompatibility(report)}")


# ---------------------------------------------------------------- train / resume


@dataclass
class _Start:
    path: Path | None = None
    weights_only: bool = False
    own: bool = False             # a checkpoint of this run (protect it, don't re-save its step)
    step: int | None = None       # its step, when known before loading it
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (file, reason)
    # Skipped files that exist in checkpoints/: moved to quarantine/ before the first save could
    # overwrite one of them (file, reason).
    quarantine: list[tuple[str, str]] = field(default_factory=list)
    explicit: bool = False        # chosen with --from: newer checkpoints belong to another timeline
    foreign: bool = False         # another tool's checkpoint (engine.foreign reads it)


def _choose_start(run_dir: Path, cfg: dict[str, Any], resume_from: str | Path | None) -> _Start:
    if resume_from is None:
        return _Start()
    if resume_from != AUTO:
        path = Path(resume_from)
        own = path.resolve().parent == checkpoint_dir(run_dir).resolve()
        return _Start(path=path, own=own, explicit=True)
    info, skipped = newest_valid(run_dir)
    skipped_pairs = [(s.name, s.reason or s.status) for s in skipped]
    # Only runctl's own names: they are what a new save of the same step would overwrite.
    damaged = [(s.name, s.reason or s.status) for s in skipped if step_from_name(s.name) is not None
               and s.status not in ("partial", "missing") and os.path.lexists(s.path)]
    if info is not None:
        return _Start(path=info.path, own=True, step=info.step, skipped=skipped_pairs, quarantine=damaged)
    parent = cfg.get("parent")
    if parent and parent.get("layout"):
        path = Path(str(parent.get("path", "")))
        if not path.exists():
            raise RunctlError(f"{run_dir / RUN_YAML}: parent checkpoint {path} is gone; the branch has no "
                              "checkpoint of its own to start from")
        return _Start(path=path, weights_only=bool(parent.get("weights_only")), skipped=skipped_pairs,
                      foreign=True)
    if parent:
        candidates = [run_dir.parent / parent["run_id"] / "checkpoints" / str(parent.get("checkpoint")),
                      Path(str(parent.get("path", "")))]
        for candidate in candidates:
            if candidate.is_file() or is_step_folder_name(candidate.name) and candidate.is_dir():
                return _Start(path=candidate, weights_only=bool(parent.get("weights_only")),
                              skipped=skipped_pairs, quarantine=damaged)
        raise RunctlError(f"{run_dir / RUN_YAML}: parent checkpoint {parent.get('checkpoint')} of run "
                          f"{parent['run_id']} is gone; the branch has no checkpoint of its own to start from")
    return _Start(skipped=skipped_pairs, quarantine=damaged)


def _choose_and_verify_start(run_dir: Path, cfg: dict[str, Any], resume_from: str | Path | None) -> _Start:
    """_choose_start, and the full verification of a runctl checkpoint it names (the verdict is
    cached for load_checkpoint, which refuses the file if it failed)."""
    from runctl.engine.checkpoint import verification_failure

    start = _choose_start(run_dir, cfg, resume_from)
    if start.path is not None and not start.foreign and not start.path.is_dir():
        verification_failure(start.path)
    return start


def _in_background(function: Callable[..., Any], *args: Any) -> Future[Any]:
    """`function(*args)` on a thread of its own; the future gives its result or raises its error."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runctl-start")
    try:
        return executor.submit(function, *args)
    finally:
        executor.shutdown(wait=False)  # the thread ends after its one job


def _set_aside_newer(run_dir: Path, step: int, runlog: Any) -> None:
    """Resuming --from an older checkpoint starts a new timeline: the old one's newer checkpoints
    would be overwritten by the new saves of the same steps (or chosen by the next plain resume),
    so they move, with their manifest entries, to RUN/superseded/<time>-from-<step>/ (the store's
    set_aside). Nothing is deleted."""
    newer = sorted(name for name in os.listdir(checkpoint_dir(run_dir))
                   if (file_step := step_from_name(name)) is not None and file_step > step)
    aside = RunStore(run_dir).set_aside(newer, SUPERSEDED_DIR, step)
    if aside is not None:
        runlog.event("superseded", step=step, files=newer, folder=str(aside.relative_to(run_dir)))


def _quarantine(store: RunStore, files: list[tuple[str, str]], step: int, runlog: Any) -> None:
    """The checkpoints a resume skipped (damaged, or their manifest entry is) move, with their
    entries and reasons, to RUN/quarantine/<time>-from-<step>/ before the first save of this
    attempt could overwrite one of them with a new file of the same name."""
    reasons = dict(files)
    aside = store.set_aside(reasons, QUARANTINE_DIR, step, reasons=reasons)
    if aside is not None:
        runlog.event("quarantined", step=step, files=sorted(reasons), reasons=reasons,
                     folder=str(aside.relative_to(store.run_dir)))


def resume_run(run_dir: str | Path, from_ckpt: str | Path | None = None, control: Control | None = None,
               on_event: Any = None, on_metrics: Any = None) -> TrainResult:
    """Continue a run from its newest valid checkpoint (or `from_ckpt`)."""
    run_dir = Path(run_dir)
    start: str | Path = AUTO if from_ckpt is None else resolve_checkpoint(run_dir, from_ckpt)
    return train(run_dir, control=control, resume_from=start, on_event=on_event, on_metrics=on_metrics)


def train(run_dir: str | Path, control: Control | None = None, resume_from: str | Path | None = AUTO,
          on_event: Any = None, on_metrics: Any = None) -> TrainResult:
    """Train the run in `run_dir` in this process (any thread), to max_steps or a stop.

    resume_from: "auto" = the newest valid checkpoint of the run (for a branch that has none yet,
    its parent's checkpoint), a checkpoint path, or None = from step 0. Raises RunctlError for bad
    input before anything in the run folder changes; a failure during training ends the run
    `crashed` (status.json error, events.jsonl traceback) and is returned, not raised.
    """
    from runctl.engine.checkpoint import RESUME_KEYS, CheckpointManager, load_checkpoint
    from runctl.engine.compat import settings_changes
    from runctl.engine.distributed import context_from_env
    from runctl.engine.runlog import RunLog
    from runctl.engine.runtime import make_runtime
    from runctl.engine.signals import stop_on_signals
    from runctl.engine.stall import StallWatch
    from runctl.engine.tasks import build_task
    from runctl.engine.trainer import Trainer

    run_dir = Path(run_dir)
    dist = context_from_env()
    if not dist.is_main and not (run_dir / RUN_YAML).is_file():
        raise RunctlError(f"{run_dir}: not visible to rank {dist.rank} on {socket.gethostname()}: every node "
                          "of a distributed run needs the run folder at the same path (shared storage)")
    cfg = read_run_config(run_dir)
    settings = as_run_config(cfg)  # the typed view the engine reads; cfg stays run.yaml's mapping
    run_id = settings.run_id or run_dir.name
    control = control if control is not None else Control()
    lock = RunLock(run_dir) if dist.is_main else None
    locked = False
    runlog = None
    checkpoints = None
    try:
        # Every check that can refuse runs before the lock is taken: a refusal changes nothing.
        if dist.is_main:
            _refuse_if_locked(run_dir)
        listing = _checkpoint_listing(run_dir)
        previous = read_status(run_dir) if dist.is_main else {}
        # The start is chosen and its checkpoint verified (every zip CRC and the sha256 against the
        # manifest: seconds for a large file) on a thread while this one loads the task's data and
        # builds the model; the checkpoint is unpickled only after that verdict (load_checkpoint
        # asks for it again and finds it cached).
        choosing = _in_background(_choose_and_verify_start, run_dir, cfg, resume_from) if dist.is_main else None
        try:
            runtime = make_runtime(settings, dist.local_rank, origin=str(run_dir / RUN_YAML))
            dist.init(runtime.device)
            task = build_task(cfg)
            runlog = RunLog(run_dir, max_steps=settings.max_steps, world_size=dist.world_size,
                            on_event=on_event, on_metrics=on_metrics, enabled=dist.is_main, rank=dist.rank,
                            local_rank=dist.local_rank, node_rank=dist.node_rank, nodes=dist.nodes)
            if settings.parallel.strategy == "fsdp":  # every rank writes its shard; rank 0 commits
                from runctl.engine.sharded import StepFolderWriter

                writer = StepFolderWriter(rank=dist.rank, temp_tag=dist.broadcast_object(os.getpid()),
                                          on_cuda=runtime.is_cuda)
                checkpoints = CheckpointManager(run_dir, run_id, settings.checkpoint.to_dict(),
                                                on_event=runlog.record_event, writer=writer)
            elif dist.is_main:
                checkpoints = CheckpointManager(run_dir, run_id, settings.checkpoint.to_dict(),
                                                on_event=runlog.record_event)
            control_folder = ControlFolder(run_dir, control, ignore_before=previous.get("updated_at")) \
                if dist.is_main else None
            trainer = Trainer(cfg=settings, run_id=run_id, task=task, runtime=runtime, dist=dist, runlog=runlog,
                              checkpoints=checkpoints, control=control, control_folder=control_folder,
                              write_config=lambda new_cfg: write_run_config(run_dir, new_cfg))
        except BaseException:
            if choosing is not None:
                choosing.result()  # a refused start is said first: nothing changed, the user fixes that
            raise
        start = choosing.result() if choosing is not None else _Start()
        if not dist.enabled and start.own and (start.step or 0) >= settings.max_steps:
            _release(checkpoints, None, dist)
            return _already_finished(run_dir, start.step or 0, settings.max_steps)
        start = dist.broadcast_object(start)

        state = None
        if start.path is not None and start.foreign:
            import torch
            from runctl.engine.foreign import read_foreign, start_state

            with torch.device("meta"):
                shapes_model = task.build_model()
            state = start_state(read_foreign(start.path), shapes_model, start.weights_only)
        elif start.path is not None:
            state = load_checkpoint(start.path, require=("model",) if start.weights_only else RESUME_KEYS)
        runlog.watch_stalls(StallWatch(settings.stall.after_s, settings.stall.grace_s),
                            _stop_requested(control, control_folder))
        warnings: list[str] = []
        if state is not None:
            trainer.load_state_dict(state, str(start.path), weights_only=start.weights_only)
            # Another tool's config is not runctl's: comparing its keys would only flag all of them.
            warnings = [] if start.foreign else [
                f"{start.path.name}: setting changed since the checkpoint: {change}"
                for change in settings_changes(state.get("config") or {}, cfg)]
            if start.own and checkpoints is not None:
                checkpoints.protect(start.path)
                trainer.last_saved_step = trainer.step
        del state
        if start.own and trainer.step >= trainer.max_steps:
            _release(checkpoints, None, dist)
            return _already_finished(run_dir, trainer.step, trainer.max_steps)
        if lock is not None:
            lock.acquire()
            locked = True
            if _checkpoint_listing(run_dir) != listing:
                raise RunctlError(f"{run_dir}: its checkpoints changed while this engine was starting "
                                  "(another engine?); run the command again")
            (run_dir / CONTROL_DIR).mkdir(exist_ok=True)
    except RunctlError:
        _release(checkpoints, lock if locked else None, dist)
        raise
    except Exception as exc:  # a user task's factory or model failing, or a bug: the run crashed
        if lock is not None and not locked:
            lock.acquire()  # record the crash only as the run's one engine (else: the lock's error)
            locked = True
        if runlog is None:
            runlog = RunLog(run_dir, max_steps=settings.max_steps, world_size=dist.world_size,
                            on_event=on_event, on_metrics=on_metrics, enabled=dist.is_main, rank=dist.rank,
                            local_rank=dist.local_rank, node_rank=dist.node_rank, nodes=dist.nodes)
        error = _last_line(exc)
        runlog.event("crashed", step=0, error=error, traceback=traceback.format_exc())
        runlog.set_state("crashed", error=error)
        _release(checkpoints, lock, dist)
        return TrainResult(run_dir, "crashed", 0, settings.max_steps, error=error)
    except BaseException:
        _release(checkpoints, lock if locked else None, dist)
        raise

    # From here on the run folder changes: the attempt is recorded, and failures end it `crashed`.
    assert runlog is not None
    result = TrainResult(run_dir, "crashed", trainer.step, settings.max_steps, warnings=warnings)
    try:
        store = RunStore(run_dir)
        store.clean_temps()
        if dist.is_main:  # the lock holder: only it changes checkpoints/
            store.clean_temp_step_folders()
            store.recover()
        runlog.set_progress(trainer.step, trainer.max_steps)
        runlog.start(checkpoint=start.path.name if start.own and start.path else None)
        for name, reason in start.skipped:
            runlog.event("skipped_checkpoint", file=name, reason=reason)
        if start.quarantine and dist.is_main:
            _quarantine(store, start.quarantine, trainer.step, runlog)
        if start.explicit and start.own and dist.is_main:
            _set_aside_newer(run_dir, trainer.step, runlog)
        origin = start.path.name if start.path is not None else None
        if previous:
            runlog.event("resumed", step=trainer.step, **{"from": origin})
        else:
            runlog.event("started", step=trainer.step, max_steps=trainer.max_steps,
                         world_size=dist.world_size, nodes=dist.nodes, pid=os.getpid(), **{"from": origin})
        for message in warnings:
            runlog.event("warning", message=message)
        with stop_on_signals(control, quiet=not dist.is_main):
            result.state = trainer.run()
    except Exception as exc:  # the run crashed: record it for every reader, then report it
        result.state, result.error = "crashed", _last_line(exc)
        runlog.event("crashed", error=result.error, traceback=traceback.format_exc())
    finally:
        result.step, result.max_steps = trainer.step, trainer.max_steps
        try:
            if checkpoints is not None:
                checkpoints.close()
        except Exception as exc:  # noqa: BLE001 - already reported as checkpoint_failed
            if result.state != "crashed":
                result.state, result.error = "crashed", _last_line(exc)
                runlog.event("crashed", error=result.error, traceback=traceback.format_exc())
        runlog.set_progress(trainer.step, trainer.max_steps)
        runlog.set_state(result.state, error=result.error)
        runlog.close()
        if lock is not None:
            lock.release()
        dist.close()
    if result.state == "interrupted":
        result.signal = control.take().signal or trainer.interrupted_by
    return result


def _stop_requested(control: Control, folder: ControlFolder | None) -> Callable[[], bool]:
    """For the heartbeat of a stalled run: is a stop pending? The training loop, stuck in its step,
    no longer reads the control folder, so this reads it."""

    def requested() -> bool:
        if folder is not None:
            folder.poll()
        return control.stop_requested

    return requested


def _refuse_if_locked(run_dir: Path) -> None:
    """The error RunLock.acquire would raise, without touching the lock file."""
    if is_locked(run_dir):
        holder = read_holder(run_dir)
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        raise RunctlError(f"{run_dir}: run is locked by another engine ({who})")


def _checkpoint_listing(run_dir: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of each complete file in checkpoints/: did anything change meanwhile?"""
    try:
        entries = list(os.scandir(checkpoint_dir(run_dir)))
    except FileNotFoundError:
        return []
    return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries
                  if (e.is_file() or e.is_dir()) and step_from_name(e.name) is not None)


def _already_finished(run_dir: Path, step: int, max_steps: int) -> TrainResult:
    """Nothing to train: the run's files stay exactly as they are."""
    return TrainResult(run_dir, "finished", step, max_steps, warnings=[
        f"{run_dir}: already at step {step} of max_steps {max_steps}; "
        f"`runctl extend {run_dir} --steps N` trains further"])


def _release(checkpoints: Any, lock: RunLock | None, dist: Any) -> None:
    if checkpoints is not None:
        checkpoints.close()
    if lock is not None:
        lock.release()
    dist.close()


def _last_line(exc: BaseException) -> str:
    text = f"{exc.__class__.__name__}: {exc}".strip()
    return text.splitlines()[-1] if text else exc.__class__.__name__


def signal_exit_code(name: str | None) -> int:
    """128 + signal number, the shell's convention for a process ended by a signal."""
    try:
        return 128 + int(signal.Signals[name]) if name else 1
    except KeyError:
        return 1


def stop_run(run_dir: str | Path, checkpoint_only: bool = False) -> Path:
    """Ask the engine training `run_dir` (any process) to stop, or to checkpoint and go on."""
    run_dir = Path(run_dir)
    if not is_locked(run_dir):
        state = read_status(run_dir).get("state", "never trained")
        raise RunctlError(f"{run_dir}: no engine is running this run (state: {state})")
    return write_command(run_dir, "checkpoint" if checkpoint_only else "stop")


