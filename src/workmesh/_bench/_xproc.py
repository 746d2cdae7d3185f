"""Cross-process cases: workmesh to a child process against the floor and multiprocessing.

Each *group* runs workmesh ("ours") and its peers on the same work, each against its
own child process, in the harness's alternating rounds; the children are started
once per group and stopped (joined, or killed by pid) in a ``finally``.

* ``xproc-rpc-rtt-{small,64k}``: ``await tx.call(Echo, msg)`` to an asyncio child that
  answers every Rpc with its input (decoded as the declared type, re-encoded).
* ``xproc-oneway-{small,64k}``: ``tx.send(msg)`` N times to a child that decodes and
  counts; a ``None`` asks for the count, and the round ends when it is back (msg/s).
* ``xproc-spawn``: ``Mesh.spawn`` -> first message back from the child.

The peers: the *floor* (a blocking ``socketpair`` to a child from ``sys.executable``,
4-byte length prefix, msgspec, one ``sendall`` per message) and
``multiprocessing.Pipe`` (pickling ``send``/``recv``, 'spawn' child), and for round
trips and streams the transports of ``_peers`` (multiprocessing.Queue, pyzmq, Pyro5,
Ray: each skipped, with a note, where it cannot run); for start-up,
``python -c "import workmesh"`` run to completion and multiprocessing 'spawn' and
'fork' starts.  A group's first case reports the ratio to the floor (or to the
interpreter); its ``name/<peer>`` cases report the other ratios of the same run.
After measuring, a group prints one line on where the time goes: CPU per operation
of every thread of parent and child, and the parent loop's hottest functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from statistics import median
from time import perf_counter_ns
from typing import Any, Final, TypeVar

import msgspec

import workmesh as wm
from workmesh._process import ChildProcess

from . import _peers
from . import _xproc_child as child
from ._core import (
    LATENCY,
    THROUGHPUT,
    Case,
    CaseSkipped,
    Kind,
    Outcome,
    Series,
    Settings,
    Target,
    _alternate,
    _latency_series,
    _throughput_series,
    register,
)
from ._groups import once_per_run

T = TypeVar("T")

RTT_OPS: Final = 20_000  # round trips per round at full scale
STREAM_OPS: Final = {"small": 200_000, "64k": 20_000}  # one-way messages per round
SPAWN_OPS: Final = 4  # starts per side per round
ROUND_TIMEOUT_S: Final = 120.0  # a stalled round fails its case instead of the whole run
START_TIMEOUT_S: Final = 30.0
JOIN_TIMEOUT_S: Final = 10.0
CHILD: Final = child.__name__

OURS: Final = "workmesh"
FLOOR: Final = "floor socketpair+msgspec"
PIPE: Final = "multiprocessing.Pipe"
ASYNCIO: Final = "asyncio BufferedProtocol"
IMPORT_WM: Final = 'python -c "import workmesh"'
IMPORT_ENTRY: Final = f'python -c "import {CHILD}"'
MP_SPAWN: Final = "mp spawn -> 1st msg"
MP_FORK: Final = "mp fork -> 1st msg"

_COUNT: Final = msgspec.msgpack.Decoder(int)
_ECHO: Final = {"small": child.EchoSmall, "64k": child.Echo64k}
_STREAM: Final = {"small": child.Small | None, "64k": bytes | None}
_SINK: Final = {"small": child.SinkSmall, "64k": child.Sink64k}

GroupResult = dict[str, Series | str]  # a side's series, or why it did not run


_MESSAGE: Final = {"small": child.SMALL, "64k": child.BIG}
# What the pickle peer sends: a plain dict, as a pickle user would, or the same bytes.
_PICKLED: Final = {"small": child.SMALL_DICT, "64k": child.BIG}


def _check(side: str, got: Any, want: Any) -> None:
    """A side must deliver what was sent (checked outside the timed part where it can)."""
    if got != want:
        raise RuntimeError(f"{side} answered {got!r:.60}, expected {want!r:.60}")


# ------------------------------------------------------------------- children


@contextlib.contextmanager
def _floor_child(mode: str, size: str) -> Iterator[child.Framed]:
    """A ``sys.executable`` child serving the floor on one end of a socketpair."""
    ours, theirs = socket.socketpair()
    with ours:
        argv = [sys.executable, "-m", CHILD, mode, size, str(theirs.fileno()), str(os.getpid())]
        try:
            proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        try:
            yield child.Framed(ours)
        finally:
            ours.close()  # end of stream: the child exits
            _reap(proc)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a child we started; SIGKILL it (by pid) if it does not exit in time."""
    try:
        proc.wait(JOIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _pipe_child(target: Callable[[Connection, int], None]) -> Iterator[Connection]:
    """A multiprocessing 'spawn' child running ``target`` on one end of a Pipe."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    with ours:
        proc = ctx.Process(target=target, args=(theirs, os.getpid()), daemon=True)
        try:
            proc.start()
        finally:
            theirs.close()
        try:
            yield ours
        finally:
            ours.close()  # EOF: the child exits
            _stop_process(proc)


def _stop_process(proc: BaseProcess) -> None:
    """Join a multiprocessing child; SIGKILL it (by pid) if it does not exit in time."""
    if proc.pid is None:  # never started
        return
    proc.join(JOIN_TIMEOUT_S)
    if proc.exitcode is None:
        proc.kill()
        proc.join(JOIN_TIMEOUT_S)
    proc.close()


@contextlib.contextmanager
def _mp_cleanup() -> Iterator[None]:
    """Stop multiprocessing's resource tracker afterwards if our 'spawn' starts started it.

    A 'spawn' start launches that helper process once per parent; left running, it
    would be a child (and a descriptor) the bench leaves behind.  ``_fd`` and
    ``_stop`` are private to multiprocessing: there is no public way to stop it.
    """
    tracker: Any = resource_tracker._resource_tracker
    was_running = tracker._fd is not None
    try:
        yield
    finally:
        if not was_running and tracker._fd is not None:
            tracker._stop()


def _enter_async(
    stack: contextlib.ExitStack,
    runner: asyncio.Runner,
    setup: Callable[[contextlib.AsyncExitStack], Coroutine[Any, Any, T]],
) -> T:
    """Run an async set-up on ``runner``; its async exit stack closes with ``stack``."""
    async_stack = contextlib.AsyncExitStack()
    stack.callback(lambda: runner.run(async_stack.aclose()))
    return runner.run(setup(async_stack))


async def _spawn_echo(size: str, stack: contextlib.AsyncExitStack) -> tuple[ChildProcess, Any]:
    """A Mesh child answering Rpcs; returns it and the Sender the calls go through."""
    mesh = await stack.enter_async_context(wm.Mesh("bench-xproc"))
    tx, rx = wm.channel(_ECHO[size])
    stack.callback(tx.close)  # closed before the mesh shuts down: the child's loop ends
    spawned = await mesh.spawn(f"rpc-echo-{size}", f"{CHILD}:rpc_echo_{size}", rx)
    return spawned, tx


async def _spawn_sink(size: str, stack: contextlib.AsyncExitStack) -> tuple[ChildProcess, Any, Any]:
    """A Mesh child counting what arrives; returns it, the stream's Sender, the acks."""
    mesh = await stack.enter_async_context(wm.Mesh("bench-xproc"))
    tx, inbox = wm.channel(_STREAM[size])
    acks_tx, acks = wm.channel(int)
    stack.callback(acks.close)
    stack.callback(tx.close)
    params = _SINK[size](inbox, acks_tx)
    spawned = await mesh.spawn(f"sink-{size}", f"{CHILD}:sink_{size}", params)
    return spawned, tx, acks


# ------------------------------------------------------------------- round trips


async def _timed_calls(
    call: Callable[..., Awaitable[Any]], args: tuple[Any, ...], ops: int, warmup: int, what: str
) -> list[int]:
    """``warmup`` untimed ``await call(*args)``, then ``ops`` timed ones (ns each)."""
    clock = perf_counter_ns
    samples = [0] * ops
    async with _stall_guard(what):
        for _ in range(warmup):
            await call(*args)
        for i in range(ops):
            start = clock()
            await call(*args)
            samples[i] = clock() - start
    return samples


async def _wm_rtt_round(tx: Any, make: Any, msg: Any, ops: int, warmup: int) -> list[int]:
    return await _timed_calls(tx.call, (make, msg), ops, warmup, f"{ops + warmup} round trips")


@contextlib.asynccontextmanager
async def _stall_guard(what: str) -> AsyncIterator[None]:
    """Fail a workmesh round that makes no progress, saying what it was waiting for."""
    try:
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            yield
    except TimeoutError as exc:
        raise TimeoutError(
            f"{what} to the Mesh child did not finish within {ROUND_TIMEOUT_S:.0f} s "
            "(a frame left unsent or lost?)"
        ) from exc


def _floor_roundtrip(link: child.Framed, size: str) -> Callable[[], Any]:
    send, recv, decode, msg = link.send, link.recv, child.decoder_for(size).decode, _MESSAGE[size]

    def roundtrip() -> Any:
        send(msg)
        return decode(recv())

    return roundtrip


class _AsyncioEcho(asyncio.BufferedProtocol):
    """The floor's framing over asyncio's own transport, on the loop that runs ours.

    Not a peer to beat but a yardstick: a round trip with nothing on top of the
    event loop -- ``recv_into`` a reused buffer, one ``write`` per request, a future
    per reply -- against the same blocking echo child as the floor.  Ours over it
    is what workmesh adds; it over the floor is what asyncio costs.
    """

    def __init__(self, size: str) -> None:
        self._decode = child.decoder_for(size).decode
        self._encoder = msgspec.msgpack.Encoder()
        self._out = bytearray()
        self._buf = bytearray(child.READ_BUFFER)
        self._view = memoryview(self._buf)
        self._end = 0
        self._reply: asyncio.Future[Any] | None = None
        self._transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        header = child.HEADER.size
        if self._end < header:
            return
        (size,) = child.HEADER.unpack_from(self._buf)
        if self._end < header + size:
            return
        if self._end != header + size or self._reply is None:
            raise RuntimeError(f"{ASYNCIO}: {self._end} bytes arrived for one reply of {size}")
        self._end = 0
        self._reply.set_result(self._decode(self._view[header : header + size]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(exc or EOFError(f"{ASYNCIO}: the echo child closed"))
        self.lost.set_result(None)

    async def call(self, msg: Any) -> Any:
        assert self._transport is not None
        out = self._out
        self._encoder.encode_into(msg, out, child.HEADER.size)
        child.HEADER.pack_into(out, 0, len(out) - child.HEADER.size)
        self._reply = asyncio.get_running_loop().create_future()
        self._transport.write(out)
        return await self._reply

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            await self.lost


async def _asyncio_echo(
    sock: socket.socket, size: str, stack: contextlib.AsyncExitStack
) -> _AsyncioEcho:
    """Our loop's end of a floor echo child, as an asyncio transport (closed with ``stack``)."""
    loop = asyncio.get_running_loop()
    _transport, echo = await loop.create_connection(partial(_AsyncioEcho, size), sock=sock)
    stack.push_async_callback(echo.close)
    return echo


def _asyncio_yardstick(
    stack: contextlib.ExitStack, runner: asyncio.Runner, size: str
) -> _AsyncioEcho:
    """A floor echo child reached through asyncio's transport on ``runner``'s loop."""
    bare = stack.enter_context(_floor_child("echo", size)).sock
    return _enter_async(stack, runner, partial(_asyncio_echo, bare, size))


async def _asyncio_rtt_round(echo: _AsyncioEcho, msg: Any, ops: int, warmup: int) -> list[int]:
    what = f"{ops + warmup} round trips over {ASYNCIO}"
    return await _timed_calls(echo.call, (msg,), ops, warmup, what)


def _pipe_roundtrip(conn: Connection, size: str) -> Callable[[], Any]:
    send, recv, obj = conn.send, conn.recv, _PICKLED[size]

    def roundtrip() -> Any:
        send(obj)
        return recv()

    return roundtrip


def _rtt_group(size: str, settings: Settings) -> GroupResult:
    ops, warmup = settings.ops(RTT_OPS), settings.warmup_ops(RTT_OPS)
    msg = _MESSAGE[size]
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        stack.enter_context(_mp_cleanup())
        spawned, tx = _enter_async(stack, runner, partial(_spawn_echo, size))
        floor = _floor_roundtrip(stack.enter_context(_floor_child("echo", size)), size)
        pipe = _pipe_roundtrip(stack.enter_context(_pipe_child(child.mp_echo)), size)
        echo = _asyncio_yardstick(stack, runner, size)
        _check(OURS, runner.run(tx.call(_ECHO[size], msg)), msg)
        _check(FLOOR, floor(), msg)
        _check(PIPE, pipe(), _PICKLED[size])
        _check(ASYNCIO, runner.run(echo.call(msg)), msg)

        def ours(ops: int, warmup: int) -> list[int]:
            return runner.run(_wm_rtt_round(tx, _ECHO[size], msg, ops, warmup))

        def on_asyncio(ops: int, warmup: int) -> list[int]:
            return runner.run(_asyncio_rtt_round(echo, msg, ops, warmup))

        others, notes = _peers.split(_peers.rtt_sides(stack, size, ops, warmup))
        result = _measure(
            settings,
            LATENCY,
            {
                OURS: partial(ours, ops, warmup),
                FLOOR: partial(_peers.blocking_rtt_round, floor, ops, warmup),
                PIPE: partial(_peers.blocking_rtt_round, pipe, ops, warmup),
                ASYNCIO: partial(on_asyncio, ops, warmup),
                **others,
            },
        )
        result.update(notes)
        _limits(f"xproc-rpc-rtt-{size}", LATENCY, ops, partial(ours, warmup=0), spawned.pid)
    return result


# ------------------------------------------------------------------- one-way streams


async def _wm_stream_round(tx: Any, acks: Any, msg: Any, ops: int) -> tuple[int, int]:
    send, clock = tx.send, perf_counter_ns
    async with _stall_guard(f"{ops} one-way messages and the request for their count"):
        start = clock()
        for _ in range(ops):
            send(msg)
        send(None)
        got = await acks.recv()
        elapsed = clock() - start
    _check(OURS, got, ops)
    return ops, elapsed


def _floor_stream_round(link: child.Framed, msg: Any, ops: int) -> tuple[int, int]:
    send, clock = link.send, perf_counter_ns
    start = clock()
    for _ in range(ops):
        send(msg)
    link.send_end()
    got = _COUNT.decode(link.recv())
    elapsed = clock() - start
    _check(FLOOR, got, ops)
    return ops, elapsed


def _pipe_stream_round(conn: Connection, obj: Any, ops: int) -> tuple[int, int]:
    send, clock = conn.send, perf_counter_ns
    start = clock()
    for _ in range(ops):
        send(obj)
    send(None)
    got = conn.recv()
    elapsed = clock() - start
    _check(PIPE, got, ops)
    return ops, elapsed


def _stream_group(size: str, settings: Settings) -> GroupResult:
    ops = settings.ops(STREAM_OPS[size])
    msg = _MESSAGE[size]
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        stack.enter_context(_mp_cleanup())
        spawned, tx, acks = _enter_async(stack, runner, partial(_spawn_sink, size))
        link = stack.enter_context(_floor_child("sink", size))
        conn = stack.enter_context(_pipe_child(child.mp_sink))

        def ours(ops: int) -> tuple[int, int]:
            return runner.run(_wm_stream_round(tx, acks, msg, ops))

        others, notes = _peers.split(_peers.stream_sides(stack, size, ops))
        result = _measure(
            settings,
            THROUGHPUT,
            {
                OURS: partial(ours, ops),
                FLOOR: partial(_floor_stream_round, link, msg, ops),
                PIPE: partial(_pipe_stream_round, conn, _PICKLED[size], ops),
                **others,
            },
        )
        result.update(notes)
        _limits(f"xproc-oneway-{size}", THROUGHPUT, ops, ours, spawned.pid)
    return result


# ------------------------------------------------------------------- start-up


async def _wm_spawn_once(mesh: wm.Mesh, spawn_calls: list[int]) -> int:
    tx, rx = wm.channel(str)
    with rx:
        start = perf_counter_ns()
        started = await mesh.spawn("hello", f"{CHILD}:hello", tx)
        spawn_calls.append(perf_counter_ns() - start)
        async with asyncio.timeout(START_TIMEOUT_S):
            first = await rx.recv()
            elapsed = perf_counter_ns() - start
            await started.wait()
    _check(OURS, first, "hello")
    return elapsed


def _wm_spawn_round(ops: int, spawn_calls: list[int]) -> list[int]:
    """``ops`` starts of a hello child in one Mesh (entered outside the timed part)."""

    async def samples() -> list[int]:
        async with wm.Mesh("bench-xproc-spawn") as mesh:
            return [await _wm_spawn_once(mesh, spawn_calls) for _ in range(ops)]

    return asyncio.run(samples())


def _import_code(module: str) -> str:
    """``import module``, after the same PR_SET_PDEATHSIG a workmesh child asks for."""
    return (
        "import ctypes, os; ctypes.CDLL(None).prctl(1, 9, 0, 0, 0); "
        f"os.getppid() == {os.getpid()} or os._exit(1); import {module}"
    )


def _command_round(code: str, ops: int) -> list[int]:
    """Run ``python -c code`` to completion ``ops`` times; wall time of each."""
    argv = [sys.executable, "-c", code]
    samples = []
    for _ in range(ops):
        start = perf_counter_ns()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, timeout=START_TIMEOUT_S)
        samples.append(perf_counter_ns() - start)
    return samples


def _fork_refusal() -> str | None:
    """Why forking is unsafe here (other threads are running), or None."""
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        return f"not forking: this process runs other threads ({', '.join(others)})"
    return None


def _mp_start_once(ctx: SpawnContext | ForkContext) -> int:
    reader, writer = ctx.Pipe(duplex=False)
    with reader, writer:
        start = perf_counter_ns()
        proc = ctx.Process(target=child.mp_hello, args=(writer, os.getpid()), daemon=True)
        try:
            proc.start()
            writer.close()
            if not reader.poll(START_TIMEOUT_S):
                raise TimeoutError(f"no message from the {ctx.get_start_method()} child")
            first = reader.recv_bytes()
            elapsed = perf_counter_ns() - start
        finally:
            _stop_process(proc)
    _check(ctx.get_start_method(), first, b"hello")
    return elapsed


def _mp_start_round(ctx: SpawnContext | ForkContext, ops: int) -> list[int]:
    """``ops`` starts of a multiprocessing child, each timed to its first message."""
    if ctx.get_start_method() == "fork" and (refusal := _fork_refusal()) is not None:
        raise RuntimeError(refusal)
    return [_mp_start_once(ctx) for _ in range(ops)]


def _spawn_group(settings: Settings) -> GroupResult:
    ops = settings.ops(SPAWN_OPS, minimum=1)
    spawn_calls: list[int] = []
    sides: dict[str, Callable[[], list[int]]] = {
        OURS: partial(_wm_spawn_round, ops, spawn_calls),
        IMPORT_WM: partial(_command_round, _import_code("workmesh"), ops),
        IMPORT_ENTRY: partial(_command_round, _import_code(CHILD), ops),
        MP_SPAWN: partial(_mp_start_round, multiprocessing.get_context("spawn"), ops),
    }
    refusal = _fork_refusal()
    if refusal is None:
        sides[MP_FORK] = partial(_mp_start_round, multiprocessing.get_context("fork"), ops)
    with _mp_cleanup():
        result: GroupResult = dict(_measure(settings, LATENCY, sides))
    if refusal is not None:
        result[MP_FORK] = refusal
    _print_limit("xproc-spawn", _spawn_limit(result, spawn_calls))
    return result


# ------------------------------------------------------------------- measuring, memo, cases


def _measure(settings: Settings, kind: Kind, sides: dict[str, Callable[[], Any]]) -> GroupResult:
    """Every side once per round, alternating (the harness's rounds); one Series each."""
    names = list(sides)
    rounds = _alternate(settings, [sides[name] for name in names])
    result: GroupResult = {}
    for name, samples in zip(names, rounds, strict=True):
        if kind == LATENCY:
            result[name] = _latency_series(samples)
        else:
            result[name] = _throughput_series(samples)
    return result


# One measurement of a group serves every case of it in the same run (see _groups).
def _group_result(
    group: str, measure: Callable[[Settings], GroupResult], settings: Settings
) -> GroupResult:
    return once_per_run(f"xproc:{group}", measure, settings)


def _pair(
    group: str, measure: Callable[[Settings], GroupResult], peer: str, settings: Settings
) -> Outcome:
    result = _group_result(group, measure, settings)
    ours, theirs = result[OURS], result[peer]
    if isinstance(theirs, str):
        raise CaseSkipped(theirs)
    if isinstance(ours, str):
        raise CaseSkipped(ours)
    return Outcome(ours, theirs)


@dataclass(frozen=True)
class _Peer:
    side: str  # a key of the group's result
    suffix: str  # "" for the group's first case
    target: Target | None = None


def _register_group(
    name: str,
    kind: Kind,
    measure: Callable[[Settings], GroupResult],
    about: str,
    peers: tuple[_Peer, ...],
) -> None:
    for peer in peers:
        case_name = f"{name}/{peer.suffix}" if peer.suffix else name
        text = f"as {name}, same run: ratio to {peer.side}" if peer.suffix else about
        run = partial(_pair, name, measure, peer.side)
        register(Case(case_name, text, kind, run, peer=peer.side, target=peer.target))


# ------------------------------------------------------------------- where the time goes


def _print_limit(case: str, text: str) -> None:
    """One line per group on the report (stdout), below the harness's progress line."""
    print(f"\n{case} -- where the time goes: {text}", flush=True)


def _thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time (ns) used so far by each thread of ``pid`` (from schedstat)."""
    cpu: dict[int, int] = {}
    base = f"/proc/{pid}/task"
    with contextlib.suppress(OSError):
        for tid in os.listdir(base):
            with contextlib.suppress(OSError), open(f"{base}/{tid}/schedstat") as stat:
                cpu[int(tid)] = int(stat.read().split()[0])
    return cpu


def _cpu_split(run: Callable[[], object], child_pid: int) -> tuple[int, dict[str, int]]:
    """Run once; wall ns and CPU ns of parent loop / parent others / child loop / others."""
    parent = os.getpid()
    before = (_thread_cpu_ns(parent), _thread_cpu_ns(child_pid))
    start = perf_counter_ns()
    run()
    wall = perf_counter_ns() - start
    after = (_thread_cpu_ns(parent), _thread_cpu_ns(child_pid))
    parts: dict[str, int] = {}
    for side, pid, old, new in (
        ("parent", parent, before[0], after[0]),
        ("child", child_pid, before[1], after[1]),
    ):
        used = {tid: ns - old.get(tid, 0) for tid, ns in new.items()}
        parts[f"{side} loop"] = used.pop(pid, 0)
        parts[f"{side} I/O thread"] = sum(used.values())
    return wall, parts


def _where(code: types.CodeType | str) -> str:
    if isinstance(code, types.CodeType):
        return f"{os.path.basename(code.co_filename)}:{code.co_qualname}"
    found = re.fullmatch(r"<method '(\w+)' of '([\w.]+)' objects>", code)
    return f"{found[2]}.{found[1]}" if found else code.strip("<>")


def _hot_spots(run: Callable[[], object], count: int = 4) -> str:
    """The functions with the most own CPU time in this thread while ``run`` runs."""
    profiler = cProfile.Profile(time.thread_time)  # CPU time: waiting is not a cost
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
    entries = profiler.getstats()
    total = sum(entry.inlinetime for entry in entries) or 1.0
    top = sorted(entries, key=lambda entry: entry.inlinetime, reverse=True)[:count]
    return ", ".join(f"{_where(e.code)} {100 * e.inlinetime / total:.0f}%" for e in top)


def _limits(case: str, kind: Kind, ops: int, run: Callable[[int], object], child_pid: int) -> None:
    """Print where the time goes: CPU per op of each thread, the parent loop's hot spots."""
    wall, parts = _cpu_split(partial(run, ops), child_pid)
    hot = _hot_spots(partial(run, max(5, ops // 10)))
    per_op = ", ".join(f"{name} {ns / ops / 1e3:.1f}" for name, ns in parts.items())
    _print_limit(
        case,
        f"{_verdict(kind, wall, parts)}; wall {wall / ops / 1e3:.1f} µs per op, CPU µs per op: "
        f"{per_op}; parent loop's own CPU (cProfile): {hot}",
    )


def _verdict(kind: Kind, wall: int, parts: dict[str, int]) -> str:
    """What limits the case, from the CPU each thread used during ``wall`` ns."""
    busiest, busy = max(parts.items(), key=lambda item: item[1])
    if kind == THROUGHPUT:
        state = "saturated" if busy >= 0.8 * wall else "not saturated: hand-offs limit it"
        return f"{busiest} is the busiest, {100 * busy / wall:.0f}% of wall time ({state})"
    share = f"the threads' CPU adds up to {100 * sum(parts.values()) / wall:.0f}% of wall time"
    if sum(parts.values()) >= 0.7 * wall:
        return f"CPU-bound: {share}, most in {busiest}"
    return f"waiting on wake-ups: {share}"


def _spawn_limit(result: GroupResult, spawn_calls: list[int]) -> str:
    """The start-up line: our start against the interpreter's, the child's imports."""
    ours, interpreter, entry = (
        value.median / 1e3 if isinstance(value := result.get(side), Series) else float("nan")
        for side in (OURS, IMPORT_WM, IMPORT_ENTRY)
    )
    call = median(spawn_calls) / 1e6 if spawn_calls else float("nan")
    return (
        f"the child's start-up: spawn -> first message {ours:.0f} ms against {interpreter:.0f} ms "
        f"for python + import workmesh and {entry:.0f} ms with the entry module (both run to "
        f"completion); the parent's spawn() call takes {call:.1f} ms; {_child_imports()}"
    )


async def _importtime_spawn(err: Any) -> None:
    """Start one hello child with PYTHONPROFILEIMPORTTIME, its stderr to ``err``."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    async with wm.Mesh("bench-xproc-imports") as mesh:
        tx, rx = wm.channel(str)
        with rx:
            started = await mesh.spawn("hello", f"{CHILD}:hello", tx, env=env, stderr=err)
            async with asyncio.timeout(START_TIMEOUT_S):
                await rx.recv()
                await started.wait()


def _child_imports(count: int = 4) -> str:
    """A workmesh child's import time (PYTHONPROFILEIMPORTTIME): total and largest."""
    with tempfile.TemporaryFile() as err:
        asyncio.run(_importtime_spawn(err))
        err.seek(0)
        text = err.read().decode(errors="replace")
    return f"the child spends {import_times(text, count)}"


def import_times(text: str, count: int = 4) -> str:
    """Total and largest top-level imports from PYTHONPROFILEIMPORTTIME output."""
    total, top = 0, []
    for line in text.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        total += int(fields[0])
        if not fields[2].startswith("  "):  # an import at the top level, not a nested one
            top.append((int(fields[1]), fields[2].strip()))
    top.sort(reverse=True)
    largest = ", ".join(f"{name} {us / 1e3:.0f}" for us, name in top[:count])
    return f"{total / 1e3:.0f} ms importing (largest, ms: {largest})"


# ------------------------------------------------------------------- the registry

_RTT_TEXT = (
    "Rpc round trip to a Mesh child: await tx.call(Echo, msg) on an asyncio loop, the child "
    "completes each Rpc with its input (decoded as the declared type, re-encoded); "
    "{what}; floor = blocking socketpair child, 4-byte prefix + msgspec, one sendall each"
)
_STREAM_TEXT = (
    "one-way stream to a Mesh child that decodes and counts, tx.send() x N then None for the "
    "count, timed from the first send to the count; {what}; floor = blocking socketpair child, "
    "4-byte prefix + msgspec, one sendall per message"
)
_PIPE_NOTE = "multiprocessing.Pipe = pickling send/recv to a 'spawn' child"
ASYNCIO_NOTE: Final = (
    f"{ASYNCIO} = the floor's framing over asyncio's own transport, on the loop ours runs "
    "on, to a floor echo child: no target, a yardstick of what the loop alone costs"
)

_SIZES: Final = (("small", "the small Struct"), ("64k", "64 KiB bytes"))

# The small round trip should beat these by the factor given (performance.md).
SMALL_RTT_TARGETS: Final = {
    PIPE: Target("<=", 1.0),
    _peers.ZMQ: Target("<=", 1.0),
    _peers.PYRO5: Target("<=", 1 / 3),
    _peers.RAY: Target("<=", 1 / 25),
}
_OTHERS_NOTE = "; ".join(f"{peer.side} = {peer.about}" for peer in _peers.PEERS)

for _size, _what in _SIZES:
    _register_group(
        f"xproc-rpc-rtt-{_size}",
        LATENCY,
        partial(_rtt_group, _size),
        f"{_RTT_TEXT.format(what=_what)}; {_PIPE_NOTE}; {_OTHERS_NOTE}; {ASYNCIO_NOTE}",
        (
            _Peer(FLOOR, "", Target("<=", 1.5 if _size == "small" else 1.3)),
            _Peer(PIPE, "mp.Pipe", SMALL_RTT_TARGETS[PIPE] if _size == "small" else None),
            *(
                _Peer(p.side, p.suffix, SMALL_RTT_TARGETS.get(p.side) if _size == "small" else None)
                for p in _peers.PEERS
            ),
            _Peer(ASYNCIO, "asyncio"),
        ),
    )
for _size, _what in _SIZES:
    _register_group(
        f"xproc-oneway-{_size}",
        THROUGHPUT,
        partial(_stream_group, _size),
        f"{_STREAM_TEXT.format(what=_what)}; {_PIPE_NOTE}; {_OTHERS_NOTE}",
        (
            _Peer(FLOOR, "", Target(">=", 1.0 if _size == "small" else 0.9)),
            _Peer(PIPE, "mp.Pipe"),
            *(_Peer(p.side, p.suffix) for p in _peers.PEERS),
        ),
    )

_register_group(
    "xproc-spawn",
    LATENCY,
    _spawn_group,
    "start-up, µs: Mesh.spawn -> first message back from the child (a running Mesh); peers: "
    "the interpreter importing workmesh (or the entry module) run to completion, after the "
    "PR_SET_PDEATHSIG a workmesh child also asks for; multiprocessing 'spawn' (the child "
    "imports the entry module to unpickle its target) and 'fork' -> first message",
    (
        _Peer(IMPORT_WM, "", Target("<=", 1.2)),
        _Peer(IMPORT_ENTRY, "import-entry"),
        _Peer(MP_SPAWN, "mp-spawn"),
        _Peer(MP_FORK, "mp-fork"),
    ),
)
