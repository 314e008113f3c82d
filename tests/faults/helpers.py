"""The fault suite's harness: it drives runctl only through its user contracts.

That means the CLI in a subprocess (`python -m runctl ...`, exactly what the `runctl` script
runs), the files of a run directory as docs/DESIGN.md and docs/ARCHITECTURE.md describe them, and
`runctl verify --json`. Nothing here imports the engine; torch is imported lazily and only to
compare two checkpoints with `torch.load(weights_only=True)`.

Every wait is bounded: a hang fails the test with the process's output instead of blocking CI.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

RUNCTL = [sys.executable, "-m", "runctl"]
# Long enough for a cold torch import on a loaded 2-core CI box, short enough that a hang fails.
CLI_TIMEOUT = 120.0
TEMP_MARKER = ".tmp."
T = TypeVar("T")

# Small, quick digits_mlp settings shared by the suite (hidden 16: a checkpoint is ~20 kB).
TINY_MLP = ["model.hidden=16", "model.depth=1", "data.batch_size=32", "log.every=1",
            "schedule.warmup_steps=5"]


class WaitTimeout(AssertionError):
    """A bounded wait ran out: the condition never became true."""


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a runctl subprocess: no GPU, no thread oversubscription on 2 cores."""
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("RUNCTL_TEST_SLOW_WRITE", None)
    if extra:
        env.update(extra)
    return env


def run_cli(args: Sequence[str | os.PathLike[str]], *, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `runctl ARGS` to completion (bounded) and return its exit code, stdout and stderr."""
    try:
        return subprocess.run([*RUNCTL, *map(str, args)], cwd=cwd, env=env or base_env(),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"runctl {' '.join(map(str, args))} did not exit within {timeout:.0f} s; "
                             f"stdout: {exc.stdout!r} stderr: {exc.stderr!r}") from None


@dataclass
class Engine:
    """A `runctl train|resume ...` process started in the background, in its own session."""

    proc: subprocess.Popen[str]
    args: list[str]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill9(self) -> int:
        """SIGKILL the whole process group and reap it; returns the exit status."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait(timeout=30)

    def wait(self, timeout: float = CLI_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
            raise AssertionError(f"runctl {' '.join(self.args)} did not exit within {timeout:.0f} s; "
                                 f"stderr: {self.stderr()!r}") from None

    def running(self) -> bool:
        return self.proc.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def ensure_dead(self) -> None:
        """Teardown: never leave an engine running after a test, whatever happened."""
        if self.proc.poll() is None:
            self.kill9()


def start_cli(args: Sequence[str | os.PathLike[str]], *, cwd: Path, log_dir: Path,
              env: dict[str, str] | None = None) -> Engine:
    """Start `runctl ARGS` in the background with its output going to files under `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.monotonic_ns()}"
    out_path, err_path = log_dir / f"{stamp}.out", log_dir / f"{stamp}.err"
    str_args = [str(a) for a in args]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([*RUNCTL, *str_args], cwd=cwd, env=env or base_env(), stdout=out,
                                stderr=err, text=True, start_new_session=True)
    return Engine(proc, str_args, out_path, err_path)


def wait_for(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.01,
             alive: Engine | None = None) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds.

    With `alive`, also fail as soon as that engine exits (no point waiting for it any longer).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None and not alive.running():
            value = condition()
            if value:
                return value
            raise WaitTimeout(f"engine exited ({alive.proc.returncode}) before {what}; "
                              f"stderr: {alive.stderr()[-2000:]!r}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------ reading the run directory

def strict_json(text: str) -> Any:
    """json.loads that refuses NaN and Infinity: `--json` promises one (standard) JSON document."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete, parseable lines of an append-only log (a torn last line is not yet a line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


def events(run_dir: Path, name: str | None = None) -> list[dict[str, Any]]:
    found = read_jsonl(run_dir / "events.jsonl")
    return [e for e in found if name is None or e.get("event") == name]


def status(run_dir: Path) -> dict[str, Any]:
    """status.json; {} while it does not exist yet."""
    try:
        return json.loads((run_dir / "status.json").read_text())
    except FileNotFoundError:
        return {}


def manifest(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    except FileNotFoundError:
        return {"files": {}}


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Checkpoints under their final names (step_XXXXXXXX.pt), oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("step_") and p.name.endswith(".pt"))


def temp_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if TEMP_MARKER in p.name)


def temp_pid(path: Path) -> int | None:
    tail = path.name.rsplit(TEMP_MARKER, 1)[-1]
    return int(tail) if tail.isdigit() else None


def find_run_dir(root: Path) -> Path | None:
    """The single run directory under `root` (one with run.yaml), or None while there is none."""
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and (p / "run.yaml").is_file()]
    if len(runs) > 1:
        raise AssertionError(f"expected one run under {root}, found {sorted(p.name for p in runs)}")
    return runs[0] if runs else None


def train_finished_run(tmp: Path, sets: Sequence[str], timeout: float = 240.0) -> Path:
    """`runctl train digits_mlp --name base` under tmp/runs with TINY_MLP and `sets` (KEY=VALUE),
    to its end; the run's folder."""
    args = [a for s in [*TINY_MLP, *sets] for a in ("--set", s)]
    done = run_cli(["train", "digits_mlp", "--root", tmp / "runs", "--name", "base", *args], cwd=tmp,
                   timeout=timeout)
    assert done.returncode == 0, done.stderr
    run_dir = find_run_dir(tmp / "runs")
    assert run_dir is not None and status(run_dir)["state"] == "finished"
    return run_dir


