"""A queue's RocksDB directory on disk: preparing it, opening options, locks, removal.

The store (``store.py``) and the command line's inspection open directories
through these functions; nothing else decides how a queue directory is opened.
A queue open in another process is read through ``open_secondary``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rocksdict import AccessType, DbClosedError, DBRecoveryMode, Options, Rdict

from .._errors import (
    QueueClosedError,
    QueueCorruptedError,
    QueueError,
    QueueIOError,
    QueueLockedError,
)
from .format import FIFO_FORMATS, FORMAT_KEY, META_CF, MPMC_FORMATS

# Paths of the queues open in this process: RocksDB's own lock does not stop
# a second open from the same process.
_open_paths: set[str] = set()
_open_paths_lock = threading.Lock()


def claim(path: str) -> None:
    """Mark ``path`` open in this process; QueueLockedError if it already is."""
    with _open_paths_lock:
        if path in _open_paths:
            raise QueueLockedError(f"queue at {path!r} is already open in this process")
        _open_paths.add(path)


def release(path: str) -> None:
    with _open_paths_lock:
        _open_paths.discard(path)


def is_claimed(path: str) -> bool:
    """True when a queue at ``path`` is open in this process."""
    with _open_paths_lock:
        return path in _open_paths


def translate(error: BaseException, path: str, action: str) -> QueueError:
    """Turn a rocksdict exception into the matching QueueError."""
    if isinstance(error, QueueError):
        return error
    if isinstance(error, DbClosedError):
        return QueueClosedError(f"queue at {path!r} is closed")
    message = str(error)
    if "lock" in message.lower() and "LOCK" in message:
        return QueueLockedError(
            f"queue at {path!r} is already open (in this or another process): {message}"
        )
    if message.startswith("Invalid argument"):
        return QueueError(
            f"{action} failed: {path!r} does not hold a rocksq_aio queue RocksDB can open "
            f"with our options: {message}"
        )
    if "Corruption" in message or "Checksum" in message or "checksum" in message:
        return QueueCorruptedError(f"{action} failed, queue at {path!r} is corrupted: {message}")
    return QueueIOError(f"{action} failed for queue at {path!r}: {message}")


def open_options(*, create: bool) -> Options:
    # raw_mode: bytes in, bytes out, no pickle; passing options explicitly also
    # keeps rocksdict from trusting the directory's rocksdict-config.json.
    options = Options(raw_mode=True)
    options.create_if_missing(create)
    options.create_missing_column_families(create)
    options.set_keep_log_file_num(2)
    options.set_max_total_wal_size(64 * 1024 * 1024)
    # A torn last record is what a crash leaves and is dropped; corruption
    # anywhere before it fails the open (QueueCorruptedError) instead of
    # silently dropping every write after it, as point-in-time recovery does.
    options.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
    options.set_paranoid_checks(True)
    return options


_CREATION_FILES = frozenset({"LOCK", "LOG", "IDENTITY", "rocksdict-config.json"})
_CREATION_PREFIXES = ("LOG.old.", "MANIFEST-", "OPTIONS-")
_CREATION_SUFFIXES = (".dbtmp", ".log")


def _is_creation_leftover(name: str) -> bool:
    return (
        name in _CREATION_FILES
        or name.startswith(_CREATION_PREFIXES)
        or name.endswith(_CREATION_SUFFIXES)
    )


def fsync_directory(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_directories(path: str, mode: int) -> None:
    """Create ``path`` and its missing parents with ``mode`` (not filtered by the umask).

    os.makedirs gives intermediate directories the umask's default mode; and
    each new entry is fsynced into its parent so that power loss cannot
    remove the directory of a queue that already reported durable writes.
    """
    missing: list[str] = []
    current = path
    while current and not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        os.chmod(directory, mode)
        fsync_directory(os.path.dirname(directory) or ".")


class _ConfigFile:
    """rocksdict-config.json as it was before an open, to be put back.

    rocksdict rewrites it at every open, read-only and secondary ones included.
    """

    def __init__(self, path: str) -> None:
        self.name = os.path.join(path, "rocksdict-config.json")
        self.contents: bytes | None = None
        self.status: os.stat_result | None = None
        self.existed = True
        try:
            with open(self.name, "rb") as source:
                self.contents = source.read()
                self.status = os.fstat(source.fileno())
        except FileNotFoundError:
            self.existed = False
        except OSError:
            pass  # unreadable: left as it is

    def restore(self) -> None:
        """Its bytes and times as they were (its ctime cannot be), or no file."""
        if not self.existed:
            with contextlib.suppress(OSError):
                os.remove(self.name)
            return
        if self.contents is None:
            return
        try:
            with open(self.name, "rb") as source:
                now: bytes | None = source.read()
        except OSError:
            now = None
        with contextlib.suppress(OSError):
            if now != self.contents:
                with open(self.name, "wb") as target:
                    target.write(self.contents)
            if self.status is not None:
                os.utime(self.name, ns=(self.status.st_atime_ns, self.status.st_mtime_ns))


@contextlib.contextmanager
def config_left_alone(path: str) -> Iterator[None]:
    """Put rocksdict-config.json back as it was once the block ends."""
    config = _ConfigFile(path)
    try:
        yield
    finally:
        config.restore()


def open_read_write(path: str, options: Options, families: dict[str, Options]) -> Rdict:
    """Open read-write; a refused open leaves someone else's directory as it was."""
    config = _ConfigFile(path)
    try:
        return Rdict(path, options, column_families=families)
    except BaseException:
        config.restore()
        raise


