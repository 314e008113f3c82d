"""`python -m runctl` is the `runctl` command."""

from runctl.tui.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