def wait_run_dir(root: Path, engine: Engine, timeout: float = 60.0) -> Path:
    return wait_for(lambda: find_run_dir(root), timeout=timeout, what=f"a run directory under {root}",
                    alive=engine)


def metrics_step(run_dir: Path) -> int:
    """The highest step with a complete train line in metrics.jsonl (0 before the first)."""
    steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl")
             if isinstance(m.get("step"), int) and "train/loss" in m]
    return max(steps, default=0)


def one_curve(run_dir: Path, key: str = "train/loss") -> list[tuple[int, float]]:
    """`key` as one curve, read per the contract: metrics.jsonl plus the `resumed` events.

    A resumed event at step k means the killed attempt's points after step k are void (the steps
    are run again). Points are assigned to attempts by time: a point older than a resumed event
    belongs to an attempt before it. Fails on a step that is still duplicated after that.
    """
    resumes = sorted((e["time"], e["step"]) for e in events(run_dir, "resumed"))
    points = [(m["time"], m["step"], m[key]) for m in read_jsonl(run_dir / "metrics.jsonl")
              if key in m and isinstance(m.get("step"), int)]
    kept = []
    for when, step, value in points:
        voided = any(when < resumed_at and step > resumed_step for resumed_at, resumed_step in resumes)
        if not voided:
            kept.append((step, value))
    steps = [s for s, _ in kept]
    duplicated = sorted({s for s in steps if steps.count(s) > 1})
    assert not duplicated, f"{run_dir}/metrics.jsonl: steps {duplicated[:10]} appear twice after resume"
    return sorted(kept)


def verify_json(path: Path, *, cwd: Path, level: str = "full") -> tuple[int, Any]:
    """`runctl verify PATH --json [--quick|--deep]`: (exit code, parsed document)."""
    flag = {"quick": ["--quick"], "full": [], "deep": ["--deep"]}[level]
    done = run_cli(["verify", path, "--json", *flag], cwd=cwd)
    assert "Traceback" not in done.stderr, done.stderr
    try:
        document = strict_json(done.stdout)
    except ValueError as exc:
        raise AssertionError(f"runctl verify {path} --json printed no valid JSON ({exc}); "
                             f"exit {done.returncode}; stdout {done.stdout[:500]!r}; stderr {done.stderr!r}") from None
    return done.returncode, document


def checkpoint_records(document: Any) -> list[dict[str, Any]]:
    """Every per-checkpoint record in a `verify --json` document, whatever its nesting.

    A record is a dict with "name" and "status" (runs.model.CheckpointInfo); `verify` of a root
    nests them under runs, of a run lists them, of a file is one.
    """
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "status" in node and "name" in node and "path" in node:
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return found


def records_by_name(document: Any) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in checkpoint_records(document)}


# ------------------------------------------------------------------ checkpoints (torch, test side only)

def load_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists to {"a.b.0": leaf}."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list | tuple):
        out = {}
        for index, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}{index}."))
        return out
    return {prefix.rstrip("."): tree}


def state_differences(a: dict[str, Any], b: dict[str, Any],
                      sections: Iterable[str] = ("step", "model", "optimizer", "scheduler")) -> list[str]:
    """What differs between two checkpoints in `sections`; tensors compare with torch.equal."""
    import torch

    problems = []
    for section in sections:
        left, right = flatten(a.get(section), f"{section}."), flatten(b.get(section), f"{section}.")
        if left.keys() != right.keys():
            problems.append(f"{section}: keys differ: {sorted(left.keys() ^ right.keys())[:5]}")
            continue
        for key in left:
            x, y = left[key], right[key]
            if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
                same = (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                        and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y))
            elif isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
                same = True
            else:
                same = x == y
            if not same:
                problems.append(f"{key} differs")
    return problems


def all_finite(tree: Any) -> bool:
    import torch

    for leaf in flatten(tree).values():
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and not torch.isfinite(leaf).all():
            return False
        if isinstance(leaf, float) and not math.isfinite(leaf):
            return False
    return True


# ------------------------------------------------------------------ snapshots for "nothing changed"

def tree_snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every path under root (root included) -> (kind, size, mtime_ns): detects any change."""
    snap: dict[str, tuple[str, int, int]] = {}
    if not root.exists():
        return snap
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        kind = "dir" if path.is_dir() else "file"
        snap[str(path.relative_to(root.parent))] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns)
    return snap


def diff_snapshots(before: dict[str, tuple[str, int, int]], after: dict[str, tuple[str, int, int]]) -> list[str]:
    changes = [f"created {p}" for p in after.keys() - before.keys()]
    changes += [f"removed {p}" for p in before.keys() - after.keys()]
    changes += [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    return sorted(changes)


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real small file system at `mount_point` (a tmpfs of `size`, e.g. "4m"), unmounted after;
    the test skips where mounting is not allowed."""
    import pytest

    mount_point.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)
