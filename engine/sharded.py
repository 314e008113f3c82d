"""FSDP2 (`parallel.strategy: fsdp`) and its sharded checkpoints, through torch.distributed.checkpoint.

The model is wrapped with `fully_shard` (each direct child that has parameters, then the root), so
every rank holds 1/world_size of the weights and optimizer moments as DTensors. A checkpoint is a
step folder written by DCP: every rank writes its shard (`__<rank>_0.distcp`), rank 0 writes DCP's
`.metadata` last (its commit marker) and runctl's `runctl.pt` (the step's non-tensor state: config,
RNG, data position, best, schedule). The folder is written under a temporary name; once DCP's
save has finished on every rank (rank 0's metadata write waits for every rank's write results),
rank 0 hashes every file, writes the manifest entry (bytes and sha256 of each file) and renames the
folder into place, through runs.store.RunStore.commit_step_folder; a kill before the manifest
leaves a temp folder the next start removes, a kill between the manifest and the rename a
`missing` entry that resume skips.

Async saves use `dcp.async_save`: the state is staged to CPU memory before it returns (pinned
memory on CUDA only), the write runs on DCP's thread over a gloo group of its own, so the next
steps' collectives never wait for it, and the next save (or the end of the run) waits for it.

Loading reshards: DCP reads each rank's part of the saved tensors whatever the saving world size,
into the model at hand (FSDP-sharded DTensors, or plain tensors for DDP or one process).
`.metadata` is a pickle: its sha256 is checked against the manifest before DCP reads it.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from runctl.engine.checkpoint import CheckpointError, _as_checkpoint_error, select_for_deletion
from runctl.runs.errors import RunctlError
from runctl.runs.integrity import RESUME_KEYS
from runctl.runs.layout import (
    CHECKPOINT_KINDS,
    DCP_METADATA,
    STEP_STATE,
    TEMP_MARKER,
    checkpoint_dir,
    step_folder_name,
    step_from_name,
)
from runctl.runs.manifest import read_manifest
from runctl.runs.step_folder import load_step_state, tensor_shapes, verify_step_folder
from runctl.runs.store import RunStore
from torch import nn

EventSink = Callable[[dict[str, Any]], None]
TENSOR_KEYS = ("model", "optimizer")
# DCP warns that it "assumes a single process" whenever no process group exists: with one process
# that is exactly the intent (no_dist), not news for the user.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")


def shard_model(model: nn.Module) -> nn.Module:
    """FSDP2 in place: each direct child with parameters is one unit, the root gathers the rest."""
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def tensor_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and optimizer's state, keyed by parameter name (DTensor shards under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state}


def load_tensor_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: Path) -> None:
    """Read a step folder's tensors into `model` (and `optimizer`), resharding to this world size."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        target = {"model": get_model_state_dict(model)}
        dcp.load(target, checkpoint_id=str(folder), no_dist=not dist.is_initialized())
        set_model_state_dict(model, target["model"])
        return
    # An optimizer that has not stepped yet gets its state created here (and the loaded one
    # replaces it, step count included).
    model_state, optim_state = get_state_dict(model, optimizer)
    target = {"model": model_state, "optimizer": optim_state}
    dcp.load(target, checkpoint_id=str(folder), no_dist=not dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=target["model"], optim_state_dict=target["optimizer"])


def load_step_folder(path: Path, require: Collection[str] = RESUME_KEYS) -> dict[str, Any]:
    """A verified step folder's state, like engine.checkpoint.load_checkpoint's: runctl.pt's keys
    (weights_only), `model` as meta tensors of the saved shapes (for the fit checks), `optimizer`
    a marker, and `sharded` = the folder, which Trainer.load_state_dict reads with DCP."""
    path = Path(path)
    entry = read_manifest(path.parent).files.get(path.name)
    info = verify_step_folder(path, "full", entry)
    if info.status != "ok":
        reason = info.reason if info.status != "unverified" else \
            f"no manifest entry vouches for {path / DCP_METADATA} (a pickle)"
        raise RunctlError(f"{path}: refusing to load: {info.status} ({reason})")
    try:
        state = load_step_state(path)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises several types; all mean "refuse"
        raise RunctlError(f"{path / STEP_STATE}: refusing to load: not loadable with weights_only=True "
                          f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})") from exc
    shapes = tensor_shapes(path)  # .metadata's sha256 matched the manifest above
    state["model"] = {key[len("model."):]: torch.empty(shape, device="meta")
                      for key, shape in shapes.items() if key.startswith("model.")}
    if any(key.startswith("optimizer.") for key in shapes):
        state["optimizer"] = {"sharded": True}
    state["sharded"] = str(path)
    missing = [key for key in require if not state.get(key)]
    if missing:
        raise RunctlError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


