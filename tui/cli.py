"""`runctl` command line: parses arguments and hands each subcommand to its module.

Subcommand modules are imported lazily so `runctl ls` never pays for torch or textual.
Every error the user can fix is one line on stderr and exit 2 (RunctlError); a crash is exit 1.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from runctl.runs.errors import RunctlError
from runctl.runs.layout import DEFAULT_DEPTH
from runctl.tui.gc_policy import ENGINE_START_THRESHOLD, hold_collections, release_collections

from runctl.console import guard_console

# subcommand -> "module:function"; each function takes the parsed args and returns an exit code.
HANDLERS = {
    "ui": "runctl.tui.commands.open_ui:run",
    "train": "runctl.tui.commands.training:train",
    "resume": "runctl.tui.commands.training:resume",
    "extend": "runctl.tui.commands.training:extend",
    "branch": "runctl.tui.commands.training:branch",
    "stop": "runctl.tui.commands.training:stop",
    "configs": "runctl.tui.commands.configs:run",
    "schema": "runctl.tui.commands.schema:run",
    "ls": "runctl.tui.commands.inspect:ls",
    "verify": "runctl.tui.commands.inspect:verify",
    "summary": "runctl.tui.commands.inspect:summary",
    "diff": "runctl.tui.commands.diff:run",
    "watch": "runctl.tui.commands.watch:run",
    "serve": "runctl.tui.commands.serve:run",
    "export": "runctl.tui.commands.archive:export",
    "import": "runctl.tui.commands.archive:import_",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + line
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


UI_USAGE = ("runctl [ROOT] [--poll] [--no-alerts] [--no-bell] [--desktop-notify {osc9,osc777,both,off}] "
            "[--engine {thread,process}]")
UI_HELP = """\
runctl [ROOT] [--poll] opens the UI on ROOT, a folder of runs. Without ROOT it opens ./runs and
creates it if missing; a ROOT given by name must exist. --poll watches by polling (NFS, SMB, SSHFS).
Alerts (crashed, stalled, finished, checkpoint failed, NaN loss, disk filling) show as a notification,
ring the bell and ask the terminal for a desktop notification; the flags turn each off.
Runs started in the UI train on a thread of the UI (--engine thread, the default) or each in a
child process (--engine process; its output goes to RUN/train.log).
`runctl COMMAND --help` describes a command."""


def _add_launch_args(p: argparse.ArgumentParser, nproc_help: str) -> None:
    p.add_argument("--nproc", type=int, default=1, metavar="N", help=nproc_help)
    p.add_argument("--nnodes", type=int, default=1, metavar="M",
                   help="machines taking part, one runctl command on each (default 1)")
    p.add_argument("--node-rank", type=int, default=0, metavar="K", help="this machine's number, 0 to M-1; "
                   "node 0 creates or changes the run and hosts the rendezvous")
    p.add_argument("--rdzv", metavar="HOST:PORT", help="node 0's address and a free port (c10d rendezvous)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runctl", usage=f"{UI_USAGE}\n       runctl COMMAND [ARGS]",
                     description="Watch, checkpoint, resume, extend and branch PyTorch runs.",
                     epilog=UI_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poll", action="store_true", help="(UI) poll the file system instead of inotify")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND", prog="runctl")

    root_help = "the folder of runs a RUN name is looked up in (default ./runs)"
    nproc_help = "train on N processes (per machine) under torchrun (default 1: in this process)"
    detach_help = "train in a background process (output in RUN/train.log); print the run path"
    set_help = "override a config key, dotted (optim.lr=3e-4); repeatable"

    p = sub.add_parser("train", help="train a config (YAML path or built-in name)")
    p.add_argument("config", help="a YAML file or a built-in config name (runctl configs)")
    p.add_argument("--root", default="runs", help="the folder the new run is created in (default ./runs)")
    p.add_argument("--name", help="the run's name (default: the config's name and a time stamp)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    _add_launch_args(p, nproc_help)
    p.add_argument("--detach", action="store_true", help=detach_help)

    p = sub.add_parser("resume", help="continue from the newest valid checkpoint")
    p.add_argument("run", help="a run folder, or a run name under --root")
    p.add_argument("--root", default="runs", help=root_help)
    p.add_argument("--from", dest="from_ckpt", metavar="CKPT",
                   help="resume from this checkpoint (file, name, step, latest or best)")
    _add_launch_args(p, nproc_help)
    p.add_argument("--detach", action="store_true", help=detach_help)

    p = sub.add_parser("extend", help="raise max_steps and continue")
    p.add_argument("run", help="a run folder, or a run name under --root")
    p.add_argument("--root", default="runs", help=root_help)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=int, metavar="N", help="add N steps to max_steps")
    g.add_argument("--to", type=int, metavar="N", help="set max_steps to N")
    _add_launch_args(p, nproc_help)
    p.add_argument("--detach", action="store_true", help=detach_help)

    p = sub.add_parser("branch", help="a new run from a checkpoint of another run (or of another tool)")
    p.add_argument("run", help="the parent: a run folder or a run name under --root; with --config, "
                   "a checkpoint another tool wrote (a file or a Hugging Face checkpoint-N folder)")
    p.add_argument("--root", default="runs", help=root_help)
    p.add_argument("--from", dest="from_ckpt", metavar="CKPT",
                   help="the parent's checkpoint to start from (file, name, step, latest or best)")
    p.add_argument("--config", metavar="CONFIG",
                   help="for another tool's checkpoint: the YAML or built-in config of the new run")
    p.add_argument("--name", required=True, help="the new run's name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--weights-only", action="store_true",
                   help="take only the weights: a fresh optimizer and LR schedule")
    p.add_argument("--no-start", action="store_true", help="create the branch without training it")
    _add_launch_args(p, nproc_help)
    p.add_argument("--detach", action="store_true", help=detach_help)

    p = sub.add_parser("stop", help="ask a running engine to checkpoint and stop")
    p.add_argument("run", help="a run folder, or a run name under --root")
    p.add_argument("--root", default="runs", help=root_help)
    p.add_argument("--checkpoint-only", action="store_true", help="checkpoint now, keep training")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for the engine to do it (exit 1 if it does not)")

    p = sub.add_parser("configs", help="list the built-in configs")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")

    sub.add_parser("schema", help="print the JSON Schema of a config file (for YAML editors)")

    p = sub.add_parser("ls", help="list runs")
    p.add_argument("root", nargs="?", default="runs", help="the folder of runs (default ./runs)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    _depth_option(p)

    p = sub.add_parser("verify", help="check checkpoints (root, run or file)")
    p.add_argument("path", help="a folder of runs, one run, or one checkpoint file")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--quick", dest="level", action="store_const", const="quick",
                       help="zip structure and size only (default: full, CRC + sha256)")
    level.add_argument("--deep", dest="level", action="store_const", const="deep",
                       help="also load each file (weights_only) and check it can resume its run")
    p.set_defaults(level="full")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    _depth_option(p)

    p = sub.add_parser("summary", help="one table of every run under ROOT")
    p.add_argument("root", nargs="?", default="runs", help="the folder of runs (default ./runs)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--expect", metavar="STEPS",
                   help="comma-separated steps every run should have a checkpoint of, e.g. 100,1000,2000")
    _depth_option(p)

    p = sub.add_parser("diff", help="how far each model tensor moved between two checkpoints")
    p.add_argument("a", metavar="CKPT_A", help="the earlier checkpoint file (the reference)")
    p.add_argument("b", metavar="CKPT_B", help="the later checkpoint file")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")

    p = sub.add_parser("watch", help="send alerts (crashed, stalled, finished ...) without a UI")
    p.add_argument("root", nargs="?", default="runs", help="the folder of runs (default ./runs)")
    p.add_argument("--notify", action="append", default=[], metavar="URL",
                   help="an apprise URL (ntfy://, slack://, json://host/path ...); repeatable; "
                        "needs runctl[notify]")
    p.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                   help="a shell command run per alert, with RUNCTL_RUN, RUNCTL_EVENT, RUNCTL_STATE, "
                        "RUNCTL_STEP, RUNCTL_MESSAGE in its environment")
    p.add_argument("--window", type=float, default=600.0, metavar="SECONDS",
                   help="at most one alert per run and kind within SECONDS (default 600)")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                   help="how often the runs are scanned (default 2)")
    p.add_argument("--disk-free-mb", type=float, metavar="MB",
                   help="free space under which growing checkpoints alert (default: 5%% of the disk, "
                        "at most 10 GiB)")
    _depth_option(p)

    p = sub.add_parser("serve", help="the UI in a browser (textual-serve; a token in the URL)")
    p.add_argument("root", nargs="?", default="runs", help="the folder of runs (default ./runs)")
    p.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to bind (default 127.0.0.1: reach it through `ssh -L`); another warns")
    p.add_argument("--engine", choices=("thread", "process"), default="thread",
                   help="where the runs started in the served UI train, as for `runctl --engine`: a thread "
                        "of the UI (default) or a child process each")

    p = sub.add_parser("export", help="pack a run into a zip")
    p.add_argument("run", help="a run folder, or a run name under --root")
    p.add_argument("--root", default="runs", help=root_help)
    p.add_argument("--out", required=True, metavar="FILE.zip", help="the zip to write (must not exist)")

    p = sub.add_parser("import", help="unpack a run exported with `runctl export`")
    p.add_argument("file", metavar="FILE.zip", help="a zip written by runctl export")
    p.add_argument("--root", default="runs", help="the folder the run is unpacked into (default ./runs)")
    return parser


def _depth(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--depth: expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--depth: expected 1 or more, got {value}")
    return value


def _depth_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=_depth, default=DEFAULT_DEPTH, metavar="N",
                        help=f"look for runs down to N folders below ROOT (default {DEFAULT_DEPTH})")


def main(argv: Sequence[str] | None = None) -> int:
    """The `runctl` program (argv None: the process's own arguments) or one command in-process."""
    if argv is None:
        # The process is runctl: what it prints must never fail it when the terminal goes away.
        guard_console()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] not in HANDLERS and argv[0] not in ("-h", "--help"):
            # `runctl [ROOT] [--poll]`: open the UI
            args = _ui_args(argv)
            command = "ui"
        else:
            args = build_parser().parse_args(argv)
            command = args.command
            if command is None:
                args = _ui_args(["--poll"] if args.poll else [])
                command = "ui"
        if command in _CREATES_UNDER_ROOT:
            refuse_package_root(Path(args.root))
    except RunctlError as err:
        sys.stderr.write(f"runctl: {err}\n")
        return err.exit_code
    module_name, func_name = HANDLERS[command].split(":")
    if command in _TRAINS:
        # Until the run has started (tui.commands.training calls gc_policy.engine_started).
        hold_collections(ENGINE_START_THRESHOLD)
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
        from runctl.runs.disk_full import disk_full_reason

        reason = disk_full_reason(exc, Path(exc.filename).parent) or exc.strerror or exc
        sys.stderr.write(f"runctl: {exc.filename}: {reason}\n")
        return 1
    except Exception as exc:  # a bug, not bad input: one line here, the traceback in a file
        return _internal_error(exc)
    finally:
        release_collections()  # a run that never started here (an error, --detach, a launcher)
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


