"""In-process cases: workmesh channels against ``asyncio.Queue`` and ``queue.Queue``.

Both sides run the very same driver code; only the four bound methods of a
:class:`_Duplex` differ, so the ratio isolates the transport.  The message is the
small Struct from performance.md, passed by reference (nothing is encoded within
one process).  ``None`` ends an echo or sink on both sides alike.
"""

from __future__ import annotations

import asyncio
import importlib
import queue
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Any, cast

import msgspec

import workmesh as wm

from ._core import (
    LATENCY,
    THROUGHPUT,
    Case,
    CaseSkipped,
    Outcome,
    Settings,
    Target,
    measure_latency,
    measure_throughput,
    register,
)

RTT_OPS = 20_000  # round trips per round at full scale
STREAM_OPS = 200_000  # one-way messages per round at full scale
JOIN_TIMEOUT_S = 30.0

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class Small(msgspec.Struct):
    """The small message of performance.md (about 51 bytes as msgpack)."""

    id: int
    name: str
    values: list[float]


SMALL = Small(12345, "abc", [1.0, 2.0, 3.0])


@dataclass(frozen=True)
class _Duplex:
    """A request and a reply path; ``recv`` is awaitable or blocking depending on use."""

    req_send: Callable[[Any], None]
    req_recv: Callable[[], Any]
    rep_send: Callable[[Any], None]
    rep_recv: Callable[[], Any]
    close: Callable[[], None]


def _wm_duplex(blocking: bool) -> _Duplex:
    req_tx, req_rx = wm.channel(Small | None)
    rep_tx, rep_rx = wm.channel(Small | None)

    def close() -> None:
        for end in (req_tx, req_rx, rep_tx, rep_rx):
            end.close()

    if blocking:
        return _Duplex(req_tx.send, req_rx.recv_blocking, rep_tx.send, rep_rx.recv_blocking, close)
    return _Duplex(req_tx.send, req_rx.recv, rep_tx.send, rep_rx.recv, close)


def _asyncio_duplex() -> _Duplex:
    req: asyncio.Queue[Small | None] = asyncio.Queue()
    rep: asyncio.Queue[Small | None] = asyncio.Queue()
    return _Duplex(req.put_nowait, req.get, rep.put_nowait, rep.get, lambda: None)


def _thread_queue_duplex() -> _Duplex:
    req: queue.Queue[Small | None] = queue.Queue()
    rep: queue.Queue[Small | None] = queue.Queue()
    return _Duplex(req.put, req.get, rep.put, rep.get, lambda: None)


# ------------------------------------------------------------------- one event loop


async def _echo_async(recv: Callable[[], Awaitable[Any]], send: Callable[[Any], None]) -> None:
    while (msg := await recv()) is not None:
        send(msg)


async def _count_async(recv: Callable[[], Awaitable[Any]]) -> int:
    count = 0
    while await recv() is not None:
        count += 1
    return count


async def _loop_rtt_round(make: Callable[[], _Duplex], ops: int, warmup: int) -> list[int]:
    link = make()
    echo = asyncio.create_task(_echo_async(link.req_recv, link.rep_send))
    send, recv, msg, clock = link.req_send, link.rep_recv, SMALL, perf_counter_ns
    samples = [0] * ops
    try:
        for _ in range(warmup):
            send(msg)
            await recv()
        for i in range(ops):
            start = clock()
            send(msg)
            await recv()
            samples[i] = clock() - start
    finally:
        send(None)
        await echo
        link.close()
    return samples


async def _loop_stream_round(make: Callable[[], _Duplex], ops: int) -> tuple[int, int]:
    link = make()
    sink = asyncio.create_task(_count_async(link.req_recv))
    send, msg, clock = link.req_send, SMALL, perf_counter_ns
    try:
        start = clock()
        for _ in range(ops):
            send(msg)
        send(None)
        # The sink's count is the acknowledgement: timing stops once all were received.
        got = await sink
        elapsed = clock() - start
    finally:
        link.close()
    if got != ops:
        raise RuntimeError(f"stream sink counted {got} messages, {ops} were sent")
    return ops, elapsed


def uvloop_factory() -> LoopFactory | None:
    """uvloop's loop constructor, or None when uvloop is not installed."""
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    return cast(LoopFactory, module.new_event_loop)


