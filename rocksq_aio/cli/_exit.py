"""The tool's exit codes and ``CliError``, the failure it reports as one line on stderr."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_LOCKED = 4
EXIT_CORRUPTED = 5
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure reported as one line on stderr with a given exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
