"""Scaling: how round trips and throughput grow with channels and with processes.

* ``xproc-scale-channels-{1,10,100}``: K callers, each on a channel of its own to
  one child, call at the same time (``await tx.call(EchoSmall, msg)`` in K tasks of
  one asyncio loop); the child answers each channel from a task of its own.
* ``xproc-scale-procs-{1,2,4,8}``: K children, one caller each, all at once.

Every configuration makes the same number of calls per round in all (split among
its callers), after every caller has warmed up.  Each configuration is reported
twice: the per-call round-trip time (median and p99 over every call of the round)
and the aggregate throughput (calls answered per second, all callers together),
each against the one-caller configuration measured in the same rounds.  On two
cores, concurrency can only buy overlap: the parent's loop, the I/O threads and
the children share two CPUs, which the where-the-time-goes line shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from functools import partial
from time import perf_counter_ns
from typing import Any, Final

import workmesh as wm

from . import _workers_child as worker
from . import _xproc
from . import _xproc_child as child
from ._core import LATENCY, THROUGHPUT, Kind, Settings, _latency_series, _throughput_series
from ._groups import Measured, Row, alternate, register_group

CALLS: Final = 5_000  # calls per configuration per round, at full scale
CHANNELS: Final = (1, 10, 100)
PROCESSES: Final = (1, 2, 4, 8)
ROUND_TIMEOUT_S: Final = 120.0
CHILD: Final = worker.__name__

_Round = tuple[list[int], int, int]  # every call's ns, calls made, wall ns


async def _callers(senders: list[wm.Sender[Any]], per_caller: int, warmup: int) -> _Round:
    """One caller per sender, ``per_caller`` timed calls each, all callers at once."""
    msg, make, clock = child.SMALL, child.EchoSmall, perf_counter_ns
    go, all_warm = asyncio.Event(), asyncio.Event()
    warm = [0]
    results = [[0] * per_caller for _ in senders]

    async def caller(tx: wm.Sender[Any], samples: list[int]) -> None:
        call = tx.call
        reply = None
        for _ in range(warmup):
            reply = await call(make, msg)
        warm[0] += 1
        if warm[0] == len(senders):
            all_warm.set()
        await go.wait()
        for i in range(per_caller):
            start = clock()
            reply = await call(make, msg)
            samples[i] = clock() - start
        if reply != msg:
            raise RuntimeError(f"the echo answered {reply!r:.60}, expected {msg!r:.60}")

    async with asyncio.timeout(ROUND_TIMEOUT_S), asyncio.TaskGroup() as tasks:
        for tx, samples in zip(senders, results, strict=True):
            tasks.create_task(caller(tx, samples))
        await all_warm.wait()
        start = clock()
        go.set()
    wall = clock() - start
    return [ns for samples in results for ns in samples], per_caller * len(senders), wall


async def _spawn_echo(
    mesh: wm.Mesh, name: str, channels: int, stack: contextlib.AsyncExitStack
) -> tuple[int, list[wm.Sender[Any]]]:
    """A child answering on ``channels`` channels; its pid and a Sender to each."""
    senders, receivers = [], []
    for _ in range(channels):
        tx, rx = wm.channel(child.EchoSmall)
        stack.callback(tx.close)  # the child ends once every channel has closed
        senders.append(tx)
        receivers.append(rx)
    spawned = await mesh.spawn(name, f"{CHILD}:echo_many", receivers)
    return spawned.pid, senders


async def _start_channels(
    stack: contextlib.AsyncExitStack,
) -> tuple[list[int], list[wm.Sender[Any]]]:
    mesh = await stack.enter_async_context(wm.Mesh("bench-scale-channels"))
    pid, senders = await _spawn_echo(mesh, "bench-echo-many", max(CHANNELS), stack)
    return [pid], senders


async def _start_processes(
    stack: contextlib.AsyncExitStack,
) -> tuple[list[int], list[wm.Sender[Any]]]:
    mesh = await stack.enter_async_context(wm.Mesh("bench-scale-procs"))
    started = await asyncio.gather(
        *(_spawn_echo(mesh, f"bench-echo-{i}", 1, stack) for i in range(max(PROCESSES)))
    )
    return [pid for pid, _ in started], [senders[0] for _, senders in started]


def _cpu_shares(run: Callable[[], object], pids: list[int]) -> str:
    """Run once; the CPU each part used, as a share of the wall time (2 cores = 200%)."""
    parent = os.getpid()
    before = {pid: _xproc._thread_cpu_ns(pid) for pid in (parent, *pids)}
    start = perf_counter_ns()
    run()
    wall = perf_counter_ns() - start
    used = {
        pid: {tid: ns - before[pid].get(tid, 0) for tid, ns in _xproc._thread_cpu_ns(pid).items()}
        for pid in before
    }
    loop = used[parent].pop(parent, 0)
    parts = {
        "parent loop": loop,
        "parent I/O thread": sum(used[parent].values()),
        "children": sum(sum(threads.values()) for pid, threads in used.items() if pid != parent),
    }
    shares = ", ".join(f"{name} {100 * ns / wall:.0f}%" for name, ns in parts.items())
    return f"{shares} of wall time ({100 * sum(parts.values()) / wall:.0f}% in all)"


def _scale_group(
    what: str,
    counts: tuple[int, ...],
    start: Callable[[contextlib.AsyncExitStack], Any],
    settings: Settings,
) -> Measured:
    total = settings.ops(CALLS)
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        pids, senders = _xproc._enter_async(stack, runner, start)

        def config(count: int) -> _Round:
            per_caller = max(5, total // count)
            warmup = max(1, per_caller // 10)
            return runner.run(_callers(senders[:count], per_caller, warmup))

        rounds = alternate(settings, {str(count): partial(config, count) for count in counts})
        largest = max(counts)
        shares = _cpu_shares(partial(config, largest), pids if what == "procs" else pids[:1])
    measured = Measured()
    for count, found in rounds.items():
        measured.series[f"rtt:{count}"] = _latency_series([samples for samples, _, _ in found])
        measured.series[f"tput:{count}"] = _throughput_series([(n, wall) for _, n, wall in found])
    _xproc._print_limit(f"xproc-scale-{what}", _scale_limit(what, counts, measured, shares))
    return measured


def _scale_limit(what: str, counts: tuple[int, ...], measured: Measured, shares: str) -> str:
    def median(key: str) -> float:
        series = measured.series[key]
        assert not isinstance(series, str)
        return series.median

    unit = "channels" if what == "channels" else "processes"
    growth = ", ".join(
        f"{count}: {median(f'rtt:{count}'):.0f} µs, {median(f'tput:{count}') / 1e3:.1f}k calls/s"
        for count in counts
    )
    return (
        f"per-call round trip and aggregate calls/s by {unit}: {growth}; with "
        f"{max(counts)} {unit}: {shares}. A round trip waits behind the other callers' "
        "calls in the same loops and threads, so it grows with the callers once the CPUs "
        "are busy, while throughput grows only as far as the overlap allows"
    )


def _rows(what: str, counts: tuple[int, ...]) -> list[Row]:
    """Per-call round trip rows, then aggregate throughput rows; each K against K = 1."""
    unit = "channel" if what == "channels" else "process"
    one = f"1 {unit}"
    rows: list[Row] = []
    kinds: tuple[tuple[Kind, str, str], ...] = (
        (LATENCY, "rtt", ""),
        (THROUGHPUT, "tput", "/throughput"),
    )
    for kind, key, suffix in kinds:
        measure = "per-call round trip" if kind == LATENCY else "aggregate calls/s"
        for count in counts:
            first = not rows
            plural = "es" if unit == "process" else "s"
            name = f"{count} {unit}{plural if count > 1 else ''}"
            versus = "" if count == 1 else f", against {one}"
            rows.append(
                Row(
                    f"-{count}{suffix}",
                    f"{key}:{count}",
                    None if count == 1 else f"{key}:1",
                    kind=kind,
                    peer_label=None if count == 1 else one,
                    about=None
                    if first
                    else f"as xproc-scale-{what}-1, same run: {name}, {measure}{versus}",
                )
            )
    return rows


_ABOUT = {
    "channels": "K callers on one asyncio loop, each on a channel of its own to one Mesh child "
    "that answers each channel from a task of its own, all calling at once (await "
    "tx.call(EchoSmall, msg), the small Struct); K = 1, 10, 100; the same number of calls per "
    "round for every K; per-call round trip (and, in the /throughput rows, aggregate calls/s), "
    "each K against K = 1 measured in the same rounds",
    "procs": "K Mesh children, one caller each on one asyncio loop, all calling at once (await "
    "tx.call(EchoSmall, msg), the small Struct); K = 1, 2, 4, 8; the same number of calls per "
    "round for every K; per-call round trip (and, in the /throughput rows, aggregate calls/s), "
    "each K against K = 1 measured in the same rounds",
}

register_group(
    "xproc-scale-channels",
    LATENCY,
    partial(_scale_group, "channels", CHANNELS, _start_channels),
    _ABOUT["channels"],
    _rows("channels", CHANNELS),
)
register_group(
    "xproc-scale-procs",
    LATENCY,
    partial(_scale_group, "procs", PROCESSES, _start_processes),
    _ABOUT["procs"],
    _rows("procs", PROCESSES),
)
