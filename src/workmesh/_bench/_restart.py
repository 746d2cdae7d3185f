"""Hot restart into a fresh process: the downtime a client sees, loss, and state hand-off.

* ``worker-restart-gap``: a client calls a worker (``await tx.call(Ping, i)``) in a
  loop; meanwhile another sender of the same channel queues N one-way ``Bump``
  messages (10k at full scale) and, right after, the worker is restarted onto a
  fresh host process (``handle.restart(new_host)``, the host launched beforehand,
  cold, as for an upgrade).  The worker's state is 1 KiB plus its counters and its
  request channel.  The figure is the longest gap between two successive replies
  the client saw, against a cold launch (launch_host + launch_worker -> Started)
  measured in the same rounds.  Two more sides of the same rounds tell the parts
  apart: the same burst without a restart (``/no-restart``: the queue's own
  drain), and a restart with nothing queued (``[idle]``: the restart's own
  downtime).  After each round the successor reports how many bumps it counted and
  whether they came in order: a lost, doubled or reordered message fails the case.
* ``worker-handoff-{memfd,bytes}``: a worker holding a large blob (256 MiB at full
  scale) is restarted onto a fresh host; the rate is the blob's size over the time
  from ``restart()`` to ``Started`` (the successor has the blob in its own memory by
  then).  Via memfd the old worker copies the blob into a memfd and hands over the
  descriptor (a ``wm.OwnedFd``); as bytes, the blob travels inside the state
  message, which needs a frame limit above the default 64 MiB
  (``wm.Mesh(name, limits=wm.Limits(max_frame=...))``): without that this variant
  is skipped with a note.  The peer is the two copies alone: memfd write + read in
  this process.  Neither worker frees a large buffer on the way to ``Started``
  (freeing 256 MiB and the memfd's pages took about 50 ms of the 290, work that
  the peer's timing does not include either).  The successor's crc32 of the blob
  is checked after each round.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import statistics
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Any, Final

import workmesh as wm
from workmesh._process import ChildProcess

from . import _workers, _xproc
from . import _workers_child as worker
from ._core import BANDWIDTH, LATENCY, TIMES, Bound, Series, Settings, Target, percentile
from ._groups import Measured, Row, alternate, register_group
from ._report import fmt_bytes

QUEUED: Final = 10_000  # one-way messages queued at the restart, at full scale
STATE_BYTES: Final = 1024
CALLS_AROUND: Final = 50  # replies the client sees before the burst, and after the restart
HANDOFF_BYTES: Final = 256 << 20
ROUND_TIMEOUT_S: Final = 120.0

RESTART: Final = "restart under load"
NO_RESTART: Final = "same burst, no restart"
IDLE_RESTART: Final = "restart, nothing queued"
COLD: Final = "cold launch"
MEMFD: Final = "hand-off via memfd"
BYTES: Final = "hand-off as bytes"
COPIES: Final = "memfd write + read, one process"


# ------------------------------------------------------------------- downtime


@dataclass(frozen=True)
class _GapRound:
    longest_gap_ns: int
    median_gap_ns: float
    restart_ns: int  # restart() -> Started (0 without a restart)
    host_ns: int  # launching the new host (0 without a restart)


class _Downtime:
    """One Tally worker, a client calling it, and a bulk sender; restarted round after round."""

    def __init__(self, mesh: wm.Mesh) -> None:
        self.mesh = mesh
        self.expected_crc = zlib.crc32(worker.blob(STATE_BYTES))

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        self.host, self.process = await _workers.launch_host(self.mesh, "bench-restart")
        self.tx, requests = wm.channel(worker.TallyCall)
        stack.callback(self.tx.close)
        self.bulk = self.tx.clone()
        stack.callback(self.bulk.close)
        params = worker.TallyParams(requests, STATE_BYTES)
        self.handle = await self.host.launch_worker(worker.Tally, params)
        stack.push_async_callback(self._stop)

    async def _stop(self) -> None:
        await _workers.stop_worker(self.handle)
        await _workers.retire_host(self.host, self.process)

    async def round(self, restart: bool, queued: int) -> _GapRound:
        host_ns, new = 0, None
        if restart:  # launched beforehand, as a program would for an upgrade
            start = perf_counter_ns()
            new = await _workers.launch_host(self.mesh, "bench-restart")
            host_ns = perf_counter_ns() - start
        stamps: list[int] = []
        enough = asyncio.Event()  # set once the client has ``wanted`` replies
        wanted = CALLS_AROUND

        async def client() -> None:
            call, clock, seq = self.tx.call, perf_counter_ns, 0
            while True:
                await call(worker.Ping, seq)
                stamps.append(clock())
                seq += 1
                if len(stamps) >= wanted:
                    enough.set()

        async with asyncio.timeout(ROUND_TIMEOUT_S), asyncio.TaskGroup() as tasks:
            calling = tasks.create_task(client())
            await enough.wait()
            wanted = sys.maxsize  # until told again: the client must not set it meanwhile
            enough.clear()
            for seq in range(queued):
                self.bulk.send(worker.Bump(seq))
            restart_ns = 0
            if new is not None:
                start = perf_counter_ns()
                self.handle.restart(new[0])
                event = await self.handle.next_event()
                restart_ns = perf_counter_ns() - start
                if not isinstance(event, wm.Started):
                    raise RuntimeError(f"the restart ended in {event!r}, not Started")
            wanted = len(stamps) + CALLS_AROUND
            await enough.wait()
            calling.cancel()
        await self._check(new, queued)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        return _GapRound(max(gaps), statistics.median(gaps), restart_ns, host_ns)

    async def _check(self, new: tuple[wm.WorkerHost, ChildProcess] | None, queued: int) -> None:
        """Every bump arrived once and in order, the state is intact; retire the old host."""
        report = await self.tx.call(worker.Report, None)
        if new is not None:
            old = self.host, self.process
            self.host, self.process = new
            await _workers.retire_host(*old)
        problems = delivery_problems(report, queued, self.expected_crc, self.process.pid)
        if problems:
            raise RuntimeError("hot restart under load: " + "; ".join(problems))


def delivery_problems(
    report: worker.TallyReport, queued: int, expected_crc: int, pid: int
) -> list[str]:
    """What went wrong in a round, from the successor's report (nothing: an empty list)."""
    problems = []
    if report.count != queued:
        lost, twice = queued - report.count, report.count - queued
        what = f"{lost} lost" if lost > 0 else f"{twice} delivered twice"
        problems.append(f"{report.count} of {queued} queued messages arrived ({what})")
    if report.out_of_order:
        problems.append(f"{report.out_of_order} arrived out of order")
    if report.blob_crc32 != expected_crc:
        problems.append("the 1 KiB state arrived damaged")
    if report.pid != pid:
        problems.append(f"answered by pid {report.pid}, not the host's {pid}")
    return problems


