"""A typo is not a new folder: the first word of `runctl WORD` is a command or an existing folder.

Driven through `python -m runctl` in a subprocess from a scratch working directory, which is
checked afterwards: a refused invocation leaves it as it was.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import subprocess
from pathlib import Path

import pytest
from support.cli import RUNCTL, cli_env, one_line_refusal, run_cli
from support.waiting import wait_for


@pytest.mark.parametrize(("typo", "command"), [("sumary", "summary"), ("verfy", "verify"), ("trian", "train"),
                                               ("resum", "resume"), ("exprot", "export")])
def test_a_mistyped_command_is_an_error_with_a_suggestion(tmp_path: Path, typo: str, command: str) -> None:
    done = run_cli([typo], cwd=tmp_path)
    one_line_refusal(done, typo, f"did you mean `runctl {command}`")
    assert list(tmp_path.iterdir()) == [], "a mistyped command created a folder"


def test_an_unknown_command_with_help_does_not_print_the_ui_usage(tmp_path: Path) -> None:
    done = run_cli(["serve", "--help"], cwd=tmp_path)
    if done.returncode == 0:  # `serve` exists: its own usage, not the UI's
        assert done.stdout.startswith("usage: runctl serve"), done.stdout
        return
    one_line_refusal(done, "serve", "no such command or folder")
    assert "usage" not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_explicit_root_that_does_not_exist_is_not_created(tmp_path: Path) -> None:
    done = run_cli(["experiments-2026"], cwd=tmp_path)
    one_line_refusal(done, "experiments-2026", "mkdir")
    done = run_cli([tmp_path / "deep" / "folder"], cwd=tmp_path)
    one_line_refusal(done, "folder")
    assert list(tmp_path.iterdir()) == []


def test_a_python_package_is_refused_as_root(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    config = tmp_path / "c.yaml"
    config.write_text("task: digits_mlp\nmax_steps: 2\n")
    for args in ([package], ["train", config, "--root", package], ["import", tmp_path / "x.zip", "--root", package]):
        one_line_refusal(run_cli(args, cwd=tmp_path), "mypkg", "__init__.py")
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py"]
    # the default root is refused too when ./runs is a package (a source tree named runs/)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "__init__.py").write_text("")
    one_line_refusal(run_cli([], cwd=tmp_path), "runs", "__init__.py")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["__init__.py"]


def test_help_shows_the_root_form_and_every_option_has_a_help_line(tmp_path: Path) -> None:
    done = run_cli(["--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "runctl [ROOT]" in done.stdout
    assert run_cli(["train", "--help"], cwd=tmp_path).stdout.startswith("usage: runctl train")

    from runctl.tui.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("runctl", parser), *subparsers.choices.items()]:
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help line"


def test_the_default_root_is_still_created(tmp_path: Path) -> None:
    """`runctl` alone, in a terminal, creates ./runs and opens the UI; q quits."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RUNCTL], cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, close_fds=True,
                            env=cli_env({"TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30",
                                          "RUNCTL_KEYS": str(tmp_path / "no-keys.yaml")}))
    os.close(slave)
    screen = bytearray()
    try:
        def painted() -> bool:
            if select.select([master], [], [], 0.1)[0]:
                screen.extend(os.read(master, 65536))
            return b"runs" in screen and (tmp_path / "runs").is_dir()

        wait_for(painted, timeout=60, what="the UI to open on ./runs")
        os.write(master, b"q")

        def ended() -> bool:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    os.read(master, 65536)
                except OSError:
                    pass
            return proc.poll() is not None

        wait_for(ended, timeout=30, what="the UI to quit")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    assert (tmp_path / "runs").is_dir()


def test_poll_and_an_existing_folder_still_open_the_ui(tmp_path: Path) -> None:
    """Checked without starting the UI: a bad flag after them is refused by the UI's own parser."""
    done = run_cli(["--poll", "--no-such-flag"], cwd=tmp_path)
    assert done.returncode == 2 and "--no-such-flag" in done.stderr, done.stderr
    (tmp_path / "existing").mkdir()
    done = run_cli(["existing", "--no-such-flag"], cwd=tmp_path)
    assert done.returncode == 2 and "--no-such-flag" in done.stderr and "no such command" not in done.stderr
