"""Throughput benchmark: rocksq_aio against RocksQ 0.3.0 and persist-queue.

Every measurement runs in a fresh child process (``run.py --child SYSTEM
WORKLOAD PARAMS``) on a fresh temporary directory, and prints one JSON line:
the rate in messages/s, the child's peak RSS and, on an event loop, the loop's
lag (a 1 ms ticker's oversleep). The parent runs each workload ``--runs`` times,
alternating the systems within each run (rotating who goes first), reports the
median, min and max, the ratios and the project's targets, and writes
``latest.json`` and ``latest.md`` to ``--output-dir``.

    python bench/run.py --quick                 # about 2 minutes, small N
    python bench/run.py                         # full: N=20000, 1 MiB N=1000
    python bench/run.py --workloads w2,w7 --systems ours,rocksq --runs 5
    python bench/run.py --quick --baseline /tmp/old-checkout   # also baseline-ours, ...

This module is the entry point only; bench/README.md describes the others and
``--baseline``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The sibling modules import each other by name, however this file is started.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

from jetstream import servers as nats_servers  # noqa: E402
from measure import child_main  # noqa: E402
from report import (  # noqa: E402
    check_targets,
    compute_ratios,
    describe_machine,
    markdown,
    summarize,
    write_atomically,
)
from workloads import (  # noqa: E402
    BASELINE_PREFIX,
    BASELINE_SYSTEMS,
    BASELINED,
    BATCH,
    CONSUMERS,
    INTERLEAVED,
    JETSTREAM_KINDS,
    MPMC,
    OURS,
    OURS_SYNC,
    POP_BATCH,
    SYSTEMS,
    TTL,
    WORKLOADS,
    WRITE_READ,
    Workload,
    base_system,
    is_baseline,
    with_baselines,
)


@dataclass(frozen=True)
class Config:
    n: int
    mib_n: int
    sync_n: int
    runs: int
    workloads: tuple[str, ...]
    systems: tuple[str, ...]
    output_dir: str
    timeout: float
    uvloop: bool
    quick: bool
    baseline: str | None = None  # --baseline DIR, resolved
    baseline_commit: str | None = None
    nats: dict[str, list[str]] | None = None  # client URLs by replicas, for the j* workloads

    def count(self, workload: Workload, system: str = OURS) -> int:
        """Messages for a system on a workload (a baseline twin gets its system's count)."""
        system = base_system(system)
        if workload.count == "mib_n":
            count = self.mib_n
        elif workload.count == "n/10":
            count = max(1, self.n // 10)
        else:
            count = self.n
        if system == OURS_SYNC and workload.kind in (WRITE_READ, INTERLEAVED, MPMC):
            # One fsync per call: the rate hardly depends on N, the run time does.
            count = min(count, self.sync_n)
        return count


def select(raw: str | None, known: Sequence[str], what: str) -> tuple[str, ...]:
    """Names from a comma list; a workload group name ("w3", "w7") selects its members."""
    if raw is None:
        return tuple(known)
    chosen: list[str] = []
    for token in (part.strip() for part in raw.split(",")):
        if not token:
            continue
        matches = [name for name in known if name == token]
        if not matches and what == "workload":
            matches = [name for name in known if name.rstrip("ab").split("_")[0] == token]
        if not matches:
            raise SystemExit(f"unknown {what} {token!r}; choose from {', '.join(known)}")
        chosen.extend(name for name in matches if name not in chosen)
    return tuple(name for name in known if name in chosen)


def select_systems(raw: str | None, baseline: str | None) -> tuple[str, ...]:
    """--systems; with --baseline, each chosen "ours*" system brings its baseline twin."""
    if baseline is None:
        for token in (part.strip() for part in (raw or "").split(",")):
            if is_baseline(token):
                raise SystemExit(f"system {token!r} needs --baseline DIR")
        return select(raw, SYSTEMS, "system")
    chosen = set(select(raw, SYSTEMS + BASELINE_SYSTEMS, "system"))
    chosen |= {BASELINE_PREFIX + system for system in BASELINED if system in chosen}
    return tuple(system for system in with_baselines(SYSTEMS) if system in chosen)


def candidates(workload: Workload, config: Config) -> list[str]:
    """The systems that may run a workload, in the order they alternate from."""
    if config.baseline is None:
        return list(workload.systems)
    return list(with_baselines(workload.systems))


def git_commit(directory: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def check_baseline_import(result: dict[str, Any], baseline: str) -> None:
    """Stop the whole bench if a baseline child did not import rocksq_aio from the baseline."""
    imported = result.get("rocksq_aio_file")
    where = os.path.realpath(imported) if imported else None
    if where is None or os.path.commonpath([where, baseline]) != baseline:
        raise SystemExit(
            f"error: {result.get('system')} on {result.get('workload')} imported rocksq_aio "
            f"from {imported!r}, not from under --baseline {baseline}; its numbers would not "
            "measure the baseline, so the bench stops here"
        )


def run_child(system: str, workload: Workload, config: Config) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="rocksq_aio-bench-")
    params = {
        "n": config.count(workload, system),
        "uvloop": config.uvloop,
        "tmpdir": directory,
        "nats": config.nats or {},
    }
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        system,
        workload.name,
        json.dumps(params),
    ]
    env: dict[str, str] | None = None
    if is_baseline(system):
        if config.baseline is None:
            raise SystemExit(f"{system} needs --baseline DIR")
        # The baseline checkout comes first, ahead of this one's (editable) install.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (config.baseline, os.environ.get("PYTHONPATH")) if part
        )
    failure: dict[str, Any] = {"system": system, "workload": workload.name, "ok": False}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=config.timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {**failure, "error": f"timed out after {config.timeout:g} s"}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {**failure, "error": f"exit {done.returncode}: {' | '.join(tail)}"}
    if done.returncode != 0 and result.get("ok"):
        result.update(ok=False, error=f"exit {done.returncode}")
    checked = result.get("ok") or result.get("rocksq_aio_file")
    if config.baseline is not None and is_baseline(system) and checked:
        check_baseline_import(result, config.baseline)
    return result