def _gap_series(rounds: list[_GapRound]) -> Series:
    """The longest gap of each round: median and p99 (nearest rank) over rounds, in µs."""
    longest = sorted(r.longest_gap_ns for r in rounds)
    return Series(
        median=statistics.median(longest) / 1e3,
        p99=percentile(longest, 0.99) / 1e3,
        rounds=tuple(r.longest_gap_ns / 1e3 for r in rounds),
        ops_per_round=1,
    )


def _restart_group(settings: Settings) -> Measured:
    queued = settings.ops(QUEUED)
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        mesh = _xproc._enter_async(stack, runner, _enter_mesh)
        bench = _Downtime(mesh)
        _xproc._enter_async(stack, runner, bench.start)
        cold = _workers.Launches(mesh, warm=False)
        sides: dict[str, Callable[[], Any]] = {
            RESTART: lambda: runner.run(bench.round(restart=True, queued=queued)),
            NO_RESTART: lambda: runner.run(bench.round(restart=False, queued=queued)),
            IDLE_RESTART: lambda: runner.run(bench.round(restart=True, queued=0)),
            COLD: lambda: [runner.run(cold.once()).total_ns],
        }
        rounds = alternate(settings, sides)
    restarts, bursts, idle = rounds[RESTART], rounds[NO_RESTART], rounds[IDLE_RESTART]
    cold_series = _launch_series(rounds[COLD])
    measured = Measured(
        {
            RESTART: _gap_series(restarts),
            NO_RESTART: _gap_series(bursts),
            IDLE_RESTART: _gap_series(idle),
            COLD: cold_series,
        }
    )
    restart_ms = statistics.median(r.restart_ns for r in restarts) / 1e6
    total_ms = statistics.median(r.host_ns + r.restart_ns for r in restarts) / 1e6
    cold_ms = cold_series.median / 1e3
    measured.figures[RESTART] = {
        "median normal gap µs": statistics.median(r.median_gap_ns for r in restarts) / 1e3,
        "restart() -> Started ms": restart_ms,
        "new host + restart -> Started ms": total_ms,
        f"that, {TIMES} a cold launch": total_ms / cold_ms,
        "queued per restart": queued,
        "state bytes": STATE_BYTES,
        "lost": 0,  # a round that lost, doubled or reordered any would have failed
        "delivered twice": 0,
        "out of order": 0,
    }
    measured.figures[IDLE_RESTART] = {
        "median normal gap µs": statistics.median(r.median_gap_ns for r in idle) / 1e3,
        "restart() -> Started ms": statistics.median(r.restart_ns for r in idle) / 1e6,
    }
    longest, burst, bare = (_gap_series(found).median / 1e3 for found in (restarts, bursts, idle))
    _xproc._print_limit(
        "worker-restart-gap",
        f"the longest gap, {longest:.1f} ms, spans the {queued} queued bumps (the same burst "
        f"without a restart: {burst:.1f} ms) and the restart (with nothing queued: {bare:.1f} "
        f"ms); restart() -> Started takes {restart_ms:.1f} ms: ask the old worker for its state, "
        f"move its channel with the queued messages to the new process, build the successor. "
        f"Launching the new host beforehand is a cold launch: new host + restart is "
        f"{total_ms:.0f} ms against {cold_ms:.0f} ms for a cold launch",
    )
    return measured


