"""Workers on a child-process host: round trips to them, and launching them.

* ``worker-rpc-rtt-{small,64k}``: a client on an asyncio loop calls a worker on a
  child host through a ``wm.Sender`` of requests carrying a ``wm.Rpc``
  (``await tx.call(SmallCall, msg)``), the worker answers with the input (decoded
  as the declared type, re-encoded).  Two workers run on the host: an asyncio one
  (it serves from a task on its own loop) and a sync one (it serves from its own
  thread with blocking receives).  Both are measured against the floor, the other
  transports of ``_peers`` and ``multiprocessing.Pipe``, in the same rounds.
* ``worker-launch-{cold,warm}``: ``await mesh.launch_host(name, imports=[...])`` then
  ``await host.launch_worker(...)`` until it returns (the worker's ``Started``), on a
  new host each time, against the interpreter importing workmesh (and the worker
  module) run to completion; warm hosts are forked from the Mesh's zygote.

As in ``_xproc``, each group prints one line on where its time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Any, Final

import workmesh as wm
from workmesh._process import ChildProcess

from . import _peers, _xproc
from . import _workers_child as worker
from . import _xproc_child as child
from ._core import LATENCY, Bound, Figure, Settings, Target, _latency_series
from ._groups import Measured, Row, alternate, register_group

CHILD: Final = worker.__name__
STOP_TIMEOUT_S: Final = 10.0
LAUNCH_OPS: Final = 4  # launches per side per round at full scale

ASYNC_WORKER: Final = "asyncio worker"
SYNC_WORKER: Final = "sync worker"
COLD: Final = "cold launch"
WARM: Final = "warm launch"
IMPORT_WM: Final = _xproc.IMPORT_WM
IMPORT_ENTRY: Final = f'python -c "import {CHILD}"'

_CALL: Final = {"small": worker.SmallCall, "64k": worker.BigCall}
_MESSAGE: Final = {"small": child.SMALL, "64k": child.BIG}


def new_child(mesh: wm.Mesh, before: set[Any]) -> ChildProcess:
    """The one child ``mesh`` started since its children were ``before``."""
    started = [c for node, c in mesh.children.items() if node not in before]
    if len(started) != 1:
        raise RuntimeError(f"expected one new child process, found {len(started)}")
    return started[0]


async def launch_host(
    mesh: wm.Mesh, name: str, *, warm: bool = False, **options: Any
) -> tuple[wm.WorkerHost, ChildProcess]:
    """A new child host that imported the bench's workers, and its process."""
    before = set(mesh.children)
    host = await mesh.launch_host(name, imports=[CHILD], warm=warm, **options)
    return host, new_child(mesh, before)


async def stop_worker(handle: wm.WorkerHandle) -> None:
    """Stop a worker and wait until it has ended (raising if it failed)."""
    handle.stop()
    async with asyncio.timeout(STOP_TIMEOUT_S):
        await handle.join()


async def retire_host(host: wm.WorkerHost, process: ChildProcess) -> None:
    """Let a host go and wait for its process to exit (its workers have ended)."""
    host.close()
    async with asyncio.timeout(STOP_TIMEOUT_S):
        await process.wait()


# ------------------------------------------------------------------- round trips to workers


async def _start_echo_workers(
    stack: contextlib.AsyncExitStack,
) -> tuple[int, dict[str, wm.Sender[worker.EchoCall]]]:
    """One child host running both echo workers; its pid and a client Sender to each."""
    mesh = await stack.enter_async_context(wm.Mesh("bench-workers"))
    host, process = await launch_host(mesh, "bench-echo-workers")
    stack.callback(host.close)  # (stacks unwind last in, first out)
    senders: dict[str, wm.Sender[worker.EchoCall]] = {}
    for side, cls in ((ASYNC_WORKER, worker.AsyncEcho), (SYNC_WORKER, worker.SyncEcho)):
        tx, rx = wm.channel(worker.EchoCall)
        handle = await host.launch_worker(cls, worker.EchoParams(rx))
        stack.push_async_callback(stop_worker, handle)
        stack.callback(tx.close)
        senders[side] = tx
    return process.pid, senders