class ShardedCheckpointManager:
    """Saves a run's step folders from every rank (rank 0 commits them), prunes old ones (rank 0).

    The same calls as engine.checkpoint.CheckpointManager: save, wait_for_staging, wait, close,
    protect. Every rank calls save() at the same step (the loop's decisions are agreed).
    """

    def __init__(self, run_dir: Path, run_id: str, settings: Mapping[str, Any], *, rank: int, temp_tag: int,
                 on_event: EventSink | None = None, on_cuda: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.directory = checkpoint_dir(self.run_dir)
        self.store = RunStore(self.run_dir)
        self.rank = rank
        self.temp_tag = temp_tag  # rank 0's pid: every rank writes into the same temp folder
        self.keep_last: int | None = settings.get("keep_last", 3)
        self.keep_best = bool(settings.get("keep_best", True))
        self.use_async = bool(settings.get("async", True))
        self._on_event = on_event
        self._on_cuda = on_cuda
        self._protected: set[str] = set()
        self._pending: Future[Any] | None = None
        self._finisher: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        # DCP's async write runs collectives from its own thread: a gloo group of its own keeps
        # them apart from the training's (NCCL or gloo) collectives.
        self._group = dist.new_group(backend="gloo") if dist.is_initialized() else None

    # ---------------------------------------------------------------- save

    def save(self, state: dict[str, Any], step: int, kind: str, best: dict[str, Any] | None = None,
             sync: bool = False, defer: Collection[int] = ()) -> None:
        """Checkpoint `state` as step folder `step`; returns once staged (async) or written (sync)."""
        import torch.distributed.checkpoint as dcp

        if kind not in CHECKPOINT_KINDS:
            raise ValueError(f"checkpoint kind {kind!r} is not one of {', '.join(CHECKPOINT_KINDS)}")
        if self._closed:
            raise RuntimeError("ShardedCheckpointManager.save() after close()")
        self.wait()
        name = step_folder_name(int(step))
        temp = self.directory / f"{name}{TEMP_MARKER}{self.temp_tag}"
        tensors = {key: state[key] for key in TENSOR_KEYS}
        extras = {key: value for key, value in state.items() if key not in TENSOR_KEYS}
        try:
            temp.mkdir(parents=True, exist_ok=True)
            if self.rank == 0:
                with open(temp / STEP_STATE, "wb") as file:
                    torch.save(extras, file)
            no_dist = self._group is None
            if sync or not self.use_async:
                dcp.save(tensors, checkpoint_id=str(temp), process_group=self._group, no_dist=no_dist)
                future: Future[Any] = Future()
                future.set_result(None)
            else:
                future = self._async_save(tensors, temp, no_dist)
        except Exception as exc:
            raise _as_checkpoint_error(exc, self.directory / name, "checkpoint not saved") from exc
        self._pending = future
        if self.rank == 0:
            job = (future, temp, name, int(step), kind, dict(best) if best else None)
            if sync or not self.use_async:
                self._finish(*job)
                self.wait()
            else:
                self._finisher = threading.Thread(target=self._finish, args=job, daemon=True,
                                                  name="runctl-sharded-checkpoint")
                self._finisher.start()
        elif sync or not self.use_async:
            self.wait()

    def _async_save(self, tensors: dict[str, Any], temp: Path, no_dist: bool) -> Future[Any]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

        # Pinned host buffers speed up device-to-host copies; on CPU they only cost memory.
        options = StagingOptions(use_pinned_memory=self._on_cuda, use_shared_memory=False,
                                 use_async_staging=False, use_non_blocking_copy=self._on_cuda)
        response = dcp.async_save(tensors, checkpoint_id=str(temp), process_group=self._group, no_dist=no_dist,
                                  async_stager=DefaultStager(options))
        return getattr(response, "upload_completion", response)

    def wait_for_staging(self) -> None:
        """async_save has staged the state before it returned: nothing to wait for."""

    def wait(self) -> None:
        """Block until this rank's write (and, on rank 0, the commit) is done; raise its error once."""
        if self._finisher is not None:
            self._finisher.join()
            self._finisher = None
        if self._pending is not None:
            future, self._pending = self._pending, None
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - reported by rank 0's commit, raised here
                if self._error is None and self.rank != 0:
                    self._error = _as_checkpoint_error(exc, self.directory, "checkpoint not saved")
        error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.wait()

    def protect(self, path: Path | str) -> None:
        self._protected.add(Path(path).name)

    # ---------------------------------------------------------------- commit (rank 0)

    def _finish(self, future: Future[Any], temp: Path, name: str, step: int, kind: str,
                best: dict[str, Any] | None) -> None:
        final = self.directory / name
        try:
            future.result()  # DCP's .metadata is written: every rank's shard is on disk
            committed = self.store.commit_step_folder(temp, name, step, kind, best)
        except BaseException as exc:  # noqa: BLE001 - reported to the training thread, not lost
            error = _as_checkpoint_error(exc, final, "checkpoint not saved")
            self._error = error
            self._emit({"event": "checkpoint_failed", "step": step, "error": str(error)})
            return
        if committed.manifest_problem:
            self._emit({"event": "warning", "step": step, "message": f"{committed.manifest_problem}; "
                        "rewriting it with the checkpoints saved from now on"})
        self._emit({"event": "checkpoint", "step": step, "file": name, "kind": kind, "bytes": committed.bytes})
        try:
            self._apply_retention(just_written=name)
            self.store.clean_temp_step_folders()
        except OSError as exc:
            self._emit({"event": "warning", "step": step,
                        "message": f"{self.directory}: old checkpoints not cleaned up ({exc.strerror or exc})"})

    def _apply_retention(self, just_written: str) -> None:
        manifest = read_manifest(self.directory)
        on_disk = {entry.name: step for entry in os.scandir(self.directory)
                   if (step := step_from_name(entry.name)) is not None}
        doomed = select_for_deletion(
            on_disk, kinds={name: e.kind for name, e in manifest.files.items()}, keep_last=self.keep_last,
            best_file=(manifest.best or {}).get("file") if self.keep_best else None,
            protected=self._protected | {just_written})
        for name, exc in self.store.forget_checkpoints(doomed):
            self._emit({"event": "warning", "message": f"{self.directory / name}: could not delete old "
                        f"checkpoint ({exc.strerror or exc})"})

    def _emit(self, event: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # noqa: BLE001 - a broken listener must not fail a checkpoint
            pass


__all__ = ["CheckpointError", "ShardedCheckpointManager", "load_step_folder", "load_tensor_state",
           "shard_model", "tensor_state"]
