"""What the tool writes: stdout lines, stderr notes, tables, sizes, times, hex dumps, progress.

Results go to stdout, messages and progress to stderr.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, BinaryIO

from ._exit import CliError

PROGRESS_MIN_ITEMS = 10_000
"""Progress is shown on stderr for runs of at least this many items."""
PROGRESS_INTERVAL = 0.5
"""Seconds between two progress lines."""


def prog() -> str:
    """The program name in messages: ``python -m rocksq_aio`` unless installed as a script."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("", "__main__.py", "-c", "-m") or name.startswith("pytest"):
        return "python -m rocksq_aio"
    return name


def say(text: str = "") -> None:
    """One line of the result, on stdout."""
    sys.stdout.write(text + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"{prog()}: warning: {message}\n")


def note(message: str, quiet: bool = False) -> None:
    if not quiet:
        sys.stderr.write(f"{prog()}: {message}\n")


def error_line(message: str) -> None:
    sys.stderr.write(f"{prog()}: error: {message}\n")


def binary_stdout() -> BinaryIO:
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        raise CliError("stdout does not accept bytes")
    sys.stdout.flush()
    result: BinaryIO = buffer
    return result


def print_table(rows: Sequence[Sequence[str]], indent: str = "") -> None:
    """Left-aligned columns two spaces apart, the first row being the header."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        say((indent + "  ".join(cells)).rstrip())


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def iso_ms(timestamp_ms: int) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(timestamp_ms / 1000, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp_ms} ms"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp_ms % 1000:03d}Z"


def show_label(label: str) -> str:
    return label if label and label.isprintable() else repr(label)


def hexdump(data: bytes) -> list[str]:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{byte:02x}" for byte in chunk)
        text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"    {offset:08x}  {hexes:<47}  |{text}|")
    return lines


class Progress:
    """Progress on stderr for long runs only: a tqdm bar when tqdm is installed
    (the ``cli`` extra), else a plain line."""

    def __init__(self, action: str, total: int, enabled: bool = True) -> None:
        self.action = action
        self.total = total
        self.done = 0
        self.enabled = enabled and total >= PROGRESS_MIN_ITEMS
        self._started = time.monotonic()
        self._last = self._started
        self._tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, desc=action, unit="item", file=sys.stderr)

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        interval = PROGRESS_INTERVAL if self._tty else PROGRESS_INTERVAL * 4
        if now - self._last >= interval:
            self._last = now
            self._show(now, final=False)

    def _show(self, now: float, *, final: bool) -> None:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        elapsed = max(now - self._started, 1e-9)
        line = (
            f"{self.action}: {self.done}/{self.total} items ({percent:.0f}%), "
            f"{self.done / elapsed:.0f} items/s"
        )
        if self._tty:
            sys.stderr.write("\r" + line + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._show(time.monotonic(), final=True)
