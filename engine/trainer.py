"""The training loop.

`step` counts completed optimizer steps. The loop runs `while step < max_steps`, and the update
that takes the run from `step` to `step + 1` uses lr(step); so a run with max_steps N performs
exactly N updates and ends with a `final` checkpoint at step N.

One step: curriculum settings for this step -> grad_accum micro-batches (forward, scaled
backward) -> clip, optimizer step, EMA -> step += 1 -> log / eval when due -> the commands that
arrived (stop, checkpoint, extend; agreed across ranks) -> checkpoint when due or asked. An async
checkpoint copies the weights and optimizer moments while the next forward/backward runs and the
update waits for that copy (CheckpointManager.wait_for_staging), so the saved state is step N's.

Resume is exact because a checkpoint holds everything the next step reads: weights, optimizer,
GradScaler, EMA, every RNG, the sampler position, the best metric and the curriculum stage; the LR
is a pure function of the step (engine.schedule) and evaluation consumes no RNG.

`.item()` (a GPU sync) happens at the log interval only, with one exception: when nan.action is
`stop`, one boolean per step says whether the loss is finite, so a non-finite loss never reaches
the weights and the checkpoint written is the last finite step.
"""

from __future__ import annotations

import contextlib
import math
import signal as signals
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from runctl.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError, CheckpointManager
from runctl.engine.compat import compare_state_dicts, format_incompatibility
from runctl.engine.control import STOP_BY_SIGNAL, STOP_BY_USER, Commands, Control, ControlFolder
from runctl.engine.curriculum import effective_config, next_stage_step, stage_index
from runctl.engine.data import EpochSampler, eval_index_batches
from runctl.engine.distributed import DistContext
from runctl.engine.ema import WeightEMA
from runctl.engine.runlog import RunLog
from runctl.engine.runtime import Runtime
from runctl.engine.schedule import Schedule, extend_config
from runctl.engine.schema import Optim, RunConfig, as_run_config
from runctl.engine.snapshot import capture_rng, restore_rng
from runctl.engine.stall import STALLED_STOP, StallInterrupt
from runctl.engine.tasks import Task
from runctl.engine.torch_adapter import clip_gradients_, fused_adamw_fits, gradient_norm_of
from runctl.runs.errors import RunctlError
from torch import nn

# run.yaml is rewritten by the caller (engine.api owns the file); the loop only says what changed.
ConfigWriter = Callable[[dict[str, Any]], None]


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def build_optimizer(model: nn.Module, optim: Optim, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW or SGD; weight decay on matrices and embeddings only, not on biases and norms (nanoGPT).

    AdamW runs fused (one kernel per parameter instead of a dozen Python-dispatched ops) when every
    parameter is a plain floating-point tensor on a device with the fused kernel; on a small model
    that is a sixth of a CPU step. A checkpoint carries the choice in its param_groups, so a resume
    continues with the implementation the run was saved with."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas),
                                 fused=fused and fused_adamw_fits(params))
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum)


def apply_optim_settings(optimizer: torch.optim.Optimizer, optim: Optim) -> None:
    """Settings that may differ from the loaded optimizer state (a branch, a curriculum stage)."""
    decay_group, _ = optimizer.param_groups
    decay_group["weight_decay"] = optim.weight_decay
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = tuple(optim.betas)
        if "momentum" in group:
            group["momentum"] = optim.momentum


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, runtime: Runtime, batch_size: int, max_batches: int) -> dict[str, float]:
    """Means over the first `max_batches` validation batches, weighted by batch size; no RNG used."""
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    count = 0
    for indices in eval_index_batches(task.val_size, batch_size, max_batches):
        batch = runtime.to_device(task.get_batch("val", indices))
        with runtime.autocast():
            results = task.eval_step(model, batch)
        for name, value in results.items():
            totals[name] = totals.get(name, 0.0) + value.detach().float() * len(indices)
        count += len(indices)
    model.train(was_training)
    return {name: (total / count).item() for name, total in totals.items()}


