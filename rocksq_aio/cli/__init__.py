"""Command-line tool: ``python -m rocksq_aio COMMAND ...`` (installed as ``rocksq-aio``).

Commands: ``info``, ``peek``, ``export``, ``import``, ``migrate-rocksq`` and ``stats``;
``--help`` on each. Results go to stdout, messages and progress to stderr.

Exit codes: 0 success, 1 other error, 2 usage, 3 path (or label) not found or not a
queue, 4 queue locked (open elsewhere), 5 queue corrupted, 130 interrupted.

This module holds the argument parser and ``main``; the commands live in
``info`` (info, peek, stats), ``image`` (export, import and the export format)
and ``migrate_rocksq``. Queues are opened through the RocksDB engines (MPMC
with ``ttl=0`` so that nothing expires), so the usual validation and open-time
recovery apply; nothing is consumed. A queue that another process holds open
is read by info, peek, export and stats from a snapshot (a RocksDB secondary
instance, which takes no lock and writes nothing there), and the output says
so; the commands that write refuse it (exit 4). The kind of a queue is read
first from its ``meta`` column family, without taking its lock (``_inspect``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from .. import __version__
from .._errors import QueueCorruptedError, QueueError, QueueLockedError
from . import _output
from ._exit import (
    EXIT_CORRUPTED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
)
from .image import EXPORT_FORMAT, EXPORT_VERSION, command_export, command_import
from .info import command_info, command_peek, command_stats
from .migrate_rocksq import ROCKSQ_MAX_ALLOWED_INDEX, command_migrate, decode_rocksq_reader

__all__ = [
    "EXIT_CORRUPTED",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ROCKSQ_MAX_ALLOWED_INDEX",
    "CliError",
    "build_parser",
    "decode_rocksq_reader",
    "main",
]

_EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  other error (bad export file, refusing to overwrite a non-empty queue, ...)
  2  usage error
  3  path (or label) not found, or not a queue
  4  queue locked: it is open elsewhere (in another process or this one) and
     the command writes (info, peek, export and stats read a snapshot of it)
  5  queue corrupted
"""

NumberT = TypeVar("NumberT", int, float)

# Each command's help: its one-line summary in the list of commands, then its
# description.

_INFO_HELP = """\
kind, length, sizes, head/tail, labels with positions and lag
Show what a queue holds: its kind (FIFO or MPMC), length, payload size (FIFO),
disk size, head and tail indices; for MPMC the oldest and newest element times
and every label with its position, lag (tail - position), items handed back to
it and whether its next read reports expired elements. The TTL of an MPMC queue
is not stored on disk (it is an argument of whoever opens it); --ttl only shows
how many elements a queue opened with that TTL would drop now.
Nothing is consumed. A queue open in another process is read from a snapshot,
without disturbing it: the output says so and as of when, and adds what that
process has reserved and not yet acked."""

_PEEK_HELP = """\
show the next items without consuming them
Show the next N items without consuming them: FIFO from the head; MPMC from
the saved position of --label (items handed back to the label first, as its
next read would), or from the head without --label.
Items are shown as Python bytes literals (or a hex dump with --hex), cut at
--max-bytes. --raw writes the raw bytes of each item to stdout as a netstring
'<decimal length>:<bytes>,' (no separator between items), so that items
containing newlines stay unambiguous.
A queue open in another process is read from a snapshot (said on the first
line, in the JSON, or on stderr with --raw)."""

_EXPORT_HELP = """\
write a queue to a line-oriented file (nothing is consumed)
Write every item of the queue at PATH to FILE ('-': stdout; a name ending in
.gz is gzip-compressed). Nothing is consumed.

Format: line 1 is a JSON header {"format": "rocksq_aio-export", "version": 1,
"kind": "fifo"|"mpmc", "count": N, ...}; for MPMC its "labels" list holds
{"label", "offset" (position relative to the first item), "expired_unseen",
"returned" (base64 items handed back to the label)}. Then N lines, one per item:
FIFO '<base64>', MPMC '<timestamp_ms> <base64>'.
A queue open in another process is exported from a snapshot (header
"snapshot"), including the items that process has reserved and not acked, as
a restart would deliver them again (header "reserved_included")."""

_IMPORT_HELP = """\
create a queue from an export file
Create the queue at PATH from FILE ('-': stdin; gzip is detected), written by
export: items in order, MPMC timestamps, labels at their positions, pending
expiry reports and items handed back to labels. PATH must not exist, or be an
empty directory (the queue is built beside it and renamed into place, so a
failed import leaves nothing), or an empty queue of the same kind (written in
place). A non-empty queue is never overwritten."""

_MIGRATE_HELP = """\
convert a RocksQ 0.3.0 queue directory into a rocksq_aio queue
Read the RocksQ 0.3.0 queue at SRC (FIFO or MPMC; opened read-only, it must not
be open in RocksQ) and write an equivalent rocksq_aio queue at DST (same rules
as import). FIFO: the items between RocksQ's read and write indices, in order
(wrapped indices included). MPMC: the stored elements between its start and
write indices with their RocksDB TTL time (to the second) as timestamp, and
every label at the same element; a label whose next elements were removed by
RocksQ's TTL reports expired on its next read, as in RocksQ. RocksQ delivers
elements past their TTL until RocksDB compacts them away: they are migrated
unless --ttl is given."""

