"""The child side of the memory cases: hold idle things in a fresh process, measure.

``python -m workmesh._bench._memory_child KIND N1 N2 PPID`` prints one JSON object,
``{"heap": [each at N1, each at N2], "rss": [each at N1, each at N2]}`` (bytes per
item).  KIND is ``channel`` (``wm.channel()`` pairs), ``queue`` (``asyncio.Queue``),
``sync`` or ``async`` (idle workers on a worker host in this process) or ``thread``
(plain threads blocked on an event).

A fresh process, because a resident-set delta in a process that has already
allocated and freed the same kind of objects mostly measures reuse of freed
memory.  After a warm-up that creates and drops a few items (so that one-time
set-up, such as a first thread's allocator arena or the worker host's runner, is
not counted per item), N2 items are created and held, and the growth is read when
N1 and when N2 exist (nothing is freed in between).  That is done once for the
RSS and once more under ``tracemalloc`` for the Python-heap part.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import threading
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final

import workmesh as wm

from . import _workers_child as worker
from ._xproc_child import die_with_parent

PAGE: Final = os.sysconf("SC_PAGE_SIZE")
WARMUP: Final = 2
STOP_TIMEOUT_S: Final = 10.0


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class _Measure:
    """The growth of RSS, and of the traced heap, at each count of items."""

    def __init__(self, counts: tuple[int, ...]) -> None:
        self.counts = counts
        self.rss: list[float] = []
        self.heap: list[float] = []

    @contextlib.contextmanager
    def resident(self) -> Iterator[Callable[[int], None]]:
        _trim()
        before = rss()
        yield lambda count: self.rss.append((rss() - before) / count)

    @contextlib.contextmanager
    def traced(self) -> Iterator[Callable[[int], None]]:
        _trim()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        try:
            yield lambda count: self.heap.append(
                (tracemalloc.get_traced_memory()[0] - before) / count
            )
        finally:
            tracemalloc.stop()

    @contextlib.contextmanager
    def warmup(self) -> Iterator[Callable[[int], None]]:
        yield lambda count: None

    def passes(self) -> list[tuple[tuple[int, ...], Callable[[], Any]]]:
        """(counts, phase): a warm-up (nothing measured), the RSS pass, the heap pass."""
        return [((WARMUP,), self.warmup), (self.counts, self.resident), (self.counts, self.traced)]


def _objects(make: Callable[[], object], measure: _Measure) -> None:
    for sizes, phase in measure.passes():
        held: list[object] = [None] * sizes[-1]  # the list itself is not what we measure
        with phase() as mark:
            for i in range(sizes[-1]):
                held[i] = make()
                if i + 1 in sizes:
                    mark(i + 1)
        del held


def _threads(measure: _Measure) -> None:
    for sizes, phase in measure.passes():
        release = threading.Event()
        threads = [threading.Thread(target=release.wait) for _ in range(sizes[-1])]
        try:
            with phase() as mark:
                for i, thread in enumerate(threads):
                    thread.start()
                    if i + 1 in sizes:
                        mark(i + 1)
        finally:
            release.set()
            for thread in threads:
                if thread.ident is not None:
                    thread.join()


async def _workers(cls: type[wm.Worker[Any, Any]], measure: _Measure) -> None:
    host, runner = wm.worker_host()
    serving = asyncio.create_task(runner.run(wm.runnable_workers(cls)))
    try:
        for sizes, phase in measure.passes():
            handles: list[wm.WorkerHandle] = []
            try:
                with phase() as mark:
                    for i in range(sizes[-1]):
                        handles.append(await host.launch_worker(cls, worker.Nothing()))
                        if i + 1 in sizes:
                            mark(i + 1)
            finally:
                for handle in handles:
                    handle.stop()
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    for handle in handles:
                        await handle.join()
    finally:
        host.close()
        await serving


def measure(kind: str, counts: tuple[int, ...]) -> dict[str, list[float]]:
    """Bytes per item of idle items of ``kind`` at each of ``counts``: RSS and Python heap."""
    if list(counts) != sorted(set(counts)) or counts[0] < 1:
        raise ValueError(f"counts must be positive and increasing, got {counts}")
    result = _Measure(counts)
    runs: dict[str, Callable[[], Coroutine[Any, Any, None] | None]] = {
        "channel": lambda: _objects(wm.channel, result),
        "queue": lambda: _objects(asyncio.Queue, result),
        "thread": lambda: _threads(result),
        "sync": lambda: _workers(worker.IdleSync, result),
        "async": lambda: _workers(worker.IdleAsync, result),
    }
    if kind not in runs:
        raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(runs)}")
    pending = runs[kind]()
    if pending is not None:
        asyncio.run(pending)
    return {"rss": result.rss, "heap": result.heap}


def main(argv: list[str]) -> int:
    """``KIND N1 N2 PPID``: print the bytes per item at N1 and at N2, as JSON."""
    kind, *counts, parent_pid = argv
    die_with_parent(int(parent_pid))
    print(json.dumps(measure(kind, tuple(int(count) for count in counts))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