# Commands that write runs under ROOT: a ROOT that is a Python package is a source tree, not runs.
_CREATES_UNDER_ROOT = {"ui", "train", "import"}
# Commands that may train in this process: torch and the engine are imported and the run built.
_TRAINS = {"train", "resume", "branch", "extend"}


def refuse_package_root(root: Path) -> None:
    if (root / "__init__.py").is_file():
        raise RunctlError(f"{root}: a Python package (it has __init__.py), not a folder of runs; "
                          "give another ROOT (--root)")


def _ui_args(argv: list[str]) -> argparse.Namespace:
    """`runctl [ROOT] [--poll]`; a ROOT that does not exist and reads like a mistyped command is refused."""
    if argv and not argv[0].startswith("-"):
        _refuse_missing_root(argv[0])
    parser = _Parser(prog="runctl", usage=UI_USAGE, description="Open the runctl UI on ROOT.", epilog=UI_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", help="a folder of runs (default ./runs, created if missing)")
    parser.add_argument("--poll", action="store_true", help="poll the file system (NFS, SMB, SSHFS)")
    _depth_option(parser)
    parser.add_argument("--no-alerts", action="store_true",
                        help="no alerts at all (crashed, stalled, finished, checkpoint failed, NaN, disk filling)")
    parser.add_argument("--no-bell", action="store_true", help="alerts without the terminal bell")
    parser.add_argument("--desktop-notify", choices=("osc9", "osc777", "both", "off"), default="osc9",
                        help="the desktop notification escape the terminal is sent with each alert "
                             "(default osc9; off for none)")
    parser.add_argument("--engine", choices=("thread", "process"), default="thread",
                        help="where the runs started in the UI train: a thread of the UI (default) or a child "
                             "process each (`runctl resume RUN`; output in RUN/train.log)")
    args = parser.parse_args(argv)
    args.explicit_root = args.root is not None
    if args.root is None:
        args.root = "runs"
    return args


def _refuse_missing_root(word: str) -> None:
    """An explicit ROOT must exist: runctl creates only the default ./runs, never a mistyped name."""
    if Path(word).expanduser().exists():
        return
    close = difflib.get_close_matches(word, sorted(HANDLERS.keys() - {"ui"}), n=1, cutoff=0.6)
    if close:
        raise RunctlError(f"{word}: no such command or folder; did you mean `runctl {close[0]}`?")
    commands = ", ".join(sorted(HANDLERS.keys() - {"ui"}))
    raise RunctlError(f"{word}: no such command or folder (commands: {commands}; "
                      f"`mkdir {word}` first to open a new folder of runs)")


if __name__ == "__main__":
    sys.exit(main())