_STATS_HELP = """\
RocksDB statistics and compaction state per column family
Show RocksDB properties of every column family (estimated keys, SST and live
data sizes, memtables, files per level, pending compaction) and of the database
(running compactions and flushes, background errors, write stalls). The queue
is opened with the library's options; counters such as running compactions are
those of this process's instance. A queue open in another process is read from
a snapshot (a RocksDB secondary instance). --read-only opens a RocksDB
read-only instance instead, without taking the lock."""


# ---------------------------------------------------------------- argument types


def _converted(text: str, convert: Callable[[str], NumberT], what: str) -> NumberT:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _converted(text, int, "an integer")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _seconds(text: str) -> float:
    value = _converted(text, float, "a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _flag(command: argparse.ArgumentParser, *names: str, help: str) -> None:
    command.add_argument(*names, action="store_true", help=help)


# ---------------------------------------------------------------- the parser


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog or _output.prog(),
        description="Inspect, export, import and migrate rocksq_aio queues.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str,
        text: str,
        handler: Callable[[argparse.Namespace], int],
        *positionals: tuple[str, str, str],
    ) -> argparse.ArgumentParser:
        """A command with its help text and (destination, metavar, help) positional arguments."""
        summary, _newline, description = text.partition("\n")
        command = commands.add_parser(
            name,
            help=summary,
            description=description,
            epilog=_EXIT_CODES_HELP,
            formatter_class=formatter,
        )
        for destination, metavar, help_text in positionals:
            command.add_argument(destination, metavar=metavar, help=help_text)
        command.set_defaults(handler=handler)
        return command

    queue = ("path", "PATH", "queue directory")
    info = add("info", _INFO_HELP, command_info, queue)
    _flag(info, "--json", help="print one JSON object")
    info.add_argument(
        "--ttl", type=_seconds, metavar="SECONDS", help="MPMC: display only, see above"
    )

    peek = add("peek", _PEEK_HELP, command_peek, queue)
    peek.add_argument("--label", "-l", help="MPMC: read from this label's position")
    peek.add_argument(
        "-n", type=_positive_int, default=10, metavar="N", help="items to show (default 10)"
    )
    peek.add_argument(
        "--max-bytes",
        type=_non_negative_int,
        default=100,
        metavar="B",
        help="show at most B bytes of each item (0: all; default 100)",
    )
    output = peek.add_mutually_exclusive_group()
    output.add_argument("--hex", action="store_true", help="hex and ASCII dump")
    output.add_argument("--json", action="store_true", help="JSON with base64 items")
    output.add_argument("--raw", action="store_true", help="raw bytes as netstrings")

    quiet = ("--quiet", "-q")
    no_progress = "no progress or summary"
    output_file = ("file", "FILE", "output file, '-' for stdout")
    export = add("export", _EXPORT_HELP, command_export, queue, output_file)
    _flag(export, "--force", "-f", help="overwrite FILE")
    _flag(export, *quiet, help=no_progress)

    export_file = ("file", "FILE", "export file, '-' for stdin")
    new_queue = ("path", "PATH", "queue directory to create")
    import_ = add("import", _IMPORT_HELP, command_import, export_file, new_queue)
    _flag(import_, *quiet, help=no_progress)

    rocksq_queue = ("src", "SRC", "RocksQ queue directory")
    migrated = ("dst", "DST", "rocksq_aio queue directory to create")
    migrate = add("migrate-rocksq", _MIGRATE_HELP, command_migrate, rocksq_queue, migrated)
    migrate.add_argument(
        "--ttl",
        type=_seconds,
        metavar="SECONDS",
        help="MPMC: leave out elements older than this (RocksQ's ttl)",
    )
    migrate.add_argument(
        "--drop-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="MPMC: do not migrate this label (repeatable; needed for RocksQ's empty label)",
    )
    _flag(migrate, "--dry-run", help="read SRC, write nothing")
    _flag(migrate, *quiet, help=no_progress)

    stats = add("stats", _STATS_HELP, command_stats, queue)
    _flag(stats, "--json", help="print one JSON object")
    _flag(stats, "--verbose", "-v", help="also print the rocksdb.stats text")
    _flag(stats, "--read-only", help="do not take the lock")
    return parser


# ---------------------------------------------------------------- running


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit code (``sys.exit(main())``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        code = stop.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as error:
        return _fail(error.message, error.code)
    except QueueLockedError as error:
        return _fail(str(error), EXIT_LOCKED)
    except QueueCorruptedError as error:
        return _fail(str(error), EXIT_CORRUPTED)
    except (QueueError, ValueError, TypeError) as error:
        return _fail(str(error), EXIT_ERROR)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as error:
        return _fail(str(error), EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _fail(message: str, code: int) -> int:
    with contextlib.suppress(OSError):
        _output.error_line(message)
    return code