def _rtt_group(size: str, settings: Settings) -> Measured:
    ops, warmup = settings.ops(_xproc.RTT_OPS), settings.warmup_ops(_xproc.RTT_OPS)
    make, msg = _CALL[size], _MESSAGE[size]
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        stack.enter_context(_xproc._mp_cleanup())
        pid, senders = _xproc._enter_async(stack, runner, _start_echo_workers)
        floor = _xproc._floor_roundtrip(
            stack.enter_context(_xproc._floor_child("echo", size)), size
        )
        pipe = _xproc._pipe_roundtrip(stack.enter_context(_xproc._pipe_child(child.mp_echo)), size)
        echo = _xproc._asyncio_yardstick(stack, runner, size)
        for side, tx in senders.items():
            _xproc._check(side, runner.run(tx.call(make, msg)), msg)
        _xproc._check(_xproc.FLOOR, floor(), msg)
        _xproc._check(_xproc.PIPE, pipe(), _xproc._PICKLED[size])
        _xproc._check(_xproc.ASYNCIO, runner.run(echo.call(msg)), msg)

        def ours(tx: Any, ops: int, warmup: int) -> list[int]:
            return runner.run(_xproc._wm_rtt_round(tx, make, msg, ops, warmup))

        def on_asyncio(ops: int, warmup: int) -> list[int]:
            return runner.run(_xproc._asyncio_rtt_round(echo, msg, ops, warmup))

        others, notes = _peers.split(_peers.rtt_sides(stack, size, ops, warmup))
        sides: dict[str, Callable[[], list[int]]] = {
            side: partial(ours, tx, ops, warmup) for side, tx in senders.items()
        }
        sides[_xproc.FLOOR] = partial(_peers.blocking_rtt_round, floor, ops, warmup)
        sides[_xproc.PIPE] = partial(_peers.blocking_rtt_round, pipe, ops, warmup)
        sides[_xproc.ASYNCIO] = partial(on_asyncio, ops, warmup)
        sides.update(others)
        rounds = alternate(settings, sides)
        for side, tx in senders.items():
            case = f"worker-rpc-rtt-{size}" + ("[sync]" if side == SYNC_WORKER else "")
            tid = runner.run(tx.call(worker.ThreadCall, None))
            _limits(case, ops, partial(ours, tx, warmup=0), pid, tid)
    measured = Measured({side: _latency_series(samples) for side, samples in rounds.items()})
    measured.series.update(notes)
    return measured


