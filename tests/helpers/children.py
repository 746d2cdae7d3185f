"""Entry functions for child processes started by the tests (``"module:function"``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec

import workmesh as wm
from workmesh._node import local_node


class EchoParams(msgspec.Struct):
    requests: wm.Receiver[Any]
    replies: wm.Sender[Any]


async def echo(message: wm.Message) -> None:
    """Send back everything that arrives, until the channel closes."""
    params = message.parse(EchoParams)
    async for item in params.requests:
        params.replies.send(item)


class PidParams(msgspec.Struct):
    reply: wm.Sender[int]
    hold: wm.Receiver[int]


async def report_pid_and_wait(message: wm.Message) -> None:
    params = message.parse(PidParams)
    params.reply.send(os.getpid())
    async for _ in params.hold:
        pass


def sync_entry(message: wm.Message) -> None:
    reply = message.parse(wm.Sender[str])
    reply.send("from a sync entry")


async def fail(message: wm.Message) -> None:
    raise RuntimeError("the entry failed on purpose")


class BounceParams(msgspec.Struct):
    inbox: wm.Receiver[Any]
    outbox: wm.Sender[Any]


async def bounce(message: wm.Message) -> None:
    """Send every message (endpoints inside included) straight back."""
    params = message.parse(BounceParams)
    async for item in params.inbox:
        params.outbox.send(item)


class Calc(msgspec.Struct):
    rpc: wm.FailableRpc[int, int]


async def calc_server(message: wm.Message) -> None:
    """Doubles numbers; refuses negative ones with an error."""
    requests = message.parse(wm.Receiver[Calc])

    def double(x: int) -> int:
        if x < 0:
            raise ValueError(f"negative input {x}")
        return 2 * x

    async for request in requests:
        await request.rpc.handle_failable(double)


class FdParams(msgspec.Struct):
    pipe_w: wm.OwnedFd
    conn: wm.OwnedFd
    listener: wm.OwnedFd
    done: wm.Sender[str]


def use_fds(message: wm.Message) -> None:
    """Write to a pipe, talk on a connected socket, accept on a listening one."""
    import socket  # noqa: PLC0415 - only this entry needs it

    params = message.parse(FdParams)
    os.write(params.pipe_w.fileno(), b"through the pipe")
    params.pipe_w.close()
    with socket.socket(fileno=params.conn.detach()) as conn:
        conn.sendall(b"on the socket")
    with socket.socket(fileno=params.listener.detach()) as listener:
        accepted, _ = listener.accept()
        with accepted:
            accepted.sendall(b"accepted in the child")
    params.done.send("done")


class ForwardParams(msgspec.Struct):
    inbox: wm.Receiver[wm.Receiver[str]]
    onward: wm.Sender[wm.Receiver[str]]
    settled: wm.Sender[str]


async def forward_receiver(message: wm.Message) -> None:
    """Take one Receiver and send it onward; say "settled" once this process no
    longer relays it (its old peer talks to the new holder directly); then stay
    alive until told otherwise."""
    params = message.parse(ForwardParams)
    receiver = await params.inbox.recv()
    params.onward.send(receiver)
    params.onward.close()
    loop = asyncio.get_running_loop()
    settled = loop.create_future()
    local_node().when_settled(lambda: loop.call_soon_threadsafe(settled.set_result, None))
    await settled
    params.settled.send("settled")
    async for _ in params.inbox:
        pass


class SinkParams(msgspec.Struct):
    inbox: wm.Receiver[wm.Receiver[str]]
    replies: wm.Sender[str]


async def echo_received_receiver(message: wm.Message) -> None:
    """Receive a Receiver, then echo everything that arrives on it."""
    params = message.parse(SinkParams)
    receiver = await params.inbox.recv()
    async for text in receiver:
        params.replies.send(f"C got {text}")


def write_garbage(message: wm.Message) -> None:
    """Break the protocol on purpose: raw bytes on the link to the parent."""
    from workmesh._process._runtime import acquire_runtime  # noqa: PLC0415

    runtime = acquire_runtime()
    (conn,) = runtime.connections.values()
    conn.sock.setblocking(True)
    conn.sock.sendall(b"\xff" * 64)
    hold = message.parse(wm.Receiver[int])
    hold.recv_blocking()


class TypedParams(msgspec.Struct):
    out: wm.Sender[str]


def send_wrong_type(message: wm.Message) -> None:
    """Send a str where the parent's receiver expects int."""
    params = message.parse(TypedParams)
    params.out.send("not an int")


