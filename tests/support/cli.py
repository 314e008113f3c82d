"""runctl as a user runs it: `python -m runctl ARGS` in a subprocess (exactly what the `runctl`
script runs), to completion or in the background, with a bounded wait either way."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import REPO, TESTS
from support.run_files import find_run_dir, strict_json
from support.waiting import wait_for

RUNCTL = [sys.executable, "-m", "runctl"]
# Long enough for a cold torch import on a loaded 2-core CI box, short enough that a hang fails.
CLI_TIMEOUT = 120.0

Args = Sequence[str | os.PathLike[str]]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a runctl subprocess: no GPU, no thread oversubscription on 2 cores, and
    tests/ on PYTHONPATH so that the engine imports the test task (support.tasks)."""
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("RUNCTL_TEST_SLOW_WRITE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    if extra:
        env.update(extra)
    return env


def run_cli(args: Args, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT, *, no_traceback: bool = False) -> subprocess.CompletedProcess[str]:
    """Run `runctl ARGS` to completion (bounded) and return its exit code, stdout and stderr.

    `no_traceback`: also fail the test if the command printed a Python traceback."""
    try:
        done = subprocess.run([*RUNCTL, *map(str, args)], cwd=cwd, env=env or cli_env(),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"runctl {' '.join(map(str, args))} did not exit within {timeout:.0f} s; "
                             f"stdout: {exc.stdout!r} stderr: {exc.stderr!r}") from None
    if no_traceback:
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    return done


def one_line_refusal(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Assert how runctl refuses bad input: exit 2 and one line on stderr, no traceback, naming
    every one of `needles` (the file, key or field); returns that line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}: {done.stderr!r} {done.stdout[:300]!r}"
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def runctl_here(args: Args) -> int:
    """`runctl ARGS` in this process (the same code path, without paying a Python + torch start-up):
    for the second half of tests whose first half ran in a subprocess."""
    from runctl.tui.cli import main

    return main([str(arg) for arg in args])


def start_runctl(args: Args, cwd: Path, env: dict[str, str] | None = None,
                 stderr_file: Path | None = None) -> subprocess.Popen[str]:
    """`runctl ARGS` in the background, in its own session, its output on pipes (stderr to
    `stderr_file` when the test must watch it live)."""
    stderr: Any = open(stderr_file, "w") if stderr_file is not None else subprocess.PIPE
    try:
        return subprocess.Popen([*RUNCTL, *map(str, args)], cwd=cwd, env=env or cli_env(),
                                stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
    finally:
        if stderr_file is not None:
            stderr.close()


@contextlib.contextmanager
def runctl_running(args: Args, cwd: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """`start_runctl` for the length of a `with` block; whatever still runs at its end is killed
    (the whole process group), so a failed test leaves nothing behind."""
    proc = start_runctl(args, cwd, env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (for a rendezvous or a server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def end_process(proc: subprocess.Popen[str]) -> None:
    """Teardown for a launcher a failed test left running: SIGTERM (twice: runctl relays the first
    to torchrun, whose session goes too), then SIGKILL."""
    for _ in range(2):
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            continue
    proc.kill()


@dataclass
class Engine:
    """A `runctl train|resume ...` process started in the background, in its own session, its
    output going to files (so that a test can read them while it runs)."""

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


def start_cli(args: Args, *, cwd: Path, log_dir: Path, env: dict[str, str] | None = None) -> Engine:
    """Start `runctl ARGS` in the background with its output going to files under `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.monotonic_ns()}"
    out_path, err_path = log_dir / f"{stamp}.out", log_dir / f"{stamp}.err"
    str_args = [str(a) for a in args]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([*RUNCTL, *str_args], cwd=cwd, env=env or cli_env(), stdout=out,
                                stderr=err, text=True, start_new_session=True)
    return Engine(proc, str_args, out_path, err_path)


def wait_run_dir(root: Path, engine: Engine, timeout: float = 60.0) -> Path:
    """The run folder a background `runctl train` creates under `root`, once it exists."""
    return wait_for(lambda: find_run_dir(root), timeout, f"a run directory under {root}", alive=engine)


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


def cli_stdout_without_torch(*args: str) -> str:
    """stdout of `runctl ARGS` run through runctl.tui.cli.main in a fresh interpreter; fails the
    test if the command exits non-zero or imports torch."""
    code = ("import sys, io, contextlib\nfrom runctl.tui.cli import main\nbuf = io.StringIO()\n"
            f"with contextlib.redirect_stdout(buf):\n    code = main({list(args)!r})\n"
            "assert code == 0, f'exit {code}'\nassert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(buf.getvalue())\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