OPEN_ATTEMPTS = 5
"""Read-only and secondary opens tried before giving up: a primary that flushes
or compacts meanwhile may delete a log or table file the open was about to
read (RocksDB then reports the file missing, at times as corruption)."""


def _opened(open_once: Callable[[], Rdict]) -> Rdict:
    """``open_once()``, again if a file it needed vanished meanwhile.

    A file that is really gone is still missing at the last attempt, which raises.
    """
    for attempt in range(OPEN_ATTEMPTS):
        try:
            return open_once()
        except Exception as error:
            if "No such file or directory" not in str(error) or attempt + 1 == OPEN_ATTEMPTS:
                raise
        time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def open_queue_database(path: str, column_families: tuple[str, ...], mode: int) -> Rdict:
    """Prepare ``path`` and open it read-write with our options (the store's open)."""
    prepare_directory(path, column_families, mode)
    families = {name: open_options(create=True) for name in column_families}
    try:
        return open_read_write(path, open_options(create=True), families)
    except Exception as error:
        raise translate(error, path, "opening") from error


REPLAY_IN_CHILD_BYTES = 1024 * 1024
"""Write-ahead log above which its replay runs in a child process first.

Opening a database replays its log into memory tables and flushes them, and
rocksdict holds the GIL throughout: ~5 ms per MiB of large items, ~20 ms per
MiB of small ones, during which no other thread of the process runs (an event
loop neither). A clean close leaves an empty log; only a process that died
leaves one to replay."""

REPLAY_CHILD_TIMEOUT_SECONDS = 300.0

# The child imports the same rocksq_aio (its parent directory goes first on
# PYTHONPATH) and opens exactly as the store does, then closes: RocksDB has
# turned the log into table files, and the open that follows here has
# nothing to replay.
_REPLAY_CHILD = (
    "import sys\n"
    "from rocksq_aio.rocksdb.directory import open_queue_database\n"
    "open_queue_database(sys.argv[1], tuple(sys.argv[3:]), int(sys.argv[2], 8)).close()\n"
)


def log_bytes(path: str) -> int:
    """Bytes of write-ahead log in the directory ``path`` (0 if there is none)."""
    try:
        names = os.listdir(path)
    except OSError:
        return 0
    total = 0
    for name in names:
        if name.endswith(".log"):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(path, name)).st_size
    return total


