"""`runctl train | resume | extend | branch | stop`: headless training from the command line.

Training runs in this process (`--nproc 1`), under torchrun (`--nproc N`: after creating or
changing the run here, this command runs `torchrun --standalone --nproc_per_node=N -m runctl
resume RUN` and relays signals to it), or in a background process (`--detach`: its output goes to RUN/train.log
and the run path is printed on stdout, for scripts). On many machines (`--nnodes M --node-rank K
--rdzv HOST:PORT`, one command per machine) torchrun joins a c10d rendezvous at HOST:PORT, which
node 0 hosts; node 0 alone creates or changes the run (train, extend, branch), the other nodes
only start their ranks on the run folder, which every node sees on shared storage. Progress is one updating line on a terminal
(step/max, loss, it/s, ETA) and plain lines otherwise; warnings and errors go to stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runctl.engine import api
from runctl.engine.lifeline import (
    AGENT_PID_ENV,
    LAUNCHER_PID_ENV,
    UI_PID_ENV,
    stop_when_parent_exits,
    stop_with_env_parent,
)
from runctl.engine.signals import hangups_ignored
from runctl.runs import safe_files
from runctl.runs.discovery import resolve_run
from runctl.runs.errors import RunctlError
from runctl.runs.humanize import human_bytes
from runctl.runs.lock import is_locked
from runctl.runs.status import read_status
from runctl.tui.gc_policy import engine_started

from runctl.console import keep_output_in

DETACHED_LOG = "train.log"
# How long `--detach` waits for the background engine to confirm it started (torch import, data).
DETACH_CONFIRM_SECONDS = 120.0
# How long a node's launcher lets torchrun's agent wait for the other nodes' agents once the run
# has ended (torch's own exit barrier waits 300 s for an agent that a signal already ended).
AGENT_EXIT_GRACE = 15.0
# Progress is written at most this often: on a terminal, the one line redrawn with the newest step
# (it overwrites itself, so a faster redraw shows nothing more); to a file or pipe, every line
# since the last write, in one write. digits_mlp logs ~130 lines a second, and each write is a
# system call (on a terminal, a wake-up of the console thread, runctl.console) paid by the
# training loop.
PROGRESS_WRITE_S = 0.1


# ---------------------------------------------------------------- subcommands


def train(args: argparse.Namespace) -> int:
    launch = launch_from_args(args)
    if launch.nnodes > 1 and not args.name:
        raise RunctlError(f"--nnodes {launch.nnodes}: give the run a --name (every node names the same run)")
    if not launch.leader:
        return _start(Path(args.root) / args.name, args, from_ckpt=None)
    run_dir = api.new_run(args.config, args.root, args.name, args.overrides)
    return _start(run_dir, args, from_ckpt=None, created=True)


def resume(args: argparse.Namespace) -> int:
    launch_from_args(args)
    run_dir = resolve_run(args.run, args.root)
    from_ckpt = str(api.resolve_checkpoint(run_dir, args.from_ckpt)) if args.from_ckpt else None
    return _start(run_dir, args, from_ckpt=from_ckpt)


def extend(args: argparse.Namespace) -> int:
    launch = launch_from_args(args)
    run_dir = resolve_run(args.run, args.root)
    if not launch.leader:
        if is_locked(run_dir):
            _say(f"{run_dir}: running; node 0's `runctl extend` asks its engine, every rank follows")
            return 0
        return _start(run_dir, args, from_ckpt=None)
    result = api.extend_run(run_dir, steps=args.steps, to=args.to)
    if result.live:
        _say(f"{run_dir}: asked the running engine to extend max_steps {result.from_max} -> {result.to_max}")
        return 0
    _say(f"{run_dir}: max_steps {result.from_max} -> {result.to_max} "
         f"(LR decays from its value at step {result.at_step} to the minimum at {result.to_max})")
    return _start(run_dir, args, from_ckpt=None)


def branch(args: argparse.Namespace) -> int:
    launch = launch_from_args(args)
    if args.config is not None:
        if not launch.leader:
            return _start(Path(args.root) / args.name, args, from_ckpt=None)
        return _branch_foreign(args)
    if args.from_ckpt is None:
        raise RunctlError("branch: --from CKPT is required (or give another tool's checkpoint and --config CONFIG)")
    parent = resolve_run(args.run, args.root)
    if not launch.leader:
        return _start(parent.parent / args.name, args, from_ckpt=None)
    result = api.branch_run(parent, args.from_ckpt, args.name, args.overrides, weights_only=args.weights_only)
    if args.no_start:
        for change in result.changes:
            _warn(f"setting changed from the checkpoint: {change}")
        print(result.run_dir, flush=True)
        return 0
    return _start(result.run_dir, args, from_ckpt=None, created=True)


def _branch_foreign(args: argparse.Namespace) -> int:
    if args.from_ckpt is not None:
        raise RunctlError("branch: --from goes with a runctl run; with --config give the checkpoint itself")
    result = api.branch_foreign(args.run, args.config, args.name, args.overrides,
                                weights_only=args.weights_only, root=args.root)
    start = f"step {result.step}" if not result.weights_only else "step 0, weights only"
    _say(f"{result.run_dir}: branched from {args.run} ({result.layout}; weights from "
         f"{result.weights_from}; {start})")
    if result.note:
        _warn(result.note)
    if args.no_start:
        print(result.run_dir, flush=True)
        return 0
    return _start(result.run_dir, args, from_ckpt=None, created=True)


def stop(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run, args.root)
    before = read_status(run_dir)
    api.stop_run(run_dir, checkpoint_only=args.checkpoint_only)
    what = "write a checkpoint" if args.checkpoint_only else "checkpoint and stop"
    _say(f"{run_dir}: asked the engine (pid {before.get('pid', '?')}) to {what}")
    if args.wait <= 0:
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        status = read_status(run_dir)
        if args.checkpoint_only and status.get("checkpoint") != before.get("checkpoint"):
            _say(f"{run_dir}: checkpoint {status.get('checkpoint')} written")
            return 0
        if not args.checkpoint_only and not is_locked(run_dir):
            _say(f"{run_dir}: {status.get('state', 'unknown')} at step {status.get('step')} "
                 f"(checkpoint {status.get('checkpoint')})")
            return 0
        time.sleep(0.1)
    _warn(f"{run_dir}: no change after {args.wait:g} s; the engine is still running")
    return 1


# ---------------------------------------------------------------- starting an engine


@dataclass(frozen=True)
class Launch:
    """How many processes train a run: `nproc` per node on `nnodes` machines."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv: str | None = None  # HOST:PORT of the c10d rendezvous, on node 0

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    @property
    def leader(self) -> bool:
        """Node 0 creates or changes the run; the others only start ranks on it."""
        return self.node_rank == 0

    def flags(self) -> list[str]:
        """The same launch as runctl options (for a detached engine)."""
        flags = ["--nproc", str(self.nproc)] if self.nproc > 1 else []
        if self.nnodes > 1:
            flags += ["--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank), "--rdzv", str(self.rdzv)]
        return flags

    def torchrun_args(self, run_id: str) -> list[str]:
        if self.nnodes == 1:
            return ["--standalone", f"--nproc_per_node={self.nproc}"]
        # c10d assigns the global ranks itself; is_host says which launcher serves the store, so
        # two launchers on one host (or a HOST that names several) do not both try to.
        return [f"--nnodes={self.nnodes}", f"--nproc_per_node={self.nproc}", "--rdzv_backend=c10d",
                f"--rdzv_endpoint={self.rdzv}", f"--rdzv_id={run_id}",
                f"--rdzv_conf=is_host={'true' if self.leader else 'false'}"]


def launch_from_args(args: argparse.Namespace) -> Launch:
    """--nproc, --nnodes, --node-rank and --rdzv, checked together; RunctlError names the flag."""
    nproc, nnodes = args.nproc, getattr(args, "nnodes", 1)
    node_rank, rdzv = getattr(args, "node_rank", 0), getattr(args, "rdzv", None)
    if nproc < 1:
        raise RunctlError(f"--nproc {nproc}: must be at least 1")
    if nnodes < 1:
        raise RunctlError(f"--nnodes {nnodes}: must be at least 1")
    if nnodes == 1 and (rdzv or node_rank):
        flag = "--rdzv" if rdzv else f"--node-rank {node_rank}"
        raise RunctlError(f"{flag}: only for a run on many machines (--nnodes 2 or more)")
    if not 0 <= node_rank < nnodes:
        raise RunctlError(f"--node-rank {node_rank}: must be 0 to {nnodes - 1} (--nnodes {nnodes})")
    if nnodes > 1:
        if not rdzv:
            raise RunctlError(f"--nnodes {nnodes}: needs --rdzv HOST:PORT (node 0's address and a free port)")
        host, _, port = rdzv.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RunctlError(f"--rdzv {rdzv}: expected HOST:PORT, such as node0.cluster:29500")
    return Launch(nproc, nnodes, node_rank, rdzv)


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _start(run_dir: Path, args: argparse.Namespace, from_ckpt: str | None, created: bool = False) -> int:
    launch = launch_from_args(args)
    if getattr(args, "detach", False):
        return _detach(run_dir, launch, from_ckpt)
    # Once the terminal is gone (an SSH drop), what this process prints goes to the run's log.
    keep_output_in(run_dir / DETACHED_LOG)
    if created:
        print(run_dir, flush=True)
    if launch.distributed and not _under_torchrun():
        return _run_torchrun(run_dir, launch, from_ckpt)
    return _train_here(run_dir, from_ckpt)


def _worker_args(run_dir: Path, from_ckpt: str | None) -> list[str]:
    return ["-m", "runctl", "resume", str(run_dir), *(["--from", from_ckpt] if from_ckpt else [])]


def _run_torchrun(run_dir: Path, launch: Launch, from_ckpt: str | None) -> int:
    """Train under torchrun (`--standalone`, or this node's part of a c10d rendezvous) and relay
    signals to it.

    torchrun runs in a session of its own, so a Ctrl-C or an SSH hangup reaches the ranks exactly
    once, through torchrun's agent, and each rank finishes its step and checkpoints. A second
    signal goes to the whole process group at once: every rank gets its second signal and exits.
    """
    command = [sys.executable, "-m", "runctl.engine.torchrun_agent", *launch.torchrun_args(run_dir.name),
               *_worker_args(run_dir, from_ckpt)]
    sys.stdout.flush()
    # torchrun's own log lines (workers starting, signals forwarded) only at LOGLEVEL=WARNING or lower.
    # The agent and the ranks stop with a checkpoint if this process is killed outright.
    env = {"LOGLEVEL": "ERROR", **os.environ, LAUNCHER_PID_ENV: str(os.getpid())}
    before = read_status(run_dir)
    process = subprocess.Popen(command, start_new_session=True, env=env)
    relayed: list[int] = []

    def relay(signum: int, frame: object) -> None:
        try:
            if relayed:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        except ProcessLookupError:
            pass
        relayed.append(signum)

    relayed_signals = [signal.SIGINT, signal.SIGTERM, *([] if hangups_ignored() else [signal.SIGHUP])]
    previous = {sig: signal.signal(sig, relay) for sig in relayed_signals}
    try:
        if launch.nnodes > 1:
            code, ended_here = _wait_for_agent(process, run_dir, before)
        else:
            code, ended_here = process.wait(), False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state = read_status(run_dir).get("state")
    if state == "interrupted" and relayed:
        return 128 + relayed[0]
    if ended_here:
        return 0 if state in ("finished", "stopped") else 1
    return 0 if state in ("finished", "stopped") and code == 0 else (code or 1)


def _wait_for_agent(process: subprocess.Popen[bytes], run_dir: Path, before: dict[str, Any]) -> tuple[int, bool]:
    """Wait for this node's torchrun agent; (its exit code, whether runctl ended it).

    After its ranks finish, an agent waits up to 300 s in torch's exit barrier for every other
    node's agent; an agent ended by a signal (the node whose runctl got Ctrl-C or SIGTERM) never
    arrives there. Once this attempt of the run has ended (status.json: a new started_at, a final
    state) and the agent is still waiting AGENT_EXIT_GRACE seconds later, runctl ends it.
    """
    ended_at: float | None = None
    while True:
        try:
            return process.wait(timeout=0.5), False
        except subprocess.TimeoutExpired:
            pass
        status = read_status(run_dir)
        over = status.get("started_at") != before.get("started_at") and status.get("state") not in (None, "running")
        if not over:
            ended_at = None
            continue
        ended_at = ended_at or time.monotonic()
        if time.monotonic() - ended_at < AGENT_EXIT_GRACE:
            continue
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=AGENT_EXIT_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
        _say(f"{run_dir}: the run ended {status.get('state')} at step {status.get('step')}; this node's "
             "launcher stopped waiting for the other nodes' launchers")
        return process.returncode, True


def _detach(run_dir: Path, launch: Launch, from_ckpt: str | None) -> int:
    """Start the engine in a session of its own (it outlives this shell and its SSH connection),
    print the run path, and wait until the engine has started or failed, so a mistake that only
    the engine can find (no GPU, an unusable checkpoint) is still reported here."""
    log_path = run_dir / DETACHED_LOG
    command = [sys.executable, *_worker_args(run_dir, from_ckpt), *launch.flags()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    launched = time.time()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, env=env)
    print(run_dir, flush=True)
    deadline = time.monotonic() + DETACH_CONFIRM_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:  # it ended already: an error, or nothing to do
            last = _last_line_of(log_path)
            if code:
                sys.stderr.write(f"{last}\n" if last.startswith("runctl:") else f"runctl: {run_dir}: {last}\n")
            else:
                _say(last)
            return code
        started = read_status(run_dir).get("started_at")
        if isinstance(started, int | float) and started >= launched:
            break
        time.sleep(0.1)
    _say(f"training in the background (pid {process.pid}); output: {log_path}; "
         f"stop it with `runctl stop {run_dir}`")
    return 0


def _last_line_of(path: Path) -> str:
    text = safe_files.read_tail(path, 64 * 1024).decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _train_here(run_dir: Path, from_ckpt: str | None) -> int:
    if _under_torchrun():
        stop_with_env_parent(AGENT_PID_ENV)  # a rank stops, with a checkpoint, when its agent is killed
    elif os.environ.get(UI_PID_ENV, "").isdigit():
        # The engine process of a UI (`runctl --engine process`) stops, with a checkpoint, if the UI
        # dies; the variable is not passed on to anything this process starts.
        stop_when_parent_exits(int(os.environ.pop(UI_PID_ENV)))
    quiet = int(os.environ.get("RANK", "0")) != 0
    progress = HeadlessProgress(api.read_run_config(run_dir)["max_steps"], quiet=quiet)

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") in ("started", "resumed"):
            engine_started()
        progress.on_event(event)

    result = api.resume_run(run_dir, from_ckpt=from_ckpt, on_event=on_event, on_metrics=progress.on_metrics)
    progress.close()
    if quiet:
        if result.state != "crashed":
            return 0
        # Rank 0 sees only "connection closed by peer": the cause is this rank's to say.
        _warn(f"{run_dir}: rank {os.environ.get('RANK')} crashed at step {result.step}: {result.error}")
        return 1
    if result.state == "crashed":
        _warn(f"{run_dir}: crashed at step {result.step}: {result.error} (traceback in events.jsonl)")
        return 1
    if result.state == "interrupted":
        _say(f"{run_dir}: interrupted ({result.signal}) at step {result.step}; continue with `runctl resume {run_dir}`")
        return api.signal_exit_code(result.signal)
    if result.state == "stopped":
        _say(f"{run_dir}: stopped at step {result.step}; continue with `runctl resume {run_dir}`")
        return 0
    for warning in result.warnings:
        _warn(warning)
    _say(f"{run_dir}: finished at step {result.step}/{result.max_steps}")
    return 0


# ---------------------------------------------------------------- progress display


class HeadlessProgress:
    """Turns the engine's events and metrics lines into terminal output.

    Called from the training thread and the checkpoint writer thread, so output holds a lock.
    """

    def __init__(self, max_steps: int, stream: IO[str] | None = None, quiet: bool = False,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_steps = max_steps
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._line_open = False
        self._clock = clock
        self._next_write = 0.0
        self._waiting: list[dict[str, Any]] = []  # metrics lines not written yet (a tty: the newest)

    def on_metrics(self, line: dict[str, Any]) -> None:
        if self.quiet:
            return
        if "train/loss" in line:
            self._progress(line)
        else:
            values = "  ".join(f"{k} {_num(v)}" for k, v in line.items() if k not in ("step", "time"))
            self._print(f"eval step {line['step']}: {values}")

    def on_event(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        kind = event.get("event")
        step = event.get("step")
        if kind == "started":
            self.max_steps = event.get("max_steps", self.max_steps)
            origin = f" from {event['from']}" if event.get("from") else ""
            self._print(f"training from step {step}{origin} to {self.max_steps} (world size {event.get('world_size', 1)})")
        elif kind == "resumed":
            origin = event.get("from") or "the start (no checkpoint yet)"
            self._print(f"resumed at step {step} from {origin}, training to {self.max_steps}")
        elif kind == "checkpoint":
            self._print(f"checkpoint {event.get('file')} ({event.get('kind')}, {human_bytes(event.get('bytes'))})")
        elif kind == "extended":
            self.max_steps = event.get("to_max", self.max_steps)
            self._print(f"max_steps {event.get('from_max')} -> {event.get('to_max')} at step {step}")
        elif kind == "skipped_checkpoint":
            self._error(f"skipped checkpoint {event.get('file')}: {event.get('reason')}")
        elif kind in ("warning", "checkpoint_failed"):
            self._error(f"warning: {event.get('message') or event.get('error')}")
        elif kind == "nan":
            self._error(f"non-finite loss {event.get('value')} at step {step}")

    def close(self) -> None:
        with self._lock:
            self._end_line()
            self.stream.flush()

    def _progress(self, line: dict[str, Any]) -> None:
        with self._lock:
            if self.tty:
                self._waiting[:] = (line,)
            else:
                self._waiting.append(line)
            now = self._clock()
            if now >= self._next_write:
                self._next_write = now + PROGRESS_WRITE_S
                self._write_waiting()

    def _write_waiting(self) -> None:
        if not self._waiting:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + self._progress_text(self._waiting[-1]))
            self._line_open = True
        else:
            self.stream.write("".join(self._progress_text(line) + "\n" for line in self._waiting))
        self._waiting.clear()
        self.stream.flush()

    def _progress_text(self, line: dict[str, Any]) -> str:
        step = line["step"]
        step_time = line.get("step_time") or 0.0
        rate = 1.0 / step_time if step_time > 0 else 0.0
        eta = _duration((self.max_steps - step) * step_time) if step_time > 0 else "?"
        return f"step {step}/{self.max_steps}  loss {_num(line.get('train/loss'))}  {rate:.1f} it/s  ETA {eta}"

    def _print(self, text: str) -> None:
        with self._lock:
            self._end_line()
            self.stream.write(text + "\n")
            self.stream.flush()

    def _error(self, text: str) -> None:
        with self._lock:
            self._end_line()
            self.stream.flush()
            sys.stderr.write(f"runctl: {text}\n")
            sys.stderr.flush()

    def _end_line(self) -> None:
        """Write the progress not written yet (on a terminal, close its line), before any other line."""
        self._write_waiting()
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False


def _say(text: str) -> None:
    """Messages for the human, on stderr, so stdout stays parseable (the run path)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _warn(text: str) -> None:
    sys.stderr.write(f"runctl: {text}\n")
    sys.stderr.flush()


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) >= 1e-3 else f"{value:.3g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
