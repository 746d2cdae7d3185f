"""Calls answered on the request's own stream (``_channel._reply``, ADR 0006).

A call to a receiver elsewhere sends no reply port: the answer comes back on the
port pair the request took.  These tests drive that path inside one process (a
channel promoted to ports behaves as across processes, frames aside) through the
cases where the answer must leave, or outlive, the stream it came on; the
cross-process cases are in test_rpc_xproc.py, test_hot_restart.py and the chaos
suite.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

import workmesh as wm
from workmesh._channel import _reply
from workmesh._channel._mpsc import (
    receiver_from_port,
    receiver_to_port,
    sender_from_port,
    sender_to_port,
)
from workmesh._frames import MessageFrame
from workmesh._node import local_node
from workmesh._wire import BY_REFERENCE, Payload, decode_frame, frame_bytes
from workmesh.testing import MemoryNetwork

from .helpers.aio import within

pytestmark = pytest.mark.timeout(20)


def aio(fn: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """An async test body, run on a fresh loop."""

    def test() -> None:
        asyncio.run(fn())  # type: ignore[arg-type]

    test.__name__ = fn.__name__
    test.__doc__ = fn.__doc__
    return test


class Ask(msgspec.Struct):
    rpc: wm.Rpc[int, int]


def ported(tp: Any = Ask) -> tuple[wm.Sender[Any], wm.Receiver[Any]]:
    """A channel whose ends talk through ports, as they would across processes."""
    send, recv = wm.channel(tp)
    return sender_from_port(sender_to_port(send), tp), receiver_from_port(
        receiver_to_port(recv), tp
    )


def waiting(send: wm.Sender[Any]) -> int:
    """How many calls on ``send``'s port wait for an answer."""
    replies = send._core.replies  # type: ignore[union-attr]
    return 0 if replies is None else len(replies.pending)


def call(send: wm.Sender[Any], value: int) -> asyncio.Task[Any]:
    return asyncio.ensure_future(send.call(Ask, value))


@aio
async def test_answer_comes_back_on_the_request_stream() -> None:
    send, recv = ported()
    for value in (20, 30):  # the first call of a message type, then one after it
        task = call(send, value)
        ask = await within(recv.recv())
        # What arrived names no port of its own: the answer goes back the way it came.
        assert type(ask.rpc.reply._core.slot) is _reply.ReplySlot
        assert ask.rpc.reply._core.remote is None
        ask.rpc.complete(ask.rpc.input + 1)
        assert await within(task) == value + 1
        assert waiting(send) == 0
    send.close()
    recv.close()


@aio
async def test_dropped_request_ends_the_call_closed_and_the_channel_goes_on() -> None:
    send, recv = ported()
    task = call(send, 1)
    ask = await within(recv.recv())
    del ask
    gc.collect()
    with pytest.raises(wm.ChannelClosed):
        await within(task)
    task = call(send, 2)
    (await within(recv.recv())).rpc.complete(3)
    assert await within(task) == 3
    send.close()
    recv.close()


@aio
async def test_answer_sent_after_the_receiver_closed_still_arrives() -> None:
    send, recv = ported()
    task = call(send, 5)
    ask = await within(recv.recv())
    recv.close()
    later = call(send, 6)  # reaches a closed receiver: answered closed
    with pytest.raises(wm.ChannelClosed):
        await within(later)
    assert not task.done()
    ask.rpc.complete(50)
    assert await within(task) == 50
    send.close()


@aio
async def test_calls_queued_when_the_receiver_closes_end_closed() -> None:
    send, recv = ported()
    held_task = call(send, 0)
    held = await within(recv.recv())  # keeps the port open after the close
    tasks = [call(send, i) for i in range(1, 4)]
    await sent()
    assert len(recv._core.items) == 3  # type: ignore[union-attr]
    recv.close()
    for task in tasks:
        with pytest.raises(wm.ChannelClosed):
            await within(task)
    held.rpc.complete(7)
    assert await within(held_task) == 7
    send.close()


@aio
async def test_sender_closed_while_calls_wait_still_gets_the_answers() -> None:
    send, recv = ported()
    other = send.clone()
    task = asyncio.ensure_future(other.call(Ask, 4))
    await sent()
    assert waiting(send) == 1
    send.close()
    other.close()  # the last sender: the port must stay open for the answer
    ask = await within(recv.recv())
    ask.rpc.complete(40)
    assert await within(task) == 40
    # ...and then it closes: the receiver sees the channel end.
    with pytest.raises(wm.ChannelClosed):
        await within(recv.recv())