def replay_log_in_child(path: str, column_families: tuple[str, ...], mode: int) -> bool:
    """Have a child process replay a large write-ahead log; True if it did.

    Best effort: when no child can run (a frozen application has no
    interpreter to start) or it fails (the database is locked, corrupted,
    not a queue), the open here replays the log itself and reports the error.
    """
    if log_bytes(path) <= REPLAY_IN_CHILD_BYTES:
        return False
    if getattr(sys, "frozen", False) or not sys.executable:
        return False
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    python_path = os.environ.get("PYTHONPATH")
    environment = dict(
        os.environ,
        PYTHONPATH=package_parent + (os.pathsep + python_path if python_path else ""),
    )
    try:
        finished = subprocess.run(
            [sys.executable, "-c", _REPLAY_CHILD, path, oct(mode), *column_families],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            # Bounded: a child that hangs must not hang the open; the open
            # here then replays whatever is left itself.
            timeout=REPLAY_CHILD_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return finished.returncode == 0


def open_read_only(path: str, families: Iterable[str]) -> Rdict:
    names = list(families)
    return _opened(
        lambda: Rdict(
            path,
            Options(raw_mode=True),
            column_families={name: Options(raw_mode=True) for name in names},
            access_type=AccessType.read_only(False),
        )
    )


def _caught_up_secondary(path: str, families: list[str], scratch: str) -> Rdict:
    options = Options(raw_mode=True)
    # RocksDB requires it of a secondary: every table file stays open, so one
    # the primary deletes after a compaction can still be read.
    options.set_max_open_files(-1)

    def open_once() -> Rdict:
        with config_left_alone(path):
            database = Rdict(
                path,
                options,
                column_families={name: Options(raw_mode=True) for name in families},
                access_type=AccessType.secondary(scratch),
            )
        try:
            database.try_catch_up_with_primary()
        except BaseException:
            database.close()
            raise
        return database

    try:
        return _opened(open_once)
    except Exception as error:
        raise translate(error, path, "opening a snapshot") from error


@contextlib.contextmanager
def open_secondary(path: str, families: Iterable[str]) -> Iterator[tuple[Rdict, float]]:
    """The database at ``path`` as a RocksDB secondary instance, and when it was taken.

    For a queue that another process holds open: a secondary takes no lock and
    creates nothing in ``path`` (its info LOG goes to a temporary directory of
    its own, removed at the end; rocksdict-config.json, which rocksdict
    rewrites, is put back as it was). It is caught up with the primary once and
    never again, so everything read through it is one point in time, the
    time returned: each batch the primary wrote is seen whole or not at all.
    Callers must drop every handle they took before the block ends.
    """
    scratch = tempfile.mkdtemp(prefix="rocksq_aio-snapshot-")
    try:
        database = _caught_up_secondary(path, list(families), scratch)
        taken_at = time.time()
        try:
            yield database, taken_at
        finally:
            try:
                database.close()
            except Exception as error:
                raise translate(error, path, "closing a snapshot") from error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _holds_no_queue_data(path: str, present: set[str]) -> bool:
    """True when every family is empty: a creation that did not finish."""
    families = sorted(present - {"default"})
    try:
        with config_left_alone(path):
            database = open_read_only(path, families)
            try:
                for name in ["default", *families]:
                    family = database if name == "default" else database.get_column_family(name)
                    iterator = family.iter()
                    iterator.seek_to_first()
                    empty = not iterator.valid()
                    del iterator, family
                    if not empty:
                        return False
            finally:
                database.close()
    except Exception as error:
        raise translate(error, path, "inspecting the database") from error
    return True


def directory_size(path: str) -> int:
    total = 0
    for root, _directories, files in os.walk(path):
        for name in files:
            # RocksDB may remove a file while we walk.
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def prepare_directory(path: str, column_families: tuple[str, ...], mode: int) -> None:
    """Create the directory if needed; refuse one that holds something else."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"path {path!r} exists and is not a directory")
    if not os.path.exists(path):
        try:
            _make_directories(path, mode)
        except OSError as error:
            raise QueueIOError(f"cannot create the queue directory {path!r}: {error}") from None
        return
    if not os.path.exists(os.path.join(path, "CURRENT")):
        # Files RocksDB makes before CURRENT are what a creation killed
        # early leaves: the creation starts again. Anything else is not ours.
        if not all(_is_creation_leftover(name) for name in os.listdir(path)):
            raise QueueError(
                f"path {path!r} is a non-empty directory that holds no RocksDB database; "
                "refusing to write into it"
            )
        return
    try:
        present = set(Rdict.list_cf(path, Options(raw_mode=True)))
    except Exception as error:
        raise translate(error, path, "reading the column families") from error
    expected = {"default", *column_families}
    if present == expected:
        # Table files but no kind: RocksDB dropped MANIFEST records it
        # took for a torn tail, and the read-write open would delete the
        # tables they listed, leaving what looks like a new, empty queue.
        if any(name.endswith(".sst") for name in os.listdir(path)):
            try:
                kind = stored_format(path)
            except Exception as error:
                raise translate(error, path, "reading the queue kind") from error
            if kind is None:
                raise QueueCorruptedError(
                    f"queue at {path!r} has table files but its metadata is gone "
                    "(damaged MANIFEST?); refusing to open it as an empty queue"
                )
        return  # the core checks the kind and the counters
    # A queue killed while being created has only some of our families
    # and nothing else: finish creating it. Anything else is not ours,
    # and is left exactly as it was.
    # An interrupted creation never flushed: table files mean lost data.
    has_tables = any(name.endswith(".sst") for name in os.listdir(path))
    if not present <= expected or has_tables or not _holds_no_queue_data(path, present):
        raise QueueError(
            f"path {path!r} holds a RocksDB database with column families "
            f"{sorted(present)} that is not a rocksq_aio queue of this kind "
            f"(expected {sorted(expected)}); refusing to open it"
        )


def _held_by_another_process(lock_file: str) -> bool:
    """True when another process holds RocksDB's lock on ``lock_file``."""
    try:
        descriptor = os.open(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def lock_is_held(directory: str) -> bool:
    """True when some process (this one included) holds RocksDB's lock on ``directory``.

    RocksQ carries its own RocksDB, whose lock neither rocksdict nor a probe
    from this process can see, so /proc/locks is read where it exists.
    """
    lock = os.path.join(directory, "LOCK")
    try:
        status = os.stat(lock)
    except FileNotFoundError:
        return False
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            table = locks.read()
    except OSError:
        return _held_by_another_process(lock)
    target = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    return any(target in line.split() for line in table.splitlines())


def stored_format(path: str) -> bytes | None:
    """The ``kind`` a queue directory records, read without taking its lock."""
    families = [name for name in Rdict.list_cf(path, Options(raw_mode=True)) if name != "default"]
    if META_CF not in families:
        return None
    with config_left_alone(path):
        database = open_read_only(path, families)
        try:
            meta = database.get_column_family(META_CF)
            kind: Any = meta.get(FORMAT_KEY)
            del meta
        finally:
            database.close()
    return kind if isinstance(kind, bytes) else None


def destroy(path: str) -> None:
    """Remove a queue directory entirely; it must not be open anywhere."""
    absolute = os.path.abspath(os.fspath(path))
    with _open_paths_lock:
        if absolute in _open_paths:
            raise QueueLockedError(f"queue at {absolute!r} is open; close it before removing it")
    if not os.path.exists(absolute):
        return
    if not os.path.isdir(absolute):
        raise ValueError(f"path {absolute!r} is not a directory")
    if not os.path.exists(os.path.join(absolute, "CURRENT")):
        # Never rmtree a directory that is not ours.
        if os.listdir(absolute):
            raise QueueError(f"path {absolute!r} is not a queue directory; refusing to remove it")
        os.rmdir(absolute)
        return
    if lock_is_held(absolute):
        raise QueueLockedError(f"queue at {absolute!r} is open; close it before removing it")
    try:
        kind = stored_format(absolute)
    except Exception as error:
        raise translate(error, absolute, "reading the queue kind") from error
    if kind not in (*FIFO_FORMATS, *MPMC_FORMATS):
        raise QueueError(
            f"path {absolute!r} holds a RocksDB database that is not a rocksq_aio queue; "
            "refusing to remove it"
        )
    shutil.rmtree(absolute)
