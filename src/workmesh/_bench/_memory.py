"""Memory: bytes per idle channel, per idle worker, per child host.

* ``memory-idle-channel``: N ``wm.channel()`` pairs, created and held in one
  process; bytes per channel from ``tracemalloc`` (everything a channel is lives on
  the Python heap), against as many ``asyncio.Queue`` objects.  Measured at two
  counts N1 < N2: bytes per channel that stay the same show that growth is linear.
  RSS growth per channel is a figure too (coarser: the allocator works in pages).
* ``memory-idle-worker[...]``: N idle workers on a worker host in one process (each
  on a thread of its own; an async worker also has its own event loop), against N
  plain threads blocked on an event.  The main figure is RSS growth per worker (it
  includes the threads' stacks, which tracemalloc does not see); the Python-heap
  part is a figure.  Again at two counts.
* ``memory-child-host[...]``: the resident set of an idle child host (just launched,
  no worker), cold and warm (forked from the zygote), read from
  ``/proc/<pid>/smaps_rollup``, against an interpreter that imported workmesh and
  waits.  RSS counts pages shared with other processes in full; PSS shares them
  out; private (USS) is what the process alone holds, which for a warm host is what
  each more host costs.

Channels and workers are counted in a fresh child process per count and side
(``_memory_child``): in a process that already allocated and freed the same kind of
objects, an RSS delta mostly measures the reuse of freed memory.  Each round
measures every side once (the harness's alternating rounds); the medians over
rounds are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from typing import Final

import workmesh as wm

from . import _memory_child, _workers, _xproc
from ._core import MEMORY, Figure, Series, Settings
from ._groups import Measured, Row, alternate, register_group
from ._report import fmt_bytes

CHANNELS: Final = (5_000, 50_000)  # the two counts, at full scale
WORKERS: Final = (50, 200)
START_TIMEOUT_S: Final = 30.0
CHILD_TIMEOUT_S: Final = 120.0
CHILD: Final = _memory_child.__name__

CHANNEL: Final = "wm.channel()"
QUEUE: Final = "asyncio.Queue"
SYNC_WORKER: Final = "idle sync worker"
ASYNC_WORKER: Final = "idle async worker"
THREAD: Final = "idle thread"
COLD_HOST: Final = "idle cold host"
WARM_HOST: Final = "idle warm host"
INTERPRETER: Final = "python + import workmesh, idle"


@dataclass(frozen=True)
class _PerItem:
    """Bytes per item at each count: from tracemalloc and from RSS."""

    counts: tuple[int, int]
    traced: tuple[float, float]
    resident: tuple[float, float]


def _in_child(kind: str, counts: tuple[int, int]) -> _PerItem:
    """Bytes per item of idle items of ``kind`` at both counts, held in a fresh process."""
    argv = [sys.executable, "-m", CHILD, kind, *map(str, counts), str(os.getpid())]
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"measuring {kind} x {counts} failed (exit {done.returncode}): "
            f"{done.stderr.decode(errors='replace').strip()[-500:]}"
        )
    found = json.loads(done.stdout)
    heap, resident = found["heap"], found["rss"]
    return _PerItem(counts, (heap[0], heap[1]), (resident[0], resident[1]))


def _no_warmup(settings: Settings) -> Settings:
    """Each measurement starts a fresh process (or host): a warm-up round would warm nothing."""
    return dataclasses.replace(settings, warmup_rounds=0)


def _per_item_series(rounds: list[_PerItem], resident: bool) -> Series:
    """Bytes per item at the larger count, median over rounds."""
    values = [(r.resident if resident else r.traced)[1] for r in rounds]
    return Series(statistics.median(values), None, tuple(values), rounds[0].counts[1])


def _per_item_figures(rounds: list[_PerItem]) -> dict[str, Figure]:
    n1, n2 = rounds[0].counts
    traced = [statistics.median(r.traced[i] for r in rounds) for i in (0, 1)]
    resident = [statistics.median(r.resident[i] for r in rounds) for i in (0, 1)]
    return {
        f"heap B each at {n1}": traced[0],
        f"heap B each at {n2}": traced[1],
        "heap growth (1 = linear)": traced[1] / traced[0] if traced[0] else float("nan"),
        f"RSS B each at {n1}": resident[0],
        f"RSS B each at {n2}": resident[1],
    }


# ------------------------------------------------------------------- channels


def _channel_group(settings: Settings) -> Measured:
    counts = (settings.ops(CHANNELS[0], minimum=100), settings.ops(CHANNELS[1], minimum=1000))
    rounds = alternate(
        _no_warmup(settings),
        {
            CHANNEL: partial(_in_child, "channel", counts),
            QUEUE: partial(_in_child, "queue", counts),
        },
    )
    measured = Measured({side: _per_item_series(r, resident=False) for side, r in rounds.items()})
    measured.figures[CHANNEL] = _per_item_figures(rounds[CHANNEL])
    ours, queue = (statistics.median(r.traced[1] for r in rounds[s]) for s in (CHANNEL, QUEUE))
    _xproc._print_limit(
        "memory-idle-channel",
        f"{ours:.0f} B of Python heap per idle channel (a Sender, a Receiver and the state "
        f"they share, with its lock and queue) against {queue:.0f} B per asyncio.Queue; "
        "nothing else is allocated until a message or a port exists",
    )
    return measured


register_group(
    "memory-idle-channel",
    MEMORY,
    _channel_group,
    "bytes of Python heap (tracemalloc) per idle wm.channel() pair, N held in a fresh process, "
    "at the larger of two counts (the figures give both: equal bytes each = linear growth); "
    "peer: as many asyncio.Queue objects",
    [Row("", CHANNEL, QUEUE)],
)


# ------------------------------------------------------------------- idle workers


def _worker_group(settings: Settings) -> Measured:
    counts = (settings.ops(WORKERS[0], minimum=4), settings.ops(WORKERS[1], minimum=16))
    rounds = alternate(
        _no_warmup(settings),
        {
            SYNC_WORKER: partial(_in_child, "sync", counts),
            ASYNC_WORKER: partial(_in_child, "async", counts),
            THREAD: partial(_in_child, "thread", counts),
        },
    )
    measured = Measured({side: _per_item_series(r, resident=True) for side, r in rounds.items()})
    for side in (SYNC_WORKER, ASYNC_WORKER):
        measured.figures[side] = _per_item_figures(rounds[side])

    def each(side: str, resident: bool) -> str:
        value = statistics.median((r.resident if resident else r.traced)[1] for r in rounds[side])
        return fmt_bytes(value)

    _xproc._print_limit(
        "memory-idle-worker",
        f"RSS per worker: sync {each(SYNC_WORKER, True)}, async {each(ASYNC_WORKER, True)}, "
        f"a bare thread {each(THREAD, True)} (its stack's touched pages and the allocator's "
        f"per-thread state); of which Python heap: sync {each(SYNC_WORKER, False)} (the handle, "
        f"its control and event channels, the thread object), async "
        f"{each(ASYNC_WORKER, False)} (an event loop of its own as well)",
    )
    return measured


register_group(
    "memory-idle-worker",
    MEMORY,
    _worker_group,
    "RSS growth per idle worker (a sync worker blocked on its control channel, on its own "
    "thread) when N of them run on a worker host in a fresh process, at the larger of two counts "
    "(figures: both, and the Python-heap part); peer: N plain threads blocked on an event",
    [
        Row("", SYNC_WORKER, THREAD),
        Row(
            "[async]",
            ASYNC_WORKER,
            THREAD,
            about="as memory-idle-worker, same run: idle async workers (each also runs an "
            "event loop of its own on its thread)",
        ),
    ],
)


# ------------------------------------------------------------------- child hosts


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss and Private (bytes) of ``pid`` from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0]) * 1024
    return {
        "Rss": fields["Rss"],
        "Pss": fields["Pss"],
        "Private": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


async def _host_memory(mesh: wm.Mesh, warm: bool) -> dict[str, int]:
    host, process = await _workers.launch_host(mesh, "bench-idle-host", warm=warm)
    try:
        return smaps(process.pid)
    finally:
        await _workers.retire_host(host, process)


def _interpreter_memory() -> dict[str, int]:
    """An interpreter that imported workmesh and waits on its stdin: its memory."""
    code = _xproc._import_code("workmesh") + "; import sys; print('ready', flush=True); "
    code += "sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()  # the child prints once it is ready, or exits
        if line.strip() != b"ready":
            raise RuntimeError(f"the idle interpreter did not start (it said {line!r})")
        return smaps(proc.pid)
    finally:
        proc.stdin.close()
        try:
            proc.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _memory_series(rounds: list[dict[str, int]]) -> Series:
    values = [float(r["Rss"]) for r in rounds]
    return Series(statistics.median(values), None, tuple(values), 1)


def _memory_figures(rounds: list[dict[str, int]]) -> dict[str, Figure]:
    return {f"{key} KiB": statistics.median(r[key] for r in rounds) / 1024 for key in rounds[0]}


def _host_group(settings: Settings) -> Measured:
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        mesh = _xproc._enter_async(stack, runner, _enter_mesh)
        # Start the zygote before measuring (the first warm launch starts cold).
        runner.run(_host_memory(mesh, warm=True))
        runner.run(_host_memory(mesh, warm=True))
        rounds = alternate(
            _no_warmup(settings),
            {
                COLD_HOST: lambda: runner.run(_host_memory(mesh, warm=False)),
                WARM_HOST: lambda: runner.run(_host_memory(mesh, warm=True)),
                INTERPRETER: _interpreter_memory,
            },
        )
    measured = Measured({side: _memory_series(r) for side, r in rounds.items()})
    for side, found in rounds.items():
        measured.figures[side] = _memory_figures(found)

    def kib(side: str, key: str) -> str:
        return fmt_bytes(statistics.median(r[key] for r in rounds[side]))

    _xproc._print_limit(
        "memory-child-host",
        f"an idle cold host holds {kib(COLD_HOST, 'Rss')} resident against "
        f"{kib(INTERPRETER, 'Rss')} for an interpreter that imported workmesh (the difference "
        f"is the host's threads, its link and the worker module); a warm host shares its "
        f"pages with the zygote: {kib(WARM_HOST, 'Private')} private, {kib(WARM_HOST, 'Pss')} "
        "PSS",
    )
    return measured


async def _enter_mesh(stack: contextlib.AsyncExitStack) -> wm.Mesh:
    return await stack.enter_async_context(wm.Mesh("bench-memory"))


register_group(
    "memory-child-host",
    MEMORY,
    _host_group,
    "RSS of an idle child host (mesh.launch_host with the bench's worker module, no worker "
    "yet), from /proc/<pid>/smaps_rollup (figures: RSS, PSS, private); peer: an interpreter "
    "that imported workmesh and waits",
    [
        Row("", COLD_HOST, INTERPRETER),
        Row(
            "[warm]",
            WARM_HOST,
            INTERPRETER,
            about="as memory-child-host, same run: a warm host, forked from the Mesh's zygote "
            "(its private bytes are what each more warm host costs)",
        ),
    ],
)
