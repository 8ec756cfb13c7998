"""Child interpreters that hold a queue open until they are killed (SIGKILL)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def child_running(script: str, *args: str, ready: str = "ready") -> Iterator[None]:
    """Run ``script`` in a fresh interpreter until it prints ``ready``, keep it
    running for the block, then kill it with SIGKILL (no cleanup of its own)."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == ready
        yield
    finally:
        process.kill()
        process.wait(timeout=60)


def kill_when_ready(script: str, *args: str, ready: str = "ready") -> None:
    """Run ``script`` until it prints ``ready``, then kill it with SIGKILL."""
    with child_running(script, *args, ready=ready):
        pass
