"""The model of run directories: what the UI and the CLI know about runs on disk.

Imports neither textual nor (at module level) torch, so `runctl ls` and the UI open fast
even on a machine without torch.
"""