# --------------------------------------------------------------------------- the agent
# A child that holds endpoints in numbered slots and works them on command, so a
# test in the parent can drive a Sender or Receiver that lives in another process.


class Hold(msgspec.Struct, tag="hold"):
    slot: int
    endpoint: Any


class Send(msgspec.Struct, tag="send"):
    slot: int
    value: Any


class Clone(msgspec.Struct, tag="clone"):
    slot: int
    new_slot: int


class Close(msgspec.Struct, tag="close"):
    slot: int


class Recv(msgspec.Struct, tag="recv"):
    slot: int
    rpc: wm.FailableRpc[None, Any]


class IsClosed(msgspec.Struct, tag="is_closed"):
    slot: int
    rpc: wm.Rpc[None, bool]


Command = Hold | Send | Clone | Close | Recv | IsClosed


async def agent(message: wm.Message) -> None:
    commands = message.parse(wm.Receiver[Command])
    slots: dict[int, Any] = {}
    async for command in commands:
        match command:
            case Hold(slot=slot, endpoint=endpoint):
                slots[slot] = endpoint
            case Send(slot=slot, value=value):
                slots[slot].send(value)
            case Clone(slot=slot, new_slot=new_slot):
                slots[new_slot] = slots[slot].clone()
            case Close(slot=slot):
                slots.pop(slot).close()
            case Recv(slot=slot, rpc=rpc):
                await rpc.handle_failable(lambda _none, s=slot: slots[s].recv())
            case IsClosed(slot=slot, rpc=rpc):
                rpc.complete(slots[slot].is_closed())


class CountParams(msgspec.Struct):
    inbox: wm.Receiver[int]
    total: wm.Sender[int]


async def count_until_closed(message: wm.Message) -> None:
    """Count what arrives; report the count (and the sum, to catch reordering) at the end."""
    params = message.parse(CountParams)
    count = 0
    last = -1
    async for value in params.inbox:
        assert value == last + 1, f"out of order: {value} after {last}"
        last = value
        count += 1
    params.total.send(count)


def block_until_closed(message: wm.Message) -> None:
    """A plain (sync) entry that blocks on a channel the parent keeps open."""
    params = message.parse(wm.Receiver[int])
    for _ in params:
        pass


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_memory_and_report_rss(message: wm.Message) -> None:
    """Fill 16 blocks of 1 MiB, free them, and report the resident size before and after."""
    reply = message.parse(wm.Sender[list[int]])
    blocks = [bytes([i]) * (1 << 20) for i in range(16)]
    before = _rss()
    del blocks
    reply.send([before, _rss()])
    reply.close()


# ------------------------------------------------------------------- replies (test_rpc_xproc)

DROP = -1  # the answerer drops this request's Rpc without answering
HOLD = -2  # the answerer keeps this request's Rpc, unanswered, until it ends


class Ask(msgspec.Struct):
    rpc: wm.Rpc[int, int]


async def answer(message: wm.Message) -> None:
    """Answer ``x`` with ``x + 1000``; drop or hold the Rpc for DROP and HOLD."""
    requests = message.parse(wm.Receiver[Ask])
    held = []
    async for request in requests:
        x = request.rpc.input
        if x == DROP:
            del request  # the last reference: the reply sender closes here and now
            continue
        if x == HOLD:
            held.append(request)
            continue
        request.rpc.complete(x + 1000)


class RelayParams(msgspec.Struct):
    requests: wm.Receiver[Ask]
    onward: wm.Sender[Ask]


async def relay(message: wm.Message) -> None:
    """Pass every request, its Rpc included, on to another process unanswered."""
    params = message.parse(RelayParams)
    async for request in params.requests:
        params.onward.send(request)


class CallerParams(msgspec.Struct):
    calls: wm.Sender[Ask]
    count: int
    results: wm.Sender[list[int]]


async def caller(message: wm.Message) -> None:
    """Call ``count`` times (inputs 0, 1, ...) and send the answers back in one list."""
    params = message.parse(CallerParams)
    answers = [await params.calls.call(Ask, i) for i in range(params.count)]
    params.results.send(answers)