@aio
async def test_an_answered_call_leaves_the_port_to_the_calls_still_waiting() -> None:
    """Two calls wait when the last sender closes. The first is answered and its
    reply receiver dropped (its call has nothing left to forget): the port stays
    open for the second, and closes once that one is answered."""
    send, recv = ported()
    first, second = call(send, 1), call(send, 2)
    await sent()
    mux = send._core.replies if send._core is not None else None
    assert mux is not None and len(mux.pending) == 2
    send.close()
    asks = [await within(recv.recv()), await within(recv.recv())]
    asks[0].rpc.complete(10)
    assert await within(first) == 10
    del first
    gc.collect()  # the first call's reply receiver is gone
    assert len(mux.pending) == 1
    asks[1].rpc.complete(20)
    assert await within(second) == 20
    with pytest.raises(wm.ChannelClosed):
        await within(recv.recv())


@aio
async def test_receiver_moved_with_calls_in_progress_and_queued() -> None:
    send, recv = ported()
    first = call(send, 1)
    in_progress = await within(recv.recv())
    queued = [call(send, i) for i in (2, 3)]
    await sent()
    assert len(recv._core.items) == 2  # type: ignore[union-attr]
    # The move a hot restart makes: the receiver (with what it holds) goes elsewhere.
    moved = receiver_from_port(receiver_to_port(recv), Ask)
    # The answer being worked on here now has a port of its own...
    assert in_progress.rpc.reply._core.slot.state == _reply.ReplySlot.MOVED
    for _ in queued:
        ask = await within(moved.recv())
        ask.rpc.complete(ask.rpc.input * 10)
    in_progress.rpc.complete(10)
    assert [await within(t) for t in (first, *queued)] == [10, 20, 30]
    # ...and calls made after the move are answered from the new place.
    later = call(send, 4)
    ask = await within(moved.recv())
    ask.rpc.complete(40)
    assert await within(later) == 40
    assert waiting(send) == 0
    send.close()
    moved.close()


@aio
async def test_large_calls_queued_when_the_receiver_moves_are_answered_from_there() -> None:
    """Large requests from this process wait with the call head taken off the
    front of their encoding; moved on with the receiver (their reply slot now a
    port), each arrives whole and is answered from the new place."""
    send, recv = ported(Big)
    blobs = [os.urandom(BY_REFERENCE + i) for i in range(3)]
    tasks = [asyncio.ensure_future(send.call(Big, blob)) for blob in blobs]
    await sent()
    assert len(recv._core.items) == 3  # type: ignore[union-attr]
    moved = receiver_from_port(receiver_to_port(recv), Big)
    for blob in blobs:
        ask = await within(moved.recv())
        assert ask.rpc.input == blob
        ask.rpc.complete(blob[::-1])
    assert [await within(t) for t in tasks] == [blob[::-1] for blob in blobs]
    assert waiting(send) == 0
    send.close()
    moved.close()


@aio
async def test_request_forwarded_elsewhere_is_answered_from_there() -> None:
    send, recv = ported()
    relay_send, relay_recv = ported()
    task = call(send, 8)
    ask = await within(recv.recv())
    relay_send.send(ask)  # the Rpc travels on: its answer gets a port of its own
    del ask
    forwarded = await within(relay_recv.recv())
    assert forwarded.rpc.reply._core.slot is None
    forwarded.rpc.complete(80)
    assert await within(task) == 80
    for end in (send, recv, relay_send, relay_recv):
        end.close()


@aio
async def test_request_received_as_a_message_is_answered_after_parsing() -> None:
    send, recv = wm.channel(wm.Message)
    send = sender_from_port(sender_to_port(send), Ask)
    recv = receiver_from_port(receiver_to_port(recv), wm.Message)
    task = call(send, 9)
    message = await within(recv.recv())
    ask = message.parse(Ask)
    ask.rpc.complete(90)
    assert await within(task) == 90
    send.close()
    recv.close()


