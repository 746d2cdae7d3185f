"""The other transports the cross-process cases compare with, beside the floor and Pipe.

* ``multiprocessing.Queue`` -- a request and a reply queue (pipe + feeder thread +
  pickle) to a 'spawn' child;
* pyzmq -- a PAIR socket over ``ipc://`` in a fresh temporary directory, msgspec
  frames, to a ``sys.executable`` child;
* Pyro5 -- proxy calls over a Unix socket with the msgpack serializer; the stream
  uses ``@oneway`` calls (Pyro5 runs each on a new server thread), and the count is
  taken by a call that waits until all of them have arrived;
* Ray -- calls to an actor in a local Ray session (``ray.init(num_cpus=2)``), started
  for the group that measures it and shut down after it, when Ray is importable.

pyzmq, Pyro5 and msgpack come with the ``bench`` extra (``pip install -e '.[bench]'``);
Ray does not (``pip install ray``).  A peer that cannot run here -- its package is
missing, or it failed to start -- is returned as the note saying why, and its case is
reported as skipped with that note; it never stops the others.

Pyro5 and Ray are one or two orders of magnitude slower per message than the rest,
so they run fewer operations per round (``_SLOW``) to keep a run's length sane; a
median over fewer samples is still a median.

Everything a peer starts (child processes, sockets, the ipc:// and Unix socket
files, the temporary directories, the Ray actor) is registered on the caller's
``ExitStack`` and goes when it closes.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Any, Final

import msgspec

from . import _peers_child as child
from ._xproc_child import BIG, SMALL, SMALL_DICT, decoder_for

START_TIMEOUT_S: Final = 30.0
JOIN_TIMEOUT_S: Final = 10.0
CHILD: Final = child.__name__

MP_QUEUE: Final = "multiprocessing.Queue"
ZMQ: Final = "pyzmq PAIR ipc:// + msgspec"
PYRO5: Final = "Pyro5 (msgpack serializer)"
RAY: Final = "Ray actor"

BENCH_EXTRA: Final = "pip install -e '.[bench]'"


@dataclass(frozen=True)
class Peer:
    side: str  # the name of the side in a group's result, shown as the peer
    suffix: str  # the case-name suffix of its row
    about: str  # what exactly is measured


PEERS: Final = (
    Peer(MP_QUEUE, "mp.Queue", "multiprocessing.Queue put/get (pickle) to a 'spawn' child"),
    Peer(ZMQ, "zmq", "pyzmq PAIR socket over ipc://, msgspec encode / typed decode"),
    Peer(PYRO5, "Pyro5", "Pyro5 proxy calls over a Unix socket, msgpack serializer"),
    Peer(RAY, "Ray", "Ray actor method calls, ray.get(actor.ping.remote(x))"),
)

# Fewer operations per round for the slow peers: divisors of the round's count.
_SLOW: Final = {
    ("rtt", PYRO5): 4,
    ("rtt", RAY): 20,
    ("stream-small", PYRO5): 40,
    ("stream-64k", PYRO5): 4,
    ("stream-small", RAY): 100,
    ("stream-64k", RAY): 10,
}

RttRound = Callable[[], list[int]]
StreamRound = Callable[[], tuple[int, int]]


class PeerUnavailable(Exception):
    """This peer cannot run here; the message says why and how to fix that."""


def _import(module: str, dist: str, install: str = BENCH_EXTRA) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(
            f"{dist} is not installed here ({exc}); to measure it: {install}"
        ) from None


def _fewer(kind: str, side: str, ops: int) -> int:
    return max(5, ops // _SLOW.get((kind, side), 1))


def _message(size: str, pickled: bool) -> Any:
    """The message a peer sends: the Struct for msgspec peers, a dict for the others."""
    if size == "64k":
        return BIG
    return SMALL_DICT if pickled else SMALL


def _check(side: str, got: Any, want: Any) -> None:
    if got != want:
        raise RuntimeError(f"{side} answered {got!r:.60}, expected {want!r:.60}")


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a child we started; SIGKILL it (by pid) if it does not exit in time."""
    try:
        proc.wait(JOIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def blocking_rtt_round(roundtrip: Callable[[], Any], ops: int, warmup: int) -> list[int]:
    """``warmup`` untimed round trips, then ``ops`` timed ones (ns each)."""
    clock = perf_counter_ns
    samples = [0] * ops
    for _ in range(warmup):
        roundtrip()
    for i in range(ops):
        start = clock()
        roundtrip()
        samples[i] = clock() - start
    return samples


def _stream_round(
    side: str, send: Callable[[], None], finish: Callable[[int], int], ops: int
) -> tuple[int, int]:
    """``ops`` one-way sends, then ``finish`` asks for the count; timed to its answer."""
    clock = perf_counter_ns
    start = clock()
    for _ in range(ops):
        send()
    got = finish(ops)
    elapsed = clock() - start
    _check(side, got, ops)
    return ops, elapsed


# ------------------------------------------------------------------- multiprocessing.Queue


class _MpQueues:
    """A 'spawn' child serving a request and a reply ``multiprocessing.Queue``."""

    def __init__(self, stack: contextlib.ExitStack, target: Callable[..., None], stop: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # this process runs threads: no fork
        self.inbox: Any = ctx.Queue()
        self.outbox: Any = ctx.Queue()
        self._stop = stop
        stack.callback(self.close)
        self.proc = ctx.Process(
            target=target, args=(self.inbox, self.outbox, os.getpid()), daemon=True
        )
        self.proc.start()

    def get(self) -> Any:
        return self.outbox.get(timeout=START_TIMEOUT_S)

    def close(self) -> None:
        """Stop the child, join it (or kill it by pid), close both queues and their threads."""
        if self.proc.pid is not None:
            self.inbox.put(self._stop)
            self.proc.join(JOIN_TIMEOUT_S)
            if self.proc.exitcode is None:
                self.proc.kill()
                self.proc.join(JOIN_TIMEOUT_S)
            self.proc.close()
        for queue in (self.inbox, self.outbox):
            queue.close()
            queue.join_thread()  # the feeder thread has written everything and ended
        # Drop the queues now: their locks unregister from multiprocessing's
        # resource tracker as they go, before the group stops the tracker.
        self.inbox = self.outbox = None


def _mp_queue_rtt(stack: contextlib.ExitStack, size: str, ops: int, warmup: int) -> RttRound:
    peer = _MpQueues(stack, child.mp_queue_echo, None)
    obj = _message(size, pickled=True)

    def roundtrip() -> Any:
        peer.inbox.put(obj)
        return peer.outbox.get()

    peer.inbox.put(obj)
    _check(MP_QUEUE, peer.get(), obj)
    return partial(blocking_rtt_round, roundtrip, ops, warmup)


def _mp_queue_stream(stack: contextlib.ExitStack, size: str, ops: int) -> StreamRound:
    peer = _MpQueues(stack, child.mp_queue_sink, "end")
    obj = _message(size, pickled=True)

    def send() -> None:
        peer.inbox.put(obj)

    def finish(_expected: int) -> int:
        peer.inbox.put(None)
        return int(peer.outbox.get())

    peer.inbox.put(None)
    _check(MP_QUEUE, peer.get(), 0)
    return partial(_stream_round, MP_QUEUE, send, finish, ops)


# ------------------------------------------------------------------- pyzmq


def _zmq_link(stack: contextlib.ExitStack, mode: str, size: str) -> Any:
    """A bound PAIR socket whose peer is a fresh child; checked with one exchange."""
    zmq = _import("zmq", "pyzmq")
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="workmesh-bench-zmq-"))
    addr = f"ipc://{folder}/pair"
    ctx = zmq.Context()
    stack.callback(ctx.term)
    sock = ctx.socket(zmq.PAIR)
    stack.callback(sock.close, 0)
    sock.bind(addr)
    argv = [sys.executable, "-m", CHILD, "zmq", mode, size, addr, str(os.getpid())]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def stop() -> None:
        with contextlib.suppress(zmq.ZMQError):  # the child may be gone already
            sock.send(b"" if mode == "echo" else b"end", zmq.NOBLOCK)
        _reap(proc)

    stack.callback(stop)
    # A first exchange with a deadline: a child that never came up fails here.
    sock.setsockopt(zmq.SNDTIMEO, int(START_TIMEOUT_S * 1000))
    sock.setsockopt(zmq.RCVTIMEO, int(START_TIMEOUT_S * 1000))
    encoder = msgspec.msgpack.Encoder()
    if mode == "echo":
        sock.send(encoder.encode(_message(size, pickled=False)))
        _check(ZMQ, decoder_for(size).decode(sock.recv()), _message(size, pickled=False))
    else:
        sock.send(b"")
        _check(ZMQ, msgspec.msgpack.decode(sock.recv()), 0)
    sock.setsockopt(zmq.SNDTIMEO, -1)
    sock.setsockopt(zmq.RCVTIMEO, -1)
    return sock


