"""The test suite's one set of helpers, imported as `support.<module>` by every test folder.

`tests/` is on sys.path through pytest's `pythonpath` setting (pyproject.toml), and on the
PYTHONPATH of every runctl subprocess started through `support.cli.cli_env`, so the engine finds
the test task (`task: "support.tasks:factory"`) in a subprocess too.

    waiting      bounded condition waits (plain and under Textual's Pilot)
    cli          runctl in a subprocess (to completion or in the background), its environment
    run_files    reading a run folder as its contract describes it (logs, status, manifest)
    checkpoints  writing, loading and comparing checkpoints
    configs      tiny configs per built-in task, test-task configs, `--set` arguments
    runs         run folders: engine-like ones for runs/, fixed-clock ones for the UI, real engine runs
    tasks        the configurable custom task the engine loads (hang, poison, crash, slow steps)
    terminal     a real pseudo-terminal that closes, and process-tree checks
    filesystems  real small file systems (tmpfs) and "nothing changed" tree snapshots
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