def _runner(loop_name: str) -> asyncio.Runner:
    if loop_name == "asyncio":
        return asyncio.Runner()
    factory = uvloop_factory()
    if factory is None:
        raise CaseSkipped("uvloop is not installed (pip install 'workmesh[uvloop]')")
    return asyncio.Runner(loop_factory=factory)


def _loop_rtt(loop_name: str, settings: Settings) -> Outcome:
    ops, warmup = settings.ops(RTT_OPS), settings.warmup_ops(RTT_OPS)
    with _runner(loop_name) as runner:

        def ours() -> list[int]:
            return runner.run(_loop_rtt_round(partial(_wm_duplex, False), ops, warmup))

        def peer() -> list[int]:
            return runner.run(_loop_rtt_round(_asyncio_duplex, ops, warmup))

        return measure_latency(settings, ours, peer)


def _loop_stream(loop_name: str, settings: Settings) -> Outcome:
    ops = settings.ops(STREAM_OPS)
    with _runner(loop_name) as runner:

        def ours() -> tuple[int, int]:
            return runner.run(_loop_stream_round(partial(_wm_duplex, False), ops))

        def peer() -> tuple[int, int]:
            return runner.run(_loop_stream_round(_asyncio_duplex, ops))

        return measure_throughput(settings, ours, peer)


# ------------------------------------------------------------------- two threads


def _echo_blocking(recv: Callable[[], Any], send: Callable[[Any], None]) -> None:
    while (msg := recv()) is not None:
        send(msg)


def join_or_raise(thread: threading.Thread) -> None:
    """Join a thread the bench started; a thread still running afterwards is a bug."""
    thread.join(JOIN_TIMEOUT_S)
    if thread.is_alive():
        raise RuntimeError(f"benchmark thread {thread.name} did not stop")


def _thread_rtt_round(make: Callable[[], _Duplex], ops: int, warmup: int) -> list[int]:
    link = make()
    # daemon only as a last resort: join_or_raise below is what actually stops it.
    echo = threading.Thread(
        target=_echo_blocking, args=(link.req_recv, link.rep_send), name="bench-echo", daemon=True
    )
    echo.start()
    send, recv, msg, clock = link.req_send, link.rep_recv, SMALL, perf_counter_ns
    samples = [0] * ops
    try:
        for _ in range(warmup):
            send(msg)
            recv()
        for i in range(ops):
            start = clock()
            send(msg)
            recv()
            samples[i] = clock() - start
    finally:
        send(None)
        join_or_raise(echo)
        link.close()
    return samples


def _thread_rtt(settings: Settings) -> Outcome:
    ops, warmup = settings.ops(RTT_OPS), settings.warmup_ops(RTT_OPS)
    return measure_latency(
        settings,
        partial(_thread_rtt_round, partial(_wm_duplex, True), ops, warmup),
        partial(_thread_rtt_round, _thread_queue_duplex, ops, warmup),
    )


# ------------------------------------------------------------------- the registry

_RTT_TEXT = (
    "ping-pong between two tasks on one {loop} loop through two channels; "
    "per round trip, small Struct by reference"
)
_STREAM_TEXT = (
    "one-way stream of small Structs task -> task on one {loop} loop, "
    "timed from the first send to the sink's count"
)


def _rtt_case(loop_name: str, suffix: str) -> Case:
    return Case(
        name=f"inproc-loop-rtt{suffix}",
        description=_RTT_TEXT.format(loop=loop_name),
        kind=LATENCY,
        run=partial(_loop_rtt, loop_name),
        peer=f"asyncio.Queue{suffix}",
        target=Target("<=", 1.5),
    )


def _stream_case(loop_name: str, suffix: str) -> Case:
    return Case(
        name=f"inproc-loop-throughput{suffix}",
        description=_STREAM_TEXT.format(loop=loop_name),
        kind=THROUGHPUT,
        run=partial(_loop_stream, loop_name),
        peer=f"asyncio.Queue{suffix}",
    )


register(_rtt_case("asyncio", ""))
register(
    Case(
        name="inproc-thread-rtt",
        description="ping-pong between two threads, recv_blocking on both sides; "
        "per round trip, small Struct by reference",
        kind=LATENCY,
        run=_thread_rtt,
        peer="queue.Queue",
        target=Target("<=", 1.2),
    )
)
register(_stream_case("asyncio", ""))
register(_rtt_case("uvloop", "[uvloop]"))
register(_stream_case("uvloop", "[uvloop]"))