def _launch_series(rounds: list[list[int]]) -> Series:
    launches = sorted(sample for samples in rounds for sample in samples)
    return Series(
        median=statistics.median(launches) / 1e3,
        p99=percentile(launches, 0.99) / 1e3,
        rounds=tuple(samples[0] / 1e3 for samples in rounds),
        ops_per_round=1,
    )


async def _enter_mesh(stack: contextlib.AsyncExitStack, **options: Any) -> wm.Mesh:
    return await stack.enter_async_context(wm.Mesh("bench-restart", **options))


register_group(
    "worker-restart-gap",
    LATENCY,
    _restart_group,
    "hot restart onto a fresh host process while a client calls in a loop: the longest gap "
    f"between two successive replies (µs; p99 = over rounds), with {QUEUED // 1000}k one-way "
    "messages queued by another sender right before restart(); 1 KiB state; none may be lost, "
    "doubled or reordered; peer: a cold launch (launch_host + launch_worker -> Started)",
    [
        Row("", RESTART, COLD, Target("<=", 1.3)),
        Row("/no-restart", RESTART, NO_RESTART),
        Row(
            "[idle]",
            IDLE_RESTART,
            COLD,
            about="as worker-restart-gap, same run: the longest gap when nothing is queued at "
            "the restart (the restart's own downtime), against a cold launch",
        ),
    ],
)


# ------------------------------------------------------------------- state hand-off


def _limits_for(size: int) -> tuple[dict[str, Any], str | None]:
    """Mesh options that let ``size`` bytes travel in one message, or why they cannot."""
    limits_type = getattr(wm, "Limits", None)
    if limits_type is None:
        return {}, "workmesh.Limits does not exist yet: state above 64 MiB cannot travel as bytes"
    if "limits" not in inspect.signature(wm.Mesh).parameters:
        return {}, "wm.Mesh(..., limits=) is not there yet: the 64 MiB frame limit holds"
    wanted = {"max_frame": size + (1 << 20), "max_pending_bytes": 2 * size + (1 << 20)}
    fields = getattr(limits_type, "__struct_fields__", ())
    defaults = limits_type()
    options = {k: max(v, getattr(defaults, k)) for k, v in wanted.items() if k in fields}
    return {"limits": limits_type(**options)}, None


class _Handoff:
    """One Hoard worker restarted onto a fresh host each round; rates in GB/s."""

    def __init__(self, mesh: wm.Mesh, size: int, via: str) -> None:
        self.mesh, self.size, self.via = mesh, size, via
        self.expected = zlib.crc32(worker.blob(size))
        self.seconds: list[float] = []

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        self.host, self.process = await _workers.launch_host(self.mesh, f"bench-{self.via}")
        self.tx, requests = wm.channel(worker.Digest)
        stack.callback(self.tx.close)
        params = worker.HoardParams(requests, self.size, self.via)
        self.handle = await self.host.launch_worker(worker.Hoard, params)
        stack.push_async_callback(self._stop)
        await self._check()

    async def _stop(self) -> None:
        await _workers.stop_worker(self.handle)
        await _workers.retire_host(self.host, self.process)

    async def _check(self) -> None:
        report = await self.tx.call(worker.Digest, None)
        if (report.length, report.crc32) != (self.size, self.expected):
            raise RuntimeError(
                f"the {self.via} hand-off damaged the state: {report.length} bytes, crc32 "
                f"{report.crc32:#x}; expected {self.size} bytes, crc32 {self.expected:#x}"
            )
        if report.pid != self.process.pid:
            raise RuntimeError(f"answered by pid {report.pid}, not the host {self.process.pid}")

    async def round(self) -> float:
        host, process = await _workers.launch_host(self.mesh, f"bench-{self.via}")
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            start = perf_counter_ns()
            self.handle.restart(host)
            event = await self.handle.next_event()
            elapsed = perf_counter_ns() - start
        if not isinstance(event, wm.Started):
            raise RuntimeError(f"the {self.via} hand-off ended in {event!r}, not Started")
        old = self.host, self.process
        self.host, self.process = host, process
        await _workers.retire_host(*old)
        await self._check()
        self.seconds.append(elapsed / 1e9)
        return self.size / elapsed  # bytes per ns = GB/s