def _zmq_rtt(stack: contextlib.ExitStack, size: str, ops: int, warmup: int) -> RttRound:
    sock = _zmq_link(stack, "echo", size)
    send, recv = sock.send, sock.recv
    encode, decode = msgspec.msgpack.Encoder().encode, decoder_for(size).decode
    msg = _message(size, pickled=False)

    def roundtrip() -> Any:
        send(encode(msg))
        return decode(recv())

    return partial(blocking_rtt_round, roundtrip, ops, warmup)


def _zmq_stream(stack: contextlib.ExitStack, size: str, ops: int) -> StreamRound:
    sock = _zmq_link(stack, "sink", size)
    encode = msgspec.msgpack.Encoder().encode
    msg = _message(size, pickled=False)

    def send() -> None:
        sock.send(encode(msg))

    def finish(_expected: int) -> int:
        sock.send(b"")
        return int(msgspec.msgpack.decode(sock.recv()))

    return partial(_stream_round, ZMQ, send, finish, ops)


# ------------------------------------------------------------------- Pyro5


def _pyro5_proxy(stack: contextlib.ExitStack) -> Any:
    """A bound proxy (msgpack serializer) to a fresh child's Pyro5 daemon."""
    api = _import("Pyro5.api", "Pyro5")
    _import("msgpack", "msgpack")  # Pyro5's msgpack serializer needs it
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="workmesh-bench-pyro5-"))
    path = os.path.join(folder, "daemon")
    argv = [sys.executable, "-m", CHILD, "pyro5", path, str(os.getpid())]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def stop() -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()  # end of input: the daemon shuts down and removes its socket
        _reap(proc)
        proc.stdout.close()

    stack.callback(stop)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        raise RuntimeError(f"the Pyro5 child did not start (it said {line!r})")
    proxy = api.Proxy(f"PYRO:bench@./u:{path}")
    proxy._pyroSerializer = "msgpack"
    proxy._pyroTimeout = START_TIMEOUT_S
    proxy._pyroBind()
    stack.callback(proxy._pyroRelease)
    return proxy


