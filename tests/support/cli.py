"""Running the command-line tool in this process, for the CLI tests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rocksq_aio.cli import EXIT_OK, main


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """``main([...])``: its exit code, stdout and stderr."""
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: object) -> Any:
    """The JSON a successful command printed."""
    code, out, err = run(capsys, *args)
    assert code == EXIT_OK, err
    return json.loads(out)