@aio
async def test_cancelled_call_leaves_nothing_waiting_and_a_late_answer_is_dropped() -> None:
    send, recv = ported()
    task = call(send, 1)
    ask = await within(recv.recv())
    task.cancel()
    await within(asyncio.wait([task]))
    assert task.cancelled()
    del task
    gc.collect()
    assert waiting(send) == 0
    ask.rpc.complete(10)  # nobody waits: dropped, and the channel goes on
    task = call(send, 2)
    (await within(recv.recv())).rpc.complete(20)
    assert await within(task) == 20
    send.close()
    recv.close()


@aio
async def test_callee_port_failing_fails_every_waiting_call() -> None:
    send, recv = ported()
    tasks = [call(send, i) for i in range(3)]
    await sent()
    (port,) = recv._core.ports  # type: ignore[union-attr]
    port.fail(wm.NodeError("the callee's process was lost"))
    for task in tasks:
        with pytest.raises(wm.ChannelFailed) as info:
            await within(task)
        assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
    send.close()
    recv.close()


@aio
async def test_malformed_call_head_reads_as_corruption() -> None:
    send, recv = ported()
    port = send._core.remote  # type: ignore[union-attr]
    # A head naming a reply index the message does not have (it carries no resource).
    port.send(Payload(_reply.call_head(3, 1) + msgspec.msgpack.encode([1, None])))
    with pytest.raises(wm.ChannelFailed) as info:
        await within(recv.recv())
    assert info.value.kind is wm.ChannelErrorKind.CORRUPTION
    send.close()
    recv.close()


@aio
async def test_message_on_a_sender_port_that_is_not_an_answer_fails_its_calls() -> None:
    send, recv = ported()
    task = call(send, 1)
    await sent()
    (port,) = recv._core.ports  # type: ignore[union-attr]
    port.send(Payload(msgspec.msgpack.encode("not an answer")))
    with pytest.raises(wm.ChannelFailed) as info:
        await within(task)
    assert "not an answer to a call" in str(info.value.__cause__)
    send.close()
    recv.close()


@aio
async def test_slot_referenced_as_a_port_is_refused() -> None:
    class Wrong(msgspec.Struct):
        where: wm.Sender[int]

    send, recv = ported(Wrong)
    port = send._core.remote  # type: ignore[union-attr]
    # A Sender reference (ext 2) pointing at the slot the head makes.
    body = msgspec.msgpack.encode({"where": msgspec.msgpack.Ext(2, (0).to_bytes(4, "little"))})
    port.send(Payload(_reply.call_head(0, 1) + body))
    with pytest.raises(wm.ChannelFailed) as info:
        await within(recv.recv())
    assert "reply slot" in str(info.value.__cause__)
    send.close()
    recv.close()


class AskWithSender(msgspec.Struct):
    rpc: wm.Rpc[int, int]
    also: wm.Sender[int]


class AskInAList(msgspec.Struct):
    rpcs: list[wm.Rpc[int, int]]


@aio
async def test_reply_sender_followed_by_an_endpoint_gets_a_port_of_its_own() -> None:
    send, recv = ported(AskWithSender)
    side_send, side_recv = wm.channel(int)
    task = asyncio.ensure_future(send.call(lambda rpc: AskWithSender(rpc, side_send), 3))
    ask = await within(recv.recv())
    assert ask.rpc.reply._core.slot is None  # the head is only for a last resource
    ask.also.send(33)
    ask.rpc.complete(30)
    assert await within(task) == 30
    assert await within(side_recv.recv()) == 33
    assert waiting(send) == 0
    for end in (send, recv, side_recv):
        end.close()


@aio
async def test_reply_sender_inside_a_container_takes_the_general_path() -> None:
    send, recv = ported(AskInAList)
    task = asyncio.ensure_future(send.call(lambda rpc: AskInAList([rpc]), 4, reply_type=int))
    ask = await within(recv.recv())
    assert ask.rpcs[0].reply._core.slot is None
    ask.rpcs[0].complete(40)
    assert await within(task) == 40
    send.close()
    recv.close()


@aio
async def test_large_request_and_answer() -> None:
    send, recv = ported(Big)
    blob = bytes(range(256)) * 512  # 128 KiB: the answer goes by reference
    task = asyncio.ensure_future(send.call(Big, blob))
    ask = await within(recv.recv())
    assert ask.rpc.input == blob
    ask.rpc.complete(ask.rpc.input[::-1])
    assert await within(task) == blob[::-1]
    send.close()
    recv.close()


