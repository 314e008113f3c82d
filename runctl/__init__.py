"""runctl: a terminal UI and CLI to watch, checkpoint, resume, extend and branch PyTorch training runs.

The repository keeps three top-level folders (engine/, runs/, tui/); they install as
`runctl.engine`, `runctl.runs` and `runctl.tui`, so a user's own `engine.py` or `runs/` folder in the
working directory never shadows them.
"""