def _pyro5_rtt(stack: contextlib.ExitStack, size: str, ops: int, warmup: int) -> RttRound:
    proxy = _pyro5_proxy(stack)
    obj = _message(size, pickled=True)
    _check(PYRO5, proxy.ping(obj), obj)
    ping = proxy.ping

    def roundtrip() -> Any:
        return ping(obj)

    ops = _fewer("rtt", PYRO5, ops)
    return partial(blocking_rtt_round, roundtrip, ops, max(1, ops // 10))


def _pyro5_stream(stack: contextlib.ExitStack, size: str, ops: int) -> StreamRound:
    proxy = _pyro5_proxy(stack)
    obj = _message(size, pickled=True)
    sink = proxy.sink

    def send() -> None:
        sink(obj)

    def finish(expected: int) -> int:
        return int(proxy.take_count(expected, START_TIMEOUT_S))

    return partial(_stream_round, PYRO5, send, finish, _fewer(f"stream-{size}", PYRO5, ops))


# ------------------------------------------------------------------- Ray


def _ray(stack: contextlib.ExitStack) -> Any:
    """The ray module with a local session running until ``stack`` closes.

    One session per group, not per run: Ray's own processes (its store, scheduler
    and workers) would otherwise keep running beside every case measured after it.
    The session's files (sockets, logs) go to a temporary directory of ours,
    removed after ``ray.shutdown()``.  Ray keeps a few descriptors of its own open
    in this process after shutdown (its RPC event loops, log files); they go when
    the process does.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray = _import("ray", "Ray", install="pip install ray (it is not in the bench extra)")
    except PeerUnavailable:
        raise
    except Exception as exc:  # a broken installation
        raise PeerUnavailable(f"Ray does not import here: {exc!r}") from None
    # Short: Ray puts Unix sockets a few levels below it, and their paths must fit 107 bytes.
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="wmb-ray-"))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        _temp_dir=folder,
    )
    stack.callback(ray.shutdown)
    return ray


class _RayEcho:
    """The actor: a round trip, a one-way sink, and the sink's count."""

    def __init__(self) -> None:
        self.count = 0

    def ping(self, value: Any) -> Any:
        return value

    def sink(self, value: Any) -> None:
        self.count += 1

    def take_count(self) -> int:
        count, self.count = self.count, 0
        return count


def _ray_actor(stack: contextlib.ExitStack) -> tuple[Any, Any]:
    ray = _ray(stack)
    actor = ray.remote(_RayEcho).remote()
    stack.callback(ray.kill, actor)
    _check(RAY, ray.get(actor.ping.remote(0), timeout=START_TIMEOUT_S), 0)
    return ray, actor


def _ray_rtt(stack: contextlib.ExitStack, size: str, ops: int, warmup: int) -> RttRound:
    ray, actor = _ray_actor(stack)
    obj, get, ping = _message(size, pickled=True), ray.get, actor.ping.remote

    def roundtrip() -> Any:
        return get(ping(obj))

    ops = _fewer("rtt", RAY, ops)
    return partial(blocking_rtt_round, roundtrip, ops, max(1, ops // 10))


def _ray_stream(stack: contextlib.ExitStack, size: str, ops: int) -> StreamRound:
    ray, actor = _ray_actor(stack)
    obj, sink = _message(size, pickled=True), actor.sink.remote

    def send() -> None:
        sink(obj)

    def finish(_expected: int) -> int:
        # An actor runs one caller's calls in order: the count comes after every sink.
        return int(ray.get(actor.take_count.remote(), timeout=START_TIMEOUT_S))

    return partial(_stream_round, RAY, send, finish, _fewer(f"stream-{size}", RAY, ops))


# ------------------------------------------------------------------- the sides


def _start(
    stack: contextlib.ExitStack, side: str, start: Callable[[contextlib.ExitStack], Any]
) -> Any:
    """Start one peer on a stack of its own, moved onto ``stack`` once it runs; or the note."""
    with contextlib.ExitStack() as own:
        try:
            started = start(own)
        except PeerUnavailable as exc:
            return str(exc)
        except Exception as exc:
            return f"{side} could not start here: {type(exc).__name__}: {exc}"
        stack.enter_context(own.pop_all())
        return started


def rtt_sides(
    stack: contextlib.ExitStack, size: str, ops: int, warmup: int
) -> dict[str, RttRound | str]:
    """Each peer's round-trip round (``ops`` round trips, fewer for slow peers), or its note."""
    starts = {
        MP_QUEUE: _mp_queue_rtt,
        ZMQ: _zmq_rtt,
        PYRO5: _pyro5_rtt,
        RAY: _ray_rtt,
    }
    # Each lambda runs at once, inside _start, so it sees this iteration's ``start``.
    return {
        side: _start(stack, side, lambda own: start(own, size, ops, warmup))  # noqa: B023
        for side, start in starts.items()
    }


def stream_sides(stack: contextlib.ExitStack, size: str, ops: int) -> dict[str, StreamRound | str]:
    """Each peer's one-way round (``ops`` messages, fewer for slow peers), or its note."""
    starts = {
        MP_QUEUE: _mp_queue_stream,
        ZMQ: _zmq_stream,
        PYRO5: _pyro5_stream,
        RAY: _ray_stream,
    }
    return {
        side: _start(stack, side, lambda own: start(own, size, ops))  # noqa: B023
        for side, start in starts.items()
    }


def split(sides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the peers that run, the notes of those that do not)."""
    runs = {side: value for side, value in sides.items() if not isinstance(value, str)}
    notes = {side: value for side, value in sides.items() if isinstance(value, str)}
    return runs, notes