class Big(msgspec.Struct):
    rpc: wm.Rpc[bytes, bytes]


@aio
async def test_large_request_to_another_node_is_queued_without_a_copy() -> None:
    """A large call to a port on another node goes as three pieces: the call head
    in front, then the request's own encoding, which nothing joined the head to
    (a copy of it fewer); the callee reads it whole and its answer comes back."""
    net = MemoryNetwork()
    a_node, b_node = net.add_node(), net.add_node()
    pa, pb = net.pair(a_node, b_node)
    send, recv = sender_from_port(pa, Big), receiver_from_port(pb, Big)
    blob = os.urandom(BY_REFERENCE + 1)
    task = asyncio.ensure_future(send.call(Big, blob))
    await sent()
    ((data, fds),) = a_node.take_outbox(b_node.id)
    assert isinstance(data, tuple) and fds == []
    before, body, _after = data
    assert before[-_reply.CALL_SIZE :].startswith(_reply.CALL)  # the head ends the first piece
    assert not body.startswith(_reply.CALL) and blob in body
    frame = decode_frame(frame_bytes(data))
    assert isinstance(frame, MessageFrame) and frame.data is not None
    assert bytes(frame.data) == before[-_reply.CALL_SIZE :] + body
    b_node.receive(a_node.id, frame_bytes(data), fds)
    ask = await within(recv.recv())
    assert ask.rpc.input == blob
    ask.rpc.complete(blob[::-1])
    net.pump()
    assert await within(task) == blob[::-1]
    send.close()
    recv.close()
    net.pump()


@aio
async def test_large_calls_reaching_a_closed_receiver_end_closed() -> None:
    """Large requests in this process arrive with the call head in front of the
    encoding, not joined to it: queued when the receiver closes, or sent after,
    each is still seen as a call and answered closed."""
    send, recv = ported(Big)
    blob = os.urandom(BY_REFERENCE)
    held_task = asyncio.ensure_future(send.call(Big, blob))
    held = await within(recv.recv())  # keeps the port open after the close
    queued = [asyncio.ensure_future(send.call(Big, blob)) for _ in range(2)]
    await sent()
    assert len(recv._core.items) == 2  # type: ignore[union-attr]
    recv.close()
    later = asyncio.ensure_future(send.call(Big, blob))  # reaches the drained port
    for task in [*queued, later]:
        with pytest.raises(wm.ChannelClosed):
            await within(task)
    held.rpc.complete(b"done")
    assert await within(held_task) == b"done"
    send.close()


@aio
async def test_large_value_reaching_a_drained_port_is_dropped() -> None:
    """A large value (sent by reference) that reaches the port a closed receiver
    keeps for answers in progress is dropped like any other message, and the
    answer in progress still arrives."""
    send, recv = ported(Ask | bytes)
    task = call(send, 1)
    held = await within(recv.recv())  # keeps the port open after the close
    recv.close()
    send.send(os.urandom(BY_REFERENCE))
    held.rpc.complete(2)
    assert await within(task) == 2
    send.close()


@aio
async def test_a_sender_port_that_ends_leaves_no_table_behind() -> None:
    first, recv = wm.channel(Ask)
    recv = receiver_from_port(receiver_to_port(recv), Ask)
    first.close()
    for i in range(3):  # senders that come, call once, and go (clients)
        send = recv.sender()
        send = sender_from_port(sender_to_port(send), Ask)
        task = call(send, i)
        (await within(recv.recv())).rpc.complete(i)
        assert await within(task) == i
        send.close()
    with pytest.raises(wm.ChannelClosed):
        await within(recv.recv())  # every sender's end is taken in...
    assert recv._core.homes == {}  # type: ignore[union-attr]  # ...with its table
    recv.close()


def test_no_port_is_left_behind() -> None:
    async def main() -> None:
        send, recv = ported()
        task = call(send, 1)
        (await within(recv.recv())).rpc.complete(2)
        assert await within(task) == 2
        send.close()
        recv.close()

    before = local_node().port_count()
    asyncio.run(main())
    gc.collect()
    assert local_node().port_count() == before


async def _nothing() -> None:
    pass


async def sent() -> None:
    """Let the call tasks created so far send their requests: tasks take their
    first step in the order they were made, and a call sends before it first
    waits, so a task made now runs after every one of them has sent."""
    await asyncio.ensure_future(_nothing())
