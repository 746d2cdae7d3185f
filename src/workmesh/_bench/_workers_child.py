"""What the worker, restart, memory and scaling cases run in their child processes.

A worker host launched with ``imports=["workmesh._bench._workers_child"]`` knows the
workers registered here:

* :class:`AsyncEcho` and :class:`SyncEcho` answer round trips (``_workers``): the
  first serves its requests on its own event loop, the second on its own thread
  with blocking receives;
* :class:`Tally` counts one-way ``Bump`` messages and answers pings, with a 1 KiB
  blob in its state (``_restart``, downtime and loss across a hot restart);
* :class:`Hoard` keeps a large blob and hands it over on restart, either in a
  memfd passed as a :class:`~workmesh.OwnedFd` or as plain bytes (``_restart``);
* :class:`IdleSync` and :class:`IdleAsync` do nothing until stopped (``_memory``).

:func:`echo_many` is a ``Mesh.spawn`` entry that answers round trips on many
channels at once (``_scaling``).

Like every ``*_child`` module, this one imports only msgspec, workmesh and the
standard library: its import time is part of the launch case.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import typing
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, Final

import msgspec

import workmesh as wm

from ._xproc_child import EchoSmall, Small

BLOB_PATTERN: Final = bytes(range(256))


def blob(size: int) -> bytearray:
    """``size`` bytes of a known pattern: cheap to make, and checkable by its crc32."""
    whole, rest = divmod(size, len(BLOB_PATTERN))
    return bytearray(BLOB_PATTERN * whole + BLOB_PATTERN[:rest])


async def serve_until_stopped(
    serve: Callable[[], Coroutine[Any, Any, None]],
    rpc: wm.Receiver[Any],
    on_restart: Callable[[Any], None] | None = None,
) -> None:
    """Run ``serve`` as a task while answering control requests.

    ``Stop`` (or the control channel closing) ends it; ``Restart`` stops serving
    first -- a cancelled receive loses nothing -- then calls ``on_restart`` with
    the request, or refuses when there is none.
    """
    serving = asyncio.create_task(serve())
    try:
        async for message in rpc:
            match message:
                case wm.Stop():
                    return
                case wm.Restart() as restart if on_restart is not None:
                    serving.cancel()
                    await asyncio.gather(serving, return_exceptions=True)
                    on_restart(restart)
                    return
                case wm.Restart() as restart:
                    restart.fail(RuntimeError("this worker is not restartable"))
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


# ------------------------------------------------------------------- round trips


class SmallCall(msgspec.Struct, tag="small"):
    """A round trip of the small Struct (performance.md's message)."""

    rpc: wm.Rpc[Small, Small]


class BigCall(msgspec.Struct, tag="64k"):
    """A round trip of 64 KiB of bytes."""

    rpc: wm.Rpc[bytes, bytes]


class ThreadCall(msgspec.Struct, tag="thread"):
    """Which thread serves the calls (its native id): where-the-time-goes reads its CPU."""

    rpc: wm.Rpc[None, int]


EchoCall = SmallCall | BigCall | ThreadCall


def answer(call: Any) -> None:
    """Complete a call's Rpc with its own input (or, for a ThreadCall, the thread id)."""
    if type(call) is ThreadCall:
        call.rpc.complete(threading.get_native_id())
    else:
        call.rpc.complete(call.rpc.input)


class EchoParams(msgspec.Struct):
    requests: wm.Receiver[EchoCall]


@wm.register_worker
class AsyncEcho(wm.Worker[EchoParams, None]):
    """Answers every call with its input, from a task on the worker's own loop."""

    ID = wm.WorkerId("bench-async-echo")

    def __init__(self, requests: wm.Receiver[EchoCall]) -> None:
        self.requests = requests

    @classmethod
    def new(cls, params: EchoParams) -> AsyncEcho:
        return cls(params.requests)

    async def serve(self) -> None:
        async for call in self.requests:
            answer(call)

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[None]]) -> None:
        await serve_until_stopped(self.serve, rpc)