def _limits(case: str, ops: int, run: Callable[[int], object], pid: int, tid: int) -> None:
    """Where a worker round trip's time goes: CPU per call of each thread, hot spots."""
    threads = (os.getpid(), pid)
    before = [_xproc._thread_cpu_ns(p) for p in threads]
    start = perf_counter_ns()
    run(ops)
    wall = perf_counter_ns() - start
    after = [_xproc._thread_cpu_ns(p) for p in threads]
    parent, host = (
        {t: ns - old.get(t, 0) for t, ns in new.items()}
        for old, new in zip(before, after, strict=True)
    )
    parts = {
        "parent loop": parent.pop(os.getpid(), 0),
        "parent I/O thread": sum(parent.values()),
        "worker thread": host.pop(tid, 0),
        "host's other threads (I/O, runner)": sum(host.values()),
    }
    hot = _xproc._hot_spots(partial(run, max(5, ops // 10)))
    per_op = ", ".join(f"{name} {ns / ops / 1e3:.1f}" for name, ns in parts.items())
    _xproc._print_limit(
        case,
        f"{_xproc._verdict(LATENCY, wall, parts)}; wall {wall / ops / 1e3:.1f} µs per call, "
        f"CPU µs per call: {per_op}; parent loop's own CPU (cProfile): {hot}",
    )


_RTT_TEXT = (
    "Rpc round trip to a worker on a child host (mesh.launch_host + host.launch_worker): "
    "await tx.call(...) on an asyncio loop through a wm.Sender of requests carrying a wm.Rpc; "
    "the {side} answers with the input (decoded as the declared type, re-encoded); {what}; "
    "floor = blocking socketpair child, 4-byte prefix + msgspec, one sendall each; "
    "{others}"
)
_OTHERS = "; ".join(
    [f"{_xproc.PIPE} = pickling send/recv to a 'spawn' child"]
    + [f"{peer.side} = {peer.about}" for peer in _peers.PEERS]
    + [_xproc.ASYNCIO_NOTE]
)


def _rtt_rows(size: str) -> list[Row]:
    small = size == "small"
    floor_target = Target("<=", 1.5 if small else 1.3)
    peers = [
        (_xproc.PIPE, "mp.Pipe"),
        *((p.side, p.suffix) for p in _peers.PEERS),
        (_xproc.ASYNCIO, "asyncio"),
    ]
    return [
        Row("", ASYNC_WORKER, _xproc.FLOOR, floor_target),
        *(
            Row(
                f"/{suffix}",
                ASYNC_WORKER,
                side,
                _xproc.SMALL_RTT_TARGETS.get(side) if small else None,
            )
            for side, suffix in peers
        ),
        Row(
            "[sync]",
            SYNC_WORKER,
            _xproc.FLOOR,
            floor_target,
            about=f"as worker-rpc-rtt-{size}, same run: the sync worker (blocking receives on "
            "its own thread) against the floor",
        ),
        Row("[sync]/async", SYNC_WORKER, ASYNC_WORKER),
    ]


for _size, _what in (("small", "the small Struct"), ("64k", "64 KiB bytes")):
    register_group(
        f"worker-rpc-rtt-{_size}",
        LATENCY,
        partial(_rtt_group, _size),
        _RTT_TEXT.format(side=ASYNC_WORKER, what=_what, others=_OTHERS),
        _rtt_rows(_size),
    )


# ------------------------------------------------------------------- launching a host


def _parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (from /proc), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name (field 2) may hold spaces: count from its closing paren.
            return int(stat.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Launch:
    """One launch -> Started, and its parts."""

    total_ns: int
    host_ns: int  # launch_host until it returned
    worker_ns: int  # then launch_worker until it returned
    forked: bool  # the host's parent was the zygote, not this process


class Launches:
    """Launching a new host (cold or warm) with a worker, and letting both go again."""

    def __init__(self, mesh: wm.Mesh, warm: bool) -> None:
        self.mesh, self.warm = mesh, warm

    async def once(self) -> Launch:
        name = f"bench-launch-{'warm' if self.warm else 'cold'}"
        tx, rx = wm.channel(worker.EchoCall)
        with tx:
            start = perf_counter_ns()
            host, process = await launch_host(self.mesh, name, warm=self.warm)
            hosted = perf_counter_ns()
            try:
                handle = await host.launch_worker(worker.AsyncEcho, worker.EchoParams(rx))
                started = perf_counter_ns()
                forked = _parent_pid(process.pid) not in (os.getpid(), None)
                await stop_worker(handle)
            finally:
                await retire_host(host, process)
        return Launch(started - start, hosted - start, started - hosted, forked)

    def round(self, runner: asyncio.Runner, ops: int) -> list[Launch]:
        async def launches() -> list[Launch]:
            return [await self.once() for _ in range(ops)]

        return runner.run(launches())


def _launch_figures(prefix: str, rounds: list[list[Launch]]) -> dict[str, Figure]:
    launches = [launch for found in rounds for launch in found]
    figures: dict[str, Figure] = {
        f"{prefix} launch_host ms": statistics.median(x.host_ns for x in launches) / 1e6,
        f"{prefix} launch_worker ms": statistics.median(x.worker_ns for x in launches) / 1e6,
    }
    if prefix == "warm":
        forked = sum(launch.forked for launch in launches)
        figures["forked by the zygote"] = f"{forked} of {len(launches)}"
    return figures


def _profile_imports(text: str) -> str:
    return f"a cold host spends {_xproc.import_times(text)}"


async def _host_imports() -> str:
    """Start one cold host with PYTHONPROFILEIMPORTTIME and say where its imports go."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    with tempfile.TemporaryFile() as err:
        async with wm.Mesh("bench-launch-imports") as mesh:
            host, process = await launch_host(mesh, "bench-imports", env=env, stderr=err)
            await retire_host(host, process)
        err.seek(0)
        return _profile_imports(err.read().decode(errors="replace"))


def _launch_group(settings: Settings) -> Measured:
    ops = settings.ops(LAUNCH_OPS, minimum=1)
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        mesh = _xproc._enter_async(stack, runner, _enter_mesh)
        cold, warm = Launches(mesh, warm=False), Launches(mesh, warm=True)
        # The first warm launch starts the zygote (and itself starts cold); the
        # second waits until the zygote is ready.  Neither is counted.
        runner.run(warm.once())
        runner.run(warm.once())
        sides: dict[str, Callable[[], list[Any]]] = {
            COLD: partial(cold.round, runner, ops),
            WARM: partial(warm.round, runner, ops),
            IMPORT_WM: partial(_xproc._command_round, _xproc._import_code("workmesh"), ops),
            IMPORT_ENTRY: partial(_xproc._command_round, _xproc._import_code(CHILD), ops),
        }
        rounds = alternate(settings, sides)
        imports = runner.run(_host_imports())
    measured = Measured()
    for side, found in rounds.items():
        if side in (COLD, WARM):
            measured.series[side] = _latency_series([[x.total_ns for x in r] for r in found])
            measured.figures[side] = _launch_figures("warm" if side == WARM else "cold", found)
        else:
            measured.series[side] = _latency_series(found)
    forked = str(measured.figures[WARM]["forked by the zygote"])
    if forked.partition(" of ")[0] != forked.partition(" of ")[2]:
        print(f"warning: of the warm launches, {forked} were forked by the zygote", file=sys.stderr)
    _xproc._print_limit("worker-launch", _launch_limit(measured, imports))
    return measured


async def _enter_mesh(stack: contextlib.AsyncExitStack) -> wm.Mesh:
    return await stack.enter_async_context(wm.Mesh("bench-launch"))


def _launch_limit(measured: Measured, imports: str) -> str:
    def ms(side: str) -> float:
        series = measured.series[side]
        return series.median / 1e3 if not isinstance(series, str) else float("nan")

    cold, warm = measured.figures[COLD], measured.figures[WARM]
    return (
        f"cold: {ms(COLD):.0f} ms against {ms(IMPORT_WM):.0f} ms for python + import workmesh "
        f"run to completion; {imports}; warm: {ms(WARM):.1f} ms, no interpreter start and no "
        "imports: what is left is the fork, the link and the launch request. Medians of the "
        f"parts over all launches: cold launch_host {cold['cold launch_host ms']:.1f} ms, "
        f"launch_worker {cold['cold launch_worker ms']:.1f} ms; warm launch_host "
        f"{warm['warm launch_host ms']:.1f} ms, launch_worker {warm['warm launch_worker ms']:.1f} "
        "ms (the headline figures are medians of each round's median: under a varying load "
        "the two can differ)"
    )


_LAUNCH_TEXT = (
    "launch -> Started, µs: await mesh.launch_host(name, imports=[worker module]) then "
    "await host.launch_worker(...) until it returns, a new child host each time (a running "
    "Mesh); peers: the interpreter importing workmesh (or the worker module) run to "
    "completion, after the PR_SET_PDEATHSIG a workmesh child also asks for"
)

register_group(
    "worker-launch",
    LATENCY,
    _launch_group,
    _LAUNCH_TEXT,
    [
        Row("-cold", COLD, IMPORT_WM, Target("<=", 1.2), about=_LAUNCH_TEXT + "; a cold host"),
        Row("-cold/import-entry", COLD, IMPORT_ENTRY),
        Row(
            "-warm",
            WARM,
            IMPORT_WM,
            bound=Bound("<=", 10_000.0, "≤ 10 ms"),
            about="as worker-launch-cold, same run: a warm host, forked from the Mesh's zygote "
            "(launch_host(..., warm=True)); the goal is on its own median",
        ),
    ],
)