def run_workloads(config: Config) -> list[dict[str, Any]]:
    """Every selected workload ``--runs`` times, the systems alternating; each run's result."""
    all_runs: list[dict[str, Any]] = []
    width = max([20, *map(len, config.systems)])  # of the system column in progress lines
    for name in config.workloads:
        workload = WORKLOADS[name]
        systems = [s for s in candidates(workload, config) if s in config.systems]
        unavailable: set[str] = set()
        for run in range(config.runs):
            shift = run % len(systems) if systems else 0
            for system in systems[shift:] + systems[:shift]:
                if system in unavailable:
                    continue
                result = run_child(system, workload, config)
                result["run"] = run + 1
                all_runs.append(result)
                if result.get("ok"):
                    lag = result.get("lag_p99_ms")
                    extra = "" if lag is None else f", lag p99 {lag:.2f} ms"
                    status = f"{result['rate']:>12,.0f} msgs/s, RSS {result['rss_mib']:.0f} MiB"
                    status += extra
                else:
                    status = f"FAILED: {result.get('error')}"
                    if result.get("unavailable"):
                        unavailable.add(system)
                print(
                    f"[{name} run {run + 1}/{config.runs}] {system:<{width}} {status}",
                    file=sys.stderr,
                    flush=True,
                )
    return all_runs


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark rocksq_aio against rocksq 0.3.0 and persist-queue.",
        epilog=f"workloads: {', '.join(WORKLOADS)} (w3, w6, w7, w8 select groups); "
        f"systems: {', '.join(SYSTEMS)}; with --baseline also {', '.join(BASELINE_SYSTEMS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="N=2000, 1 MiB N=50, ours-sync N<=500, 3 runs"
    )
    parser.add_argument("--n", type=int, help="small messages per workload (default 20000)")
    parser.add_argument("--mib-n", type=int, help="1 MiB messages in w4 (default 1000)")
    parser.add_argument(
        "--sync-n",
        type=int,
        help="cap on N for ours-sync in w1-w4, w6, w8a, which fsync every call "
        "(default: no cap; --quick: 500)",
    )
    parser.add_argument("--runs", type=int, help="runs per system and workload (default 3)")
    parser.add_argument("--workloads", help="comma list, e.g. w1,w2,w7 (default: all)")
    parser.add_argument(
        "--systems",
        help=f"comma list of {', '.join(SYSTEMS)} (default: all); with --baseline, "
        "baseline-<name> too, and each ours* system chosen brings its baseline-<name>",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout of this repository (e.g. a git worktree of an older commit): "
        "every ours* system also runs as baseline-<name>, importing rocksq_aio from DIR",
    )
    parser.add_argument(
        "--output-dir",
        default=os.path.join("bench", "results"),
        help="where latest.json and latest.md go (default bench/results)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per measurement (default 900)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop for w7/w8b")
    parser.add_argument(
        "--child", nargs=3, metavar=("SYSTEM", "WORKLOAD", "JSON"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.child:
        return child_main(*args.child)
    n = args.n if args.n is not None else (2000 if args.quick else 20000)
    mib_n = args.mib_n if args.mib_n is not None else (50 if args.quick else 1000)
    runs = args.runs if args.runs is not None else 3
    sync_n = args.sync_n if args.sync_n is not None else (500 if args.quick else max(n, mib_n))
    if min(n, mib_n, sync_n, runs) < 1:
        raise SystemExit("--n, --mib-n, --sync-n and --runs must be at least 1")
    baseline = None
    if args.baseline is not None:
        baseline = os.path.realpath(args.baseline)
        if not os.path.isfile(os.path.join(baseline, "rocksq_aio", "__init__.py")):
            raise SystemExit(
                f"--baseline {args.baseline}: no rocksq_aio/__init__.py there; "
                "give a checkout of this repository"
            )
    if runs < 3:
        print(
            f"warning: a median of {runs} run(s) is not robust; use --runs 3 or more",
            file=sys.stderr,
        )
    config = Config(
        n=n,
        mib_n=mib_n,
        sync_n=sync_n,
        runs=runs,
        workloads=select(args.workloads, list(WORKLOADS), "workload"),
        systems=select_systems(args.systems, baseline),
        output_dir=args.output_dir,
        timeout=args.timeout,
        uvloop=not args.no_uvloop,
        quick=args.quick,
        baseline=baseline,
        baseline_commit=git_commit(baseline) if baseline is not None else None,
    )
    machine = describe_machine()
    began = time.perf_counter()
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    wants_nats = any(WORKLOADS[name].kind in JETSTREAM_KINDS for name in config.workloads)
    with nats_servers(wants_nats) as nats_urls:
        all_runs = run_workloads(dataclasses.replace(config, nats=nats_urls))
    rows = summarize(all_runs, config)
    ratios = compute_ratios(rows, config)
    checks = check_targets(rows)
    machine["loadavg_end"] = list(os.getloadavg())
    elapsed = time.perf_counter() - began
    title = f"# rocksq_aio benchmark ({stamp}{', --quick' if config.quick else ''})\n\n"
    report = title + markdown(rows, ratios, checks, config, machine)
    print(report)
    os.makedirs(config.output_dir, exist_ok=True)
    payload = {
        "timestamp": stamp,
        "elapsed_seconds": elapsed,
        "params": {
            "n": config.n,
            "mib_n": config.mib_n,
            "sync_n": config.sync_n,
            "w8_n": max(1, config.n // 10),
            "runs": config.runs,
            "quick": config.quick,
            "workloads": list(config.workloads),
            "systems": list(config.systems),
            "uvloop_requested": config.uvloop,
            "batch": BATCH,
            "pop_batch": POP_BATCH,
            "consumers": CONSUMERS,
            "ttl": TTL,
            "timeout": config.timeout,
            "baseline": config.baseline,
            "baseline_commit": config.baseline_commit,
            "argv": list(argv),
        },
        "machine": machine,
        "workloads": {
            name: {
                "kind": WORKLOADS[name].kind,
                "message_bytes": WORKLOADS[name].size,
                "n": {
                    s: config.count(WORKLOADS[name], s) for s in candidates(WORKLOADS[name], config)
                },
                "description": WORKLOADS[name].description,
            }
            for name in config.workloads
        },
        "runs": all_runs,
        "summary": rows,
        "ratios": ratios,
        "targets": checks,
    }
    write_atomically(os.path.join(config.output_dir, "latest.json"), json.dumps(payload, indent=2))
    write_atomically(os.path.join(config.output_dir, "latest.md"), report)
    print(
        f"wrote {config.output_dir}/latest.json and latest.md in {elapsed:.0f} s", file=sys.stderr
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