@wm.register_worker
class SyncEcho(wm.Worker[EchoParams, None]):
    """Answers every call with its input from the worker's own thread (blocking receives).

    A second thread watches the control channel; on ``Stop`` (or when the handle
    goes) it wakes the serving loop with a ``None``, through a sender of its own to
    the request channel (a message sent within one process is never encoded).
    """

    ID = wm.WorkerId("bench-sync-echo")

    def __init__(self, requests: wm.Receiver[EchoCall]) -> None:
        self.requests = requests

    @classmethod
    def new(cls, params: EchoParams) -> SyncEcho:
        return cls(params.requests)

    def run(self, rpc: wm.Receiver[wm.WorkerRpc[None]]) -> None:
        wake: wm.Sender[Any] = self.requests.sender()
        control = threading.Thread(target=self._control, args=(rpc, wake), name="control")
        control.start()
        try:
            for call in self.requests:
                if call is None:
                    return
                answer(call)
        finally:
            control.join()

    @staticmethod
    def _control(rpc: wm.Receiver[wm.WorkerRpc[None]], wake: wm.Sender[Any]) -> None:
        """Until ``Stop`` (or the handle goes): then wake the serving loop with None."""
        with wake:
            for message in rpc:
                match message:
                    case wm.Stop():
                        break
                    case wm.Restart() as restart:
                        restart.fail(RuntimeError("this worker is not restartable"))
            wake.send(None)


# ------------------------------------------------------------------- hot restart: downtime


class Ping(msgspec.Struct, tag="ping"):
    rpc: wm.Rpc[int, int]


class Bump(msgspec.Struct, tag="bump"):
    """One of the one-way messages queued at the restart; ``seq`` counts from 0."""

    seq: int


class TallyReport(msgspec.Struct):
    count: int  # Bumps since the last report
    out_of_order: int  # Bumps whose seq was not the one after the previous
    blob_crc32: int
    pid: int


class Report(msgspec.Struct, tag="report"):
    """Ask for the counts since the last report (and start counting afresh)."""

    rpc: wm.Rpc[None, TallyReport]


TallyCall = Ping | Bump | Report


class TallyParams(msgspec.Struct):
    requests: wm.Receiver[TallyCall]
    state_bytes: int


class TallyState(msgspec.Struct):
    requests: wm.Receiver[TallyCall]
    blob: bytes
    count: int
    next_seq: int
    out_of_order: int


@wm.register_worker
class Tally(wm.Worker[TallyParams, TallyState]):
    """Answers pings and counts bumps; everything it knows is in its state."""

    ID = wm.WorkerId("bench-tally")

    def __init__(self, state: TallyState) -> None:
        self.state = state

    @classmethod
    def new(cls, params: TallyParams) -> Tally:
        return cls(TallyState(params.requests, bytes(blob(params.state_bytes)), 0, 0, 0))

    @classmethod
    def restart(cls, state: TallyState) -> Tally:
        return cls(state)

    async def serve(self) -> None:
        state = self.state
        async for call in state.requests:
            match call:
                case Bump(seq=seq):
                    if seq != state.next_seq:
                        state.out_of_order += 1
                    state.next_seq = seq + 1
                    state.count += 1
                case Ping(rpc=rpc):
                    rpc.complete(rpc.input)
                case Report(rpc=rpc):
                    crc = zlib.crc32(state.blob)
                    rpc.complete(TallyReport(state.count, state.out_of_order, crc, os.getpid()))
                    state.count = state.next_seq = state.out_of_order = 0

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[TallyState]]) -> None:
        await serve_until_stopped(self.serve, rpc, lambda restart: restart.complete(self.state))


# ------------------------------------------------------------------- hot restart: hand-off


class BlobReport(msgspec.Struct):
    length: int
    crc32: int
    pid: int


class Digest(msgspec.Struct):
    rpc: wm.Rpc[None, BlobReport]


class HoardParams(msgspec.Struct):
    requests: wm.Receiver[Digest]
    size: int
    via: str  # "memfd" or "bytes": how the state travels on a restart


class HoardState(msgspec.Struct):
    requests: wm.Receiver[Digest]
    via: str
    length: int
    fd: wm.OwnedFd | None = None  # via memfd: the blob's bytes are in this file
    data: bytes | None = None  # via bytes: the blob itself


def _write_all(fd: int, data: memoryview) -> None:
    offset = 0
    while offset < len(data):
        offset += os.write(fd, data[offset:])


