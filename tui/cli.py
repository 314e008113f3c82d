"""`runctl` command line: parses arguments and hands each subcommand to its module.

Subcommand modules are imported lazily so `runctl ls` never pays for torch or textual.
Every error the user can fix is one line on stderr and exit 2 (RunctlError); a crash is exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from runctl.runs.errors import RunctlError

# subcommand -> "module:function"; each function takes the parsed args and returns an exit code.
HANDLERS = {
    "ui": "runctl.tui.commands.open_ui:run",
    "train": "runctl.tui.commands.training:train",
    "resume": "runctl.tui.commands.training:resume",
    "extend": "runctl.tui.commands.training:extend",
    "branch": "runctl.tui.commands.training:branch",
    "stop": "runctl.tui.commands.training:stop",
    "configs": "runctl.tui.commands.configs:run",
    "ls": "runctl.tui.commands.inspect:ls",
    "verify": "runctl.tui.commands.inspect:verify",
    "summary": "runctl.tui.commands.inspect:summary",
    "export": "runctl.tui.commands.archive:export",
    "import": "runctl.tui.commands.archive:import_",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + line
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runctl", description="Watch, checkpoint, resume, extend and branch PyTorch runs.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("train", help="train a config (YAML path or built-in name)")
    p.add_argument("config")
    p.add_argument("--root", default="runs")
    p.add_argument("--name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--detach", action="store_true", help="train in a background process")

    p = sub.add_parser("resume", help="continue from the newest valid checkpoint")
    p.add_argument("run")
    p.add_argument("--root", default="runs")
    p.add_argument("--from", dest="from_ckpt", metavar="CKPT")
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--detach", action="store_true")

    p = sub.add_parser("extend", help="raise max_steps and continue")
    p.add_argument("run")
    p.add_argument("--root", default="runs")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=int)
    g.add_argument("--to", type=int)
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--detach", action="store_true")

    p = sub.add_parser("branch", help="a new run from a checkpoint of another")
    p.add_argument("run")
    p.add_argument("--root", default="runs")
    p.add_argument("--from", dest="from_ckpt", required=True, metavar="CKPT")
    p.add_argument("--name", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--weights-only", action="store_true")
    p.add_argument("--no-start", action="store_true", help="create the branch without training it")
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--detach", action="store_true")

    p = sub.add_parser("stop", help="ask a running engine to checkpoint and stop")
    p.add_argument("run")
    p.add_argument("--root", default="runs")
    p.add_argument("--checkpoint-only", action="store_true", help="checkpoint now, keep training")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS")

    p = sub.add_parser("configs", help="list the built-in configs")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("ls", help="list runs")
    p.add_argument("root", nargs="?", default="runs")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("verify", help="check checkpoints (root, run or file)")
    p.add_argument("path")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--quick", dest="level", action="store_const", const="quick")
    level.add_argument("--deep", dest="level", action="store_const", const="deep")
    p.set_defaults(level="full")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("summary", help="one table of every run under ROOT")
    p.add_argument("root", nargs="?", default="runs")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="pack a run into a zip")
    p.add_argument("run")
    p.add_argument("--root", default="runs")
    p.add_argument("--out", required=True)

    p = sub.add_parser("import", help="unpack a run exported with `runctl export`")
    p.add_argument("file")
    p.add_argument("--root", default="runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in HANDLERS and not argv[0].startswith("-"):
        # `runctl [ROOT] [--poll]`: open the UI
        args = _ui_args(argv)
        command = "ui"
    else:
        args = build_parser().parse_args(argv)
        command = args.command
        if command is None:
            args = _ui_args([])
            command = "ui"
    module_name, func_name = HANDLERS[command].split(":")
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        code = handler(args)
    except RunctlError as err:
        sys.stderr.write(f"runctl: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("runctl: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        if exc.filename is None:
            return _internal_error(exc)
        # The machine, not runctl: a full disk, a lost mount, permissions. Writes are atomic, so
        # the file named is as it was.
        sys.stderr.write(f"runctl: {exc.filename}: {exc.strerror or exc}\n")
        return 1
    except Exception as exc:  # a bug, not bad input: one line here, the traceback in a file
        return _internal_error(exc)
    return int(code or 0)


def _internal_error(exc: BaseException) -> int:
    log = _save_traceback()
    sys.stderr.write(f"runctl: internal error: {exc.__class__.__name__}: {exc} (traceback: {log})\n")
    return 1


def _save_traceback() -> str:
    import tempfile
    import traceback

    path = f"{tempfile.gettempdir()}/runctl-last-error.log"
    try:
        with open(path, "w") as f:
            traceback.print_exc(file=f)
    except OSError:
        return "unavailable"
    return path


def _ui_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="runctl", description="Open the runctl UI on ROOT (default ./runs).")
    parser.add_argument("root", nargs="?", default="runs")
    parser.add_argument("--poll", action="store_true", help="poll the file system (NFS, SMB, SSHFS)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
