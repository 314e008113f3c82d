"""FSDP2 (`parallel.strategy: fsdp`) and its sharded checkpoints, through torch.distributed.checkpoint.

The model is wrapped with `fully_shard` (each direct child that has parameters, then the root), so
every rank holds 1/world_size of the weights and optimizer moments as DTensors. A checkpoint is a
step folder written by DCP: every rank writes its shard (`__<rank>_0.distcp`), rank 0 writes DCP's
`.metadata` last (its commit marker) and runctl's `runctl.pt` (the step's non-tensor state: config,
RNG, data position, best, schedule). `StepFolderWriter` is engine.checkpoint.CheckpointManager's
writer for this form (the manager owns when saves run, errors, events and retention, as for a
single file). The folder is written under a temporary name; once DCP's save has finished on every rank (rank 0's metadata write waits for every rank's write results),
rank 0 hashes every file, writes the manifest entry (bytes and sha256 of each file) and renames the
folder into place, through runs.store.RunStore.commit_step_folder; a kill before the manifest
leaves a temp folder the next start removes, a kill between the manifest and the rename a
`missing` entry that resume skips.

Async saves use `dcp.async_save`: the state is staged to CPU memory before it returns (pinned
memory on CUDA only), the write runs on DCP's thread over a gloo group of its own, so the next
steps' collectives never wait for it; the manager's writer thread waits for it and commits, and
the next save (or the end of the run) waits for that.

Loading reshards: DCP reads each rank's part of the saved tensors whatever the saving world size,
into the model at hand (FSDP-sharded DTensors, or plain tensors for DDP or one process).
`.metadata` is a pickle: its sha256 is checked against the manifest before DCP reads it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from runctl.runs.errors import RunctlError
from runctl.runs.integrity import RESUME_KEYS
from runctl.runs.layout import DCP_METADATA, STEP_STATE, step_folder_name
from runctl.runs.manifest import read_manifest
from runctl.runs.step_folder import load_step_state, tensor_shapes, verify_step_folder
from runctl.runs.store import CommittedCheckpoint, RunStore
from torch import nn

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
    assert entry is not None and entry.files is not None  # verified `ok` above
    shapes = tensor_shapes(path, entry.files[DCP_METADATA]["sha256"])
    state["model"] = {key[len("model."):]: torch.empty(shape, device="meta")
                      for key, shape in shapes.items() if key.startswith("model.")}
    if any(key.startswith("optimizer.") for key in shapes):
        state["optimizer"] = {"sharded": True}
    state["sharded"] = str(path)
    missing = [key for key in require if not state.get(key)]
    if missing:
        raise RunctlError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


class StepFolderWriter:
    """engine.checkpoint.CheckpointManager's writer for step folders: every rank writes its shard
    through DCP (async on a gloo group of its own, or synchronously), rank 0 commits the folder."""

    def __init__(self, *, rank: int, temp_tag: int, on_cuda: bool = False) -> None:
        self.rank = rank
        self.temp_tag = temp_tag  # rank 0's pid: every rank writes into the same temp folder
        self._on_cuda = on_cuda
        # DCP's async write runs collectives from its own thread: a gloo group of its own keeps
        # them apart from the training's (NCCL or gloo) collectives.
        self._group = dist.new_group(backend="gloo") if dist.is_initialized() else None

    def name(self, step: int) -> str:
        return step_folder_name(step)

    def begin(self, store: RunStore, state: dict[str, Any], step: int, inline: bool,
              defer: Collection[int]) -> tuple[Any, None]:
        """Start DCP's save into the step's temp folder; DCP has staged the tensors when it returns."""
        import torch.distributed.checkpoint as dcp

        tensors = {key: state[key] for key in TENSOR_KEYS}
        extras = {key: value for key, value in state.items() if key not in TENSOR_KEYS}
        write_state = (lambda file: torch.save(extras, file)) if self.rank == 0 else None
        temp = store.begin_step_folder(step, self.temp_tag, write_state)
        no_dist = self._group is None
        if inline:
            dcp.save(tensors, checkpoint_id=str(temp), process_group=self._group, no_dist=no_dist)
            future: Future[Any] = Future()
            future.set_result(None)
        else:
            future = self._async_save(tensors, temp, no_dist)
        return (future, temp), None

    def commit(self, store: RunStore, payload: Any, step: int, kind: str, best: dict[str, Any] | None,
               on_renamed: Callable[[], None]) -> CommittedCheckpoint | None:
        future, temp = payload
        future.result()  # this rank's shard is on disk; on rank 0, DCP's .metadata: every rank's is
        if self.rank != 0:
            return None
        return store.commit_step_folder(temp, self.name(step), step, kind, best)

    def _async_save(self, tensors: dict[str, Any], temp: Path, no_dist: bool) -> Future[Any]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

        # Pinned host buffers speed up device-to-host copies; on CPU they only cost memory.
        options = StagingOptions(use_pinned_memory=self._on_cuda, use_shared_memory=False,
                                 use_async_staging=False, use_non_blocking_copy=self._on_cuda)
        response = dcp.async_save(tensors, checkpoint_id=str(temp), process_group=self._group, no_dist=no_dist,
                                  async_stager=DefaultStager(options))
        return getattr(response, "upload_completion", response)


__all__ = ["StepFolderWriter", "load_step_folder", "load_tensor_state", "shard_model", "tensor_state"]