def _read_all(fd: int, length: int) -> bytearray:
    buf = bytearray(length)
    view, offset = memoryview(buf), 0
    while offset < length:
        got = os.preadv(fd, [view[offset:]], offset)
        if got == 0:
            raise EOFError(f"the state file ended after {offset} of {length} bytes")
        offset += got
    return buf


@wm.register_worker
class Hoard(wm.Worker[HoardParams, HoardState]):
    """Keeps a blob in memory and hands it to its successor on a restart.

    Via memfd, the old worker copies the blob into a memfd and hands over the
    descriptor; the successor copies it into its own memory before it counts as
    started.  Via bytes, the blob travels inside the state message itself.  Neither
    side frees a large buffer on the way to Started (the old worker's copy goes
    with the old worker, the memfd is closed on a helper thread), as a worker that
    hands over a large state should.
    """

    ID = wm.WorkerId("bench-hoard")

    def __init__(self, requests: wm.Receiver[Digest], via: str, data: bytes | bytearray) -> None:
        self.requests = requests
        self.via = via
        self.data = data

    @classmethod
    def new(cls, params: HoardParams) -> Hoard:
        if params.via not in ("memfd", "bytes"):
            raise ValueError(f"HoardParams.via must be 'memfd' or 'bytes', got {params.via!r}")
        return cls(params.requests, params.via, blob(params.size))

    @classmethod
    def restart(cls, state: HoardState) -> Hoard:
        if state.fd is not None:
            data: bytes | bytearray = _read_all(state.fd.fileno(), state.length)
            # The last close frees the memfd's pages (about 30 ms for 256 MiB): a
            # helper thread does it, off the path to Started.
            threading.Thread(target=state.fd.close, name="hoard-close", daemon=True).start()
        elif state.data is not None:
            data = state.data
        else:
            raise ValueError("a HoardState needs either fd or data")
        return cls(state.requests, state.via, data)

    def state(self) -> HoardState:
        if self.via == "bytes":
            # msgspec encodes a bytearray as bytes: no copy before the encoder's own.
            data = typing.cast(bytes, self.data)
            return HoardState(self.requests, self.via, len(data), data=data)
        fd = os.memfd_create("workmesh-bench-state", os.MFD_CLOEXEC)
        with contextlib.ExitStack() as undo:
            undo.callback(os.close, fd)
            _write_all(fd, memoryview(self.data))
            undo.pop_all()
        # The blob stays until this worker is dropped, after the successor has
        # started: freeing 256 MiB here (about 16 ms) would delay the hand-off.
        return HoardState(self.requests, self.via, os.fstat(fd).st_size, fd=wm.OwnedFd(fd))

    async def serve(self) -> None:
        async for digest in self.requests:
            digest.rpc.complete(BlobReport(len(self.data), zlib.crc32(self.data), os.getpid()))

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[HoardState]]) -> None:
        await serve_until_stopped(self.serve, rpc, lambda restart: restart.complete(self.state()))


# ------------------------------------------------------------------- idle workers


class Nothing(msgspec.Struct):
    pass


@wm.register_worker
class IdleSync(wm.Worker[Nothing, None]):
    """Blocks its thread on its control channel until stopped."""

    ID = wm.WorkerId("bench-idle-sync")

    @classmethod
    def new(cls, params: Nothing) -> IdleSync:
        return cls()

    def run(self, rpc: wm.Receiver[wm.WorkerRpc[None]]) -> None:
        for message in rpc:
            if isinstance(message, wm.Stop):
                return


@wm.register_worker
class IdleAsync(wm.Worker[Nothing, None]):
    """Waits on its own event loop for its control channel until stopped."""

    ID = wm.WorkerId("bench-idle-async")

    @classmethod
    def new(cls, params: Nothing) -> IdleAsync:
        return cls()

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[None]]) -> None:
        async for message in rpc:
            if isinstance(message, wm.Stop):
                return


# ------------------------------------------------------------------- many channels, one child


async def echo_many(message: wm.Message) -> None:
    """Answer round trips on every channel given, each from a task of its own."""
    channels = message.parse(list[wm.Receiver[EchoSmall]])

    async def serve(requests: wm.Receiver[EchoSmall]) -> None:
        async for request in requests:
            request.rpc.complete(request.rpc.input)

    await asyncio.gather(*(serve(requests) for requests in channels))
