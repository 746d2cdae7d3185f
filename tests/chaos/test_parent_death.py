"""kill -9 of a mesh parent: every process it started goes with it, promptly.

The parent (tests/helpers/chaos_parent.py) runs in its own process with cold
children, warm children forked by its zygote, and a worker host running a
worker.  It is killed with SIGKILL; each of its processes -- the zygote and the
zygote's children included -- must be gone shortly after, which the test waits
for on pidfds (a pidfd turns readable when its process ends).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._scale import figure, scale, timeout

pytestmark = pytest.mark.timeout(timeout(short=60, long=1800))

ROOT = Path(__file__).resolve().parents[2]
PROMPTLY = 2.0  # seconds within which every process must follow its parent


def wait_gone(pidfds: dict[str, int], deadline: float) -> dict[str, float]:
    """Wait on the pidfds until each process has ended; when each did (monotonic)."""
    gone: dict[str, float] = {}
    left = dict(pidfds)
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select(list(left.values()), [], [], remaining)
        now = time.monotonic()
        for name, fd in list(left.items()):
            if fd in ready:
                gone[name] = now
                del left[name]
    return gone


def kill_parent_once() -> tuple[int, float]:
    """Start the parent, kill it; returns how many processes followed and the slowest."""
    parent = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.chaos_parent"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pidfds: dict[str, int] = {}
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, f"the parent exited early with {parent.wait(10)}"
        processes: dict[str, int] = json.loads(line)
        assert {"zygote", "host"} <= processes.keys() and len(processes) == 7, processes
        for name, pid in processes.items():
            pidfds[name] = os.pidfd_open(pid)
        killed_at = time.monotonic()
        parent.kill()
        assert parent.wait(10) == -9
        gone = wait_gone(pidfds, killed_at + PROMPTLY)
        survivors = sorted(set(pidfds) - set(gone))
        assert not survivors, f"outlived their parent by {PROMPTLY} s: {survivors}"
        return len(gone), max(gone.values()) - killed_at
    finally:
        for fd in pidfds.values():
            os.close(fd)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.close()
        parent.stdout.close()


def test_parent_killed_leaves_no_process_behind() -> None:
    rounds = scale(short=1, long=20)
    slowest: list[float] = []
    followed = 0
    for _ in range(rounds):
        count, last = kill_parent_once()
        followed += count
        slowest.append(last)
    figure(
        f"kill -9 of a mesh parent: {rounds} round(s), {followed} processes followed it "
        f"(children, zygote, forked children, worker host); slowest "
        f"{max(slowest) * 1e3:.1f} ms after the kill"
    )
