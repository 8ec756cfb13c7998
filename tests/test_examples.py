"""Every program in examples/ runs, exits 0 and prints what it should.

The examples are found with a glob, so a new one is tested without editing
this file; add its expected output to EXPECTED_OUTPUT to check more than its
exit code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIRECTORY = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIRECTORY.glob("*.py"))
TIMEOUT = 60.0
MINIMUM_EXAMPLES = 5

# Substrings each example's standard output must contain.
EXPECTED_OUTPUT: dict[str, list[str]] = {
    "quickstart.py": [
        "pushed 3 jobs, queue length 3",
        "after reopening: 3 jobs, 42 bytes",
        "popped [b'resize frame 1', b'resize frame 2']",
        "left 1",
        "archiver reads ([b'camera-1 online', b'camera-2 online'], False)",
        "labels after reopening ['alerts', 'archiver']",
        "alerts resumes ([b'camera-2 online'], False)",
        "processing [b'resize frame 3']",
        "consumer got [b'resize frame 4']",
    ],
    "async_pipeline.py": [
        "producers done: 300 jobs pushed",
        "pipeline processed 300 of 300 jobs, each exactly once: True",
        "each consumer got each producer's jobs in push order: True",
        "jobs left in the queue: 0",
    ],
    "resume_after_restart.py": [
        "before restart, processed: ['event-01', 'event-02', 'event-03', 'event-04']",
        "after restart, processed: ['event-05', 'event-06', 'event-07', 'event-08', "
        "'event-09', 'event-10']",
        "resumed exactly where it stopped (nothing skipped, nothing twice): True",
        "labels stored on disk: ['indexer']",
        "a new label 'auditor' still reads all 10 events",
    ],
    "blocking_example.py": [
        "pushed 60 tasks",
        "queue full, push refused: QueueFullError | still 60",
        "3 worker threads handled 60 tasks, each once: True",
        "queue empty afterwards: True",
        "after reopening: 2 tasks waiting: [b'left for later 1', b'left for later 2']",
        "tail -f:  ([b'sensor warm'], False)",
        "after reopening, labels: ['archiver', 'monitor']",
        "monitor resumes: ([b'sensor ok', b'sensor warm', b'sensor hot'], False)",
        "archiver resumes: ([b'sensor hot'], False)",
    ],
    "nonblocking_example.py": [
        "all 200 pushes done: True",
        "len: 200 | payload bytes: 2090",
        "[b'reading 0', b'reading 1', b'reading 2']",
        "three back-to-back pops: [[b'reading 3'], [b'reading 4', b'reading 5'], "
        "[b'reading 6', b'reading 7', b'reading 8']]",
        "push over capacity refused: QueueFullError",
        "len after the refused push: 191",
        "detector got [b'frame-1', b'frame-2'] expired: False",
        "labels now: ['detector']",
        "[asyncio] awaited pop: [b'async-1', b'async-2']",
        "[asyncio] get() inside the event loop refused",
        "[trio] awaited the same response: [b'async-3']",
    ],
}


def test_there_are_enough_examples() -> None:
    assert len(EXAMPLES) >= MINIMUM_EXAMPLES, [path.name for path in EXAMPLES]


def test_every_expected_output_belongs_to_an_example() -> None:
    # A renamed example must not silently lose its output checks.
    assert set(EXPECTED_OUTPUT) <= {path.name for path in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(example: Path, tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    completed = subprocess.run(
        [sys.executable, str(example), str(directory)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=EXAMPLES_DIRECTORY.parent,
        check=False,
    )
    report = f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    assert completed.returncode == 0, report
    assert completed.stdout.strip(), f"{example.name} printed nothing\n{report}"
    for expected in EXPECTED_OUTPUT.get(example.name, []):
        assert expected in completed.stdout, f"missing {expected!r}\n{report}"
    # The queues were created in the directory given on the command line.
    assert any(directory.iterdir()), f"{example.name} did not use {directory}"