def _copies_round(data: bytearray) -> float:
    """The hand-off's two copies alone: into a memfd and out again, in this process."""
    fd = os.memfd_create("workmesh-bench-copy", os.MFD_CLOEXEC)
    try:
        start = perf_counter_ns()
        worker._write_all(fd, memoryview(data))
        copy = worker._read_all(fd, len(data))
        elapsed = perf_counter_ns() - start
    finally:
        os.close(fd)
    if len(copy) != len(data):
        raise RuntimeError(f"the memfd gave back {len(copy)} of {len(data)} bytes")
    return len(data) / elapsed


def _run_round(runner: asyncio.Runner, way: _Handoff) -> float:
    return runner.run(way.round())


def _rate_series(rates: list[float]) -> Series:
    return Series(median=statistics.median(rates), p99=None, rounds=tuple(rates), ops_per_round=1)


def _handoff_group(settings: Settings) -> Measured:
    size = settings.ops(HANDOFF_BYTES, minimum=1 << 20)
    options, why_not = _limits_for(size)
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        # One Mesh for both ways; its limits (when it can have them) let the bytes through.
        mesh = _xproc._enter_async(stack, runner, partial(_enter_mesh, **options))
        ways = {MEMFD: _Handoff(mesh, size, "memfd")}
        if why_not is None:
            ways[BYTES] = _Handoff(mesh, size, "bytes")
        sides: dict[str, Callable[[], float]] = {}
        for side, way in ways.items():
            _xproc._enter_async(stack, runner, way.start)
            sides[side] = partial(_run_round, runner, way)
        sides[COPIES] = partial(_copies_round, worker.blob(size))
        rounds = alternate(settings, sides)
    measured = Measured({side: _rate_series(rates) for side, rates in rounds.items()})
    if why_not is not None:
        measured.series[BYTES] = why_not
    for side, way in ways.items():
        measured.figures[side] = {
            "state": fmt_bytes(size),
            "restart() -> Started ms": statistics.median(way.seconds) * 1e3,
        }
    _xproc._print_limit("worker-handoff", _handoff_limit(measured, size))
    return measured


def _handoff_limit(measured: Measured, size: int) -> str:
    def rate(side: str) -> str:
        series = measured.series.get(side)
        return f"{series.median:.2f} GB/s" if isinstance(series, Series) else "not measured"

    return (
        f"{fmt_bytes(size)} via memfd: {rate(MEMFD)}, against {rate(COPIES)} for the two copies "
        "alone (into the memfd, out of it); the rest is the restart itself (asking for the "
        "state, moving the channel, building the successor, Started); as bytes: "
        f"{rate(BYTES)} (encoded into one frame, sent, received and decoded)"
    )


_HANDOFF_TEXT = (
    "state hand-off on a hot restart onto a fresh host: blob size / (restart() -> Started), "
    "GB/s; 256 MiB at full scale; {how}; peer: the same two copies (memfd write + read) in "
    "one process"
)

register_group(
    "worker-handoff",
    BANDWIDTH,
    _handoff_group,
    _HANDOFF_TEXT,
    [
        Row(
            "-memfd",
            MEMFD,
            COPIES,
            bound=Bound(">=", 1.0, "≥ 1 GB/s"),
            about=_HANDOFF_TEXT.format(
                how="the old worker copies the blob into a memfd and hands over a wm.OwnedFd; "
                "the successor copies it into its own memory before Started"
            ),
        ),
        Row(
            "-bytes",
            BYTES,
            COPIES,
            bound=Bound(">=", 1.0, "≥ 1 GB/s"),
            about=_HANDOFF_TEXT.format(
                how="the blob travels as bytes inside the state message (a Mesh whose "
                "wm.Limits allow a frame that large)"
            ),
        ),
    ],
)
