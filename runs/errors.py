"""One exception type for bad usage or bad input; the CLI turns it into one line and exit 2."""

from __future__ import annotations


class RunctlError(Exception):
    """An error the user can fix. `str(err)` is the one line shown; it names the file, key or field."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