def is_improvement(value: float, best: dict[str, Any] | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best["value"] if mode == "min" else value > best["value"]


# Losses kept on the device before they are summed into one tensor: bounds the memory of a long
# log interval while keeping the per-step cost a list append (a tensor add is ~1-3 us on CPU).
_LOSSES_TO_FOLD = 256


@dataclass
class _Interval:
    """What the loop accumulates between two log lines: device losses are summed (one sync)
    when logged; losses already read as floats (nan.action=stop reads each one) add up here."""

    loss_sum: torch.Tensor | float = 0.0
    losses: list[torch.Tensor] = field(default_factory=list)
    steps: int = 0
    units: int = 0
    started: float = 0.0

    def reset(self) -> None:
        self.loss_sum, self.steps, self.units, self.started = 0.0, 0, 0, time.perf_counter()
        self.losses = []

    def add(self, loss: torch.Tensor, units: int) -> None:
        """A loss still on the device (no sync)."""
        self.losses.append(loss)
        if len(self.losses) >= _LOSSES_TO_FOLD:
            self.loss_sum = self.loss_sum + torch.stack(self.losses).sum()
            self.losses = []
        self.steps += 1
        self.units += units

    def add_value(self, loss: float, units: int) -> None:
        """A loss the loop has already read."""
        self.loss_sum += loss
        self.steps += 1
        self.units += units

    def mean_loss(self) -> float:
        if not self.steps:
            return float("nan")
        total = self.loss_sum + torch.stack(self.losses).sum() if self.losses else self.loss_sum
        return float(total) / self.steps


class Trainer:
    """Holds the model, optimizer, sampler and counters of one run and drives the loop."""

    def __init__(self, *, cfg: RunConfig | Mapping[str, Any], run_id: str, task: Task, runtime: Runtime,
                 dist: DistContext, runlog: RunLog, checkpoints: CheckpointManager | None,
                 control: Control, control_folder: ControlFolder | None = None,
                 write_config: ConfigWriter | None = None) -> None:
        cfg = as_run_config(cfg)
        self.cfg = cfg
        self._config_dict = cfg.to_dict()  # run.yaml's mapping, as checkpoints store it
        self.run_id = run_id
        self.task = task
        self.runtime = runtime
        self.dist = dist
        self.runlog = runlog
        self.checkpoints = checkpoints  # None on ranks other than 0
        self.control = control
        self.control_folder = control_folder
        self.write_config = write_config

        seed_everything(cfg.seed)
        self.raw_model = task.build_model().to(runtime.device)
        self.raw_model.train()
        # fsdp: step folders through DCP at any world size; sharded weights from two ranks on.
        self.sharded = cfg.parallel.strategy == "fsdp"
        if self.sharded and cfg.ema.enabled:
            raise RunctlError("ema.enabled: not supported with parallel.strategy fsdp (the average would need "
                              "sharding too); use ddp or switch ema off")
        if self.sharded and dist.enabled:
            from runctl.engine.sharded import shard_model

            self.model = runtime.prepare(shard_model(self.raw_model))
        else:
            self.model = runtime.prepare(dist.wrap(self.raw_model, runtime.device))
        self.optimizer = build_optimizer(self.raw_model, cfg.optim, fused=not self.sharded)
        # Listed once: model.parameters() walks every submodule, ~0.1 ms a step on a small model.
        self._parameters = list(self.raw_model.parameters())
        # Plain tensors of one device and dtype (not FSDP's DTensors): the gradient norm and
        # clipping are three foreach calls (torch_adapter.clip_gradients_) instead of
        # clip_grad_norm_'s grouping by device and dtype.
        self._one_kind_of_parameters = not self.sharded and len({(p.device, p.dtype) for p in self._parameters}) == 1 \
            and all(type(p) is nn.Parameter for p in self._parameters)
        self.schedule = Schedule.from_config(cfg)
        self.sampler = EpochSampler(task.train_size, cfg.data.batch_size, cfg.seed)
        self.ema = WeightEMA(self.raw_model, cfg.ema.decay) if cfg.ema.enabled else None

        self.step = 0
        self.best: dict[str, Any] | None = None
        self.settings = cfg  # the config with the curriculum stage applied
        # What Task.loss receives: a plain mapping, the task protocol's (custom tasks index it).
        self._task_settings = self._config_dict
        self._applied_stage: int | None = None  # recomputed before the first step
        self._stage_until: float = 0.0  # the step at which the next curriculum stage starts
        self._written_lr: float | None = None  # the LR the param groups hold (None: unknown)
        # Settings read on every step, looked up once: a dict lookup or property call is ~0.1 us,
        # and a step of digits_mlp is ~1 ms, so a few dozen of them are a measurable share.
        self._grad_accum = cfg.optim.grad_accum
        self._stop_on_nonfinite = cfg.nan.action == "stop"
        self._distributed = dist.enabled
        self._on_cuda = runtime.is_cuda
        self._autocasts = runtime.autocast_dtype is not None
        # A disabled GradScaler (everything but fp16 on CUDA) passes scale/unscale_/step/update
        # straight through; calling the optimizer directly skips four Python calls a step.
        self._scaler_enabled = runtime.scaler.is_enabled()
        self._staging_possible = False  # a save() since the last update: its copy may be running
        self.interrupted_by: str | None = None  # why a hung step was abandoned (engine.stall)
        self._in_forward = False  # inside a step's forward/backward (engine.stall may abandon it)
        self._batch_origin = (0, 0)  # the sampler's (epoch, position) before the current step's batch
        self._grad_clip = cfg.optim.grad_clip  # of the curriculum stage applied
        self._last_grad_norm: torch.Tensor | float = float("nan")
        self.last_saved_step: int | None = None  # a checkpoint of this run exists at this step
        self._interval = _Interval()
        self._missing_metric_warned = False

    @property
    def max_steps(self) -> int:
        return self.cfg.max_steps

    # ---------------------------------------------------------------- checkpoint state

    def state_dict(self) -> dict[str, Any]:
        if self.sharded:
            from runctl.engine.sharded import tensor_state

            tensors = tensor_state(self.raw_model, self.optimizer)
        else:
            tensors = {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict()}
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "run_id": self.run_id,
            "step": self.step,
            "config": self._config_dict,
            **tensors,
            "scheduler": {"name": self.schedule.name, "max_steps": self.max_steps,
                          "extensions": list(self._config_dict.get("extensions") or []),
                          "lr": self.schedule.lr(self.step)},
            "scaler": self.runtime.scaler.state_dict(),
            "rng": capture_rng(),
            "data": {**self.sampler.state_dict(), "world_size": self.dist.world_size},
            "best": self.best,
            "curriculum_stage": stage_index(self.cfg, self.step),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def check_fits(self, state: dict[str, Any], origin: str) -> None:
        """RunctlError (exit 2) naming keys and shapes when the checkpoint's model is not this model."""
        report = compare_state_dicts(self.raw_model.state_dict(), state["model"])
        if not report.ok:
            raise RunctlError(f"{origin}: checkpoint does not fit the model of run {self.run_id}: "
                              f"{format_incompatibility(report)}")

    def load_state_dict(self, state: dict[str, Any], origin: str, weights_only: bool = False) -> None:
        """Continue from a checkpoint; `weights_only` keeps the weights and starts fresh at step 0."""
        self.check_fits(state, origin)
        if state.get("sharded"):  # a step folder: DCP reads this rank's part, whatever the saving world size
            from runctl.engine.sharded import load_tensor_state

            load_tensor_state(self.raw_model, None if weights_only else self.optimizer, state["sharded"])
        elif self.sharded and self.dist.enabled:
            raise RunctlError(f"{origin}: a single-file checkpoint does not resume under parallel.strategy fsdp "
                              "on several processes; resume it with ddp (or one process) and branch from a "
                              "step folder")
        else:
            self.raw_model.load_state_dict(state["model"])
        if weights_only:
            if self.ema is not None:
                self.ema = WeightEMA(self.raw_model, self.cfg.ema.decay)
            return
        if not state.get("optimizer"):
            raise RunctlError(f"{origin}: checkpoint has no optimizer state; start from its weights with "
                              "`runctl branch RUN --from CKPT --name NEW --weights-only`")
        if not state.get("sharded"):
            self.optimizer.load_state_dict(state["optimizer"])
        apply_optim_settings(self.optimizer, self.cfg.optim)
        if state.get("scaler"):
            self.runtime.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:  # EMA switched on in a branch: it starts from the loaded weights
                self.ema = WeightEMA(self.raw_model, self.cfg.ema.decay)
        if "data" in state:  # another tool's checkpoint has no data position: a fresh epoch
            self.sampler.load_state_dict(state["data"])
        self.step = int(state["step"])
        self._applied_stage = None
        self._written_lr = None  # the optimizer's state brought the LR it was saved with
        self.best = state.get("best")
        if self.best is not None and self.best.get("metric") != self.cfg.eval.metric:
            self.best = None  # a branch that tracks another metric starts its own best
        if "rng" in state:  # ... nor runctl's RNG state: the run's own seed stands
            restore_rng(state["rng"])

    # ---------------------------------------------------------------- the loop

    def run(self) -> str:
        """Train until max_steps or a stop; returns the state the run ends in."""
        watch = self.runlog.stall
        if watch is None:
            return self._loop()
        watch.arm()
        try:
            return self._loop()
        except StallInterrupt:
            watch.disarm()
            return self._end_hung_step()
        finally:
            watch.disarm()

    def _loop(self) -> str:
        self._interval.reset()
        max_steps = self.max_steps
        log_every, eval_every = self.cfg.log.every, self.cfg.eval.every
        checkpoint_every = self.cfg.checkpoint.every
        while self.step < max_steps:
            if self.step >= self._stage_until or self._applied_stage is None:
                self._apply_curriculum()
            # Where a hung step can be abandoned without harm: before its update (engine.stall).
            self._batch_origin = (self.sampler.epoch, self.sampler.position)
            self._in_forward = True
            loss, units = self._forward_backward()
            self._in_forward = False
            if self._stop_on_nonfinite:
                value = loss.item()  # the one sync per step of nan.action=stop; the log reuses it
                if (self._distributed or not math.isfinite(value)) and self._nonfinite(value):
                    return self._stop_nonfinite(loss)
                self._last_grad_norm = self._update()
                self._interval.add_value(value, units)
            else:
                self._last_grad_norm = self._update()
                self._interval.add(loss, units)
            self.step += 1
            step = self.step
            self.runlog.set_progress(step, max_steps)

            last = step >= max_steps
            if step % log_every == 0 or last:
                self._log_train()
            improved = False
            if step % eval_every == 0 or last:
                improved = self._evaluate()
            # Commands are taken after the step's own work, so a stop asked during this step
            # (or its evaluation) ends the run here rather than one step later.
            commands = self._poll_commands()
            if self._distributed:
                commands = self._agree(commands)
            if commands.extend_to:
                self._extend(commands.extend_to)
                max_steps = self.max_steps
                last = step >= max_steps
            stopping = commands.stop is not None and not last
            if stopping and self._interval.steps:
                self._log_train()
            if last or improved or commands.checkpoint or step % checkpoint_every == 0:
                self._checkpoint_if_due(last, improved, commands.checkpoint)
            if stopping:
                return self._halt(commands)
        return self._finish()

    def _apply_curriculum(self) -> None:
        """Settings for the update from `step`: every stage with at_step <= step applied.

        Called by the loop only when a stage boundary is reached (or the stage is unknown)."""
        stage = stage_index(self.cfg, self.step)
        self._stage_until = next_stage_step(self.cfg, self.step)
        if stage != self._applied_stage:
            self.settings, stage = effective_config(self.cfg, self.step)
            self._task_settings = self.settings.to_dict()
            apply_optim_settings(self.optimizer, self.settings.optim)
            self._applied_stage = stage
            self._grad_clip = self.settings.optim.grad_clip

    def _forward_backward(self) -> tuple[torch.Tensor, int]:
        """grad_accum micro-batches; returns the step's mean loss (on the device) and its units."""
        lr = self.schedule.lr(self.step)
        if lr != self._written_lr:  # a constant schedule after warmup writes it once
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._written_lr = lr
        if self._grad_accum == 1:
            # The common case without the accumulation arithmetic: each tensor op costs ~10 us,
            # a visible share of a small model's step (bench/bench_engine.py).
            indices = self.sampler.next_indices()
            if self._distributed:
                indices = self.dist.shard(indices)
            batch = self.task.get_batch("train", indices)
            units = self.task.units(batch) * self.dist.world_size
            if self._on_cuda:
                batch = self.runtime.to_device(batch)
            if self._autocasts:
                with self.runtime.autocast():
                    loss = self.task.loss(self.model, batch, self._task_settings)
            else:
                loss = self.task.loss(self.model, batch, self._task_settings)
            if self._scaler_enabled:
                self.runtime.scaler.scale(loss).backward()
            else:
                loss.backward()
            loss = loss.detach()
            return (loss if loss.dtype == torch.float32 else loss.float()), units
        loss_sum = torch.zeros((), device=self.runtime.device)
        units = 0
        for micro in range(self._grad_accum):
            indices = self.dist.shard(self.sampler.next_indices())
            batch = self.task.get_batch("train", indices)
            units += self.task.units(batch) * self.dist.world_size
            batch = self.runtime.to_device(batch)
            # DDP all-reduces gradients on the last micro-batch only.
            # FSDP2 reduce-scatters every micro-batch (correct, only slower).
            sync = contextlib.nullcontext() if micro == self._grad_accum - 1 or not self._distributed \
                or self.sharded else self.model.no_sync()
            with sync:
                with self.runtime.autocast():
                    loss = self.task.loss(self.model, batch, self._task_settings)
                self.runtime.scaler.scale(loss / self._grad_accum).backward()
            loss_sum += loss.detach().float()
        return loss_sum / self._grad_accum, units

    def _update(self) -> torch.Tensor:
        scaler_enabled = self._scaler_enabled
        if scaler_enabled:
            self.runtime.scaler.unscale_(self.optimizer)
        clip = self._grad_clip
        if self._one_kind_of_parameters:
            grad_norm = clip_gradients_([p.grad for p in self._parameters if p.grad is not None], clip)
        elif clip:  # clip_grad_norm_ skips parameters without a gradient itself; its result has no graph
            grad_norm = torch.nn.utils.clip_grad_norm_(self._parameters, clip)
        else:
            grad_norm = gradient_norm_of(self._parameters)
        if self._staging_possible:
            # The last save may still be copying weights and moments (staging, engine.snapshot):
            # the forward and backward above overlapped it; the step below changes them.
            self.checkpoints.wait_for_staging()
            self._staging_possible = False
        if scaler_enabled:
            self.runtime.scaler.step(self.optimizer)
            self.runtime.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.raw_model)
        return grad_norm

    # ---------------------------------------------------------------- commands

    def _poll_commands(self) -> Commands:
        if self.control_folder is not None:
            for warning in self.control_folder.poll():
                self.runlog.event("warning", message=warning)
        return self.control.take()

    def _agree(self, commands: Commands) -> Commands:
        """The commands every rank acts on: rank 0's control folder and any rank's signal."""
        if not self._distributed:
            return commands
        stop_code = {None: 0, STOP_BY_USER: 1, STOP_BY_SIGNAL: 2}[commands.stop]
        # The signal travels as its number: torchrun relays a hang-up to every rank, and the rank
        # that writes the event (rank 0) may not have received it yet when the ranks agree.
        flags = self.dist.agree_max([stop_code, float(commands.checkpoint), float(commands.extend_to or 0),
                                     float(_signal_number(commands.signal))], self.runtime.device)
        stop = {0: None, 1: STOP_BY_USER, 2: STOP_BY_SIGNAL}[int(flags[0])]
        signal = commands.signal or _signal_name(int(flags[3]))
        if signal is None and stop == STOP_BY_SIGNAL:
            signal = "a signal to another rank"
        return Commands(stop, signal, bool(flags[1]), int(flags[2]) or None)

    def _nonfinite(self, loss: float) -> bool:
        """With nan.action=stop: is this step's loss (read by the loop) nan/inf on any rank?"""
        local = not math.isfinite(loss)
        if not self._distributed:
            return local
        return bool(self.dist.agree_max([float(local)], self.runtime.device)[0])

    def _extend(self, new_max: int) -> None:
        old_max = self.max_steps
        try:
            self._config_dict = extend_config(self._config_dict, self.step, new_max)
        except ValueError as exc:
            self.runlog.event("warning", message=f"extend ignored: {exc}")
            return
        self.cfg = as_run_config(self._config_dict)
        self.schedule = Schedule.from_config(self.cfg)
        self._applied_stage = None
        self._written_lr = None
        if self.dist.is_main and self.write_config is not None:
            self.write_config(self._config_dict)
        self.runlog.set_progress(self.step, self.max_steps)
        self.runlog.event("extended", from_max=old_max, to_max=self.max_steps)

    # ---------------------------------------------------------------- log, eval, checkpoint

    def _log_train(self) -> None:
        interval = self._interval
        elapsed = max(time.perf_counter() - interval.started, 1e-9)
        loss = interval.mean_loss()
        line = {
            "step": self.step, "time": time.time(), "train/loss": loss,
            "lr": self.schedule.lr(self.step - 1),
            "grad_norm": _as_float(self._last_grad_norm),
            "step_time": elapsed / max(interval.steps, 1),
            f"{self.task.unit}_per_s": interval.units / elapsed,
        }
        self.runlog.metrics(line)
        if not math.isfinite(loss) and self.cfg.nan.action == "warn":
            self.runlog.event("nan", value=loss)
        interval.reset()

    def _evaluate(self) -> bool:
        """Evaluate on rank 0 (the raw module: no DDP collectives); True when the best improved."""
        if not self.dist.is_main and not (self.sharded and self._distributed):
            return False  # FSDP: every rank takes part in the forward's all-gathers; rank 0 logs
        eval_cfg = self.cfg.eval
        results = evaluate(self.raw_model, self.task, self.runtime, self.cfg.data.batch_size, eval_cfg.batches)
        self.runlog.metrics({"step": self.step, "time": time.time(), **results})
        value = results.get(eval_cfg.metric)
        if value is None:
            if not self._missing_metric_warned:
                self._missing_metric_warned = True
                self.runlog.event("warning", message=f"eval.metric: {eval_cfg.metric} is not among the "
                                  f"evaluation results ({', '.join(results)}); no best checkpoint is tracked")
            return False
        if not is_improvement(value, self.best, eval_cfg.mode):
            return False
        self.best = {"metric": eval_cfg.metric, "value": value, "step": self.step}
        return True

    def _checkpoint_if_due(self, last: bool, improved: bool, requested: bool) -> None:
        keep_best = self.cfg.checkpoint.keep_best
        if last:
            kind = "final"
        elif self.step % self.cfg.checkpoint.every == 0 or requested:
            kind = "periodic"
        elif improved and keep_best:
            kind = "best"
        else:
            return
        self.save(kind, best=self.best if improved and keep_best else None, sync=last)

    def save(self, kind: str, best: dict[str, Any] | None = None, sync: bool = False) -> None:
        """Checkpoint the current step (rank 0). A failed earlier background write was already
        reported as a checkpoint_failed event; this save tries again rather than giving up the run."""
        if self.checkpoints is None:
            return
        try:
            self.checkpoints.wait()
        except CheckpointError:
            pass
        defer = () if self.sharded else self._written_only_by_the_update()
        self.checkpoints.save(self.state_dict(), self.step, kind, best=best, sync=sync, defer=defer)
        self._staging_possible = True
        self.last_saved_step = self.step

    def _written_only_by_the_update(self) -> set[int]:
        """Storages of the CPU tensors that change only in _update (optimizer step, EMA): their
        checkpoint copy may finish during the next forward/backward. Buffers are not among them."""
        tensors = [*self.raw_model.parameters()]
        for per_param in self.optimizer.state.values():
            tensors.extend(v for v in per_param.values() if isinstance(v, torch.Tensor))
        if self.ema is not None:
            tensors.extend(self.ema.shadow.values())
        return {t.untyped_storage().data_ptr() for t in tensors if t.device.type == "cpu"}

    # ---------------------------------------------------------------- endings

    def _finish(self) -> str:
        if self.last_saved_step != self.step and self.step > 0:
            self.save("final", sync=True)
        self.runlog.event("finished", max_steps=self.max_steps)
        return "finished"

    def _halt(self, commands: Commands) -> str:
        if self.last_saved_step != self.step:
            self.save("interrupt", sync=True)
        elif self.checkpoints is not None:
            self.checkpoints.wait()
        if commands.stop == STOP_BY_SIGNAL:
            self.runlog.event("interrupted", signal=commands.signal)
            return "interrupted"
        self.runlog.event("stopped")
        return "stopped"

    def _end_hung_step(self) -> str:
        """A stop arrived while the step was stalled and the step was interrupted (StallInterrupt).
        Abandoned before its update, the weights are still those of `step`: rewind the sampler to
        the abandoned batch and checkpoint. Anywhere else (the update, a save) nothing is trusted
        to be whole, so the last checkpoint on disk stays the one to resume from."""
        abandoned_forward = self._in_forward
        self._in_forward = False
        if abandoned_forward:
            self.optimizer.zero_grad(set_to_none=True)
            epoch, position = self._batch_origin
            self.sampler.load_state_dict({"epoch": epoch, "position": position})
            if self.step > 0 and self.last_saved_step != self.step:
                self.save("interrupt", sync=True)
        elif self.checkpoints is not None:
            self.checkpoints.wait()
        self.interrupted_by = self.control.take().signal or STALLED_STOP
        self.runlog.event("interrupted", signal=self.interrupted_by, stalled=True, checkpoint=abandoned_forward)
        return "interrupted"

    def _stop_nonfinite(self, loss: torch.Tensor) -> str:
        """The loss of step+1 is not finite: keep the weights of `step` (the update was not applied)."""
        value = float(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.runlog.event("nan", step=self.step + 1, value=value)
        if self.step > 0 and self.last_saved_step != self.step:
            self.save("interrupt", sync=True)
        raise NonFiniteLoss(f"non-finite training loss ({value}) at step {self.step + 1}; "
                            f"checkpoint of the last finite step {self.step} kept (nan.action: stop)")


def _as_float(value: torch.Tensor | float) -> float:
    """A norm as a number; FSDP's clip_grad_norm_ returns a DTensor (full_tensor is collective)."""
    full_tensor = getattr(value, "full_tensor", None)
    return float(full_tensor() if full_tensor is not None else value)


class NonFiniteLoss(RuntimeError):
    """The loss went nan/inf with nan.action=stop; the run ends crashed after a checkpoint."""


def _signal_number(name: str | None) -> int:
    try:
        return int(signals.Signals[name]) if name else 0
    except KeyError:
        return 0


def _signal_name(number: int) -> str | None:
    try:
        return signals.Signals(number).name if number else None
    except ValueError:
        return None
