"""Conformance of ``wm.oneshot``: mesh-semantics §1.4 and mesh_channel_core::oneshot's tests.

``Port::from(x)`` / ``T::from(port)`` are the promotion helpers of
``workmesh._channel._oneshot``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import workmesh as wm
from workmesh._channel._mpsc import sender_from_port, sender_to_port
from workmesh._channel._oneshot import (
    oneshot_receiver_from_port,
    oneshot_receiver_to_port,
    oneshot_sender_from_port,
    oneshot_sender_to_port,
)
from workmesh._node import local_node
from workmesh._wire import codec_for

pytestmark = pytest.mark.timeout(20)

Run = Callable[[Any], Any]


def convert_sender(tx: wm.OneshotSender[Any], tp: Any) -> wm.OneshotSender[Any]:
    return oneshot_sender_from_port(oneshot_sender_to_port(tx), tp)


def convert_receiver(rx: wm.OneshotReceiver[Any], tp: Any) -> wm.OneshotReceiver[Any]:
    return oneshot_receiver_from_port(oneshot_receiver_to_port(rx), tp)


def make_oneshot(kind: str, tp: Any = object) -> tuple[wm.OneshotSender[Any], Any]:
    tx, rx = wm.oneshot(tp)
    if kind == "port":
        tx, rx = convert_sender(tx, tp), convert_receiver(rx, tp)
    return tx, rx


async def parked(rx: wm.OneshotReceiver[Any]) -> asyncio.Task[Any]:
    """A task waiting inside ``await rx`` when this returns (i.e. rx was polled)."""
    started = asyncio.Event()

    async def body() -> Any:
        started.set()
        return await rx

    task = asyncio.create_task(body())
    await started.wait()
    assert not task.done()
    return task


@contextmanager
def refcounting_only() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- §9 by name


def test_oneshot(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(str)
        sender.send("test")
        assert await receiver == "test"

    arun(main())


def test_oneshot_convert_sender_port(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(str)
        sender = convert_sender(sender, str)
        sender.send("test")
        assert await receiver == "test"

    arun(main())


def test_oneshot_convert_receiver_port(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(str)
        receiver = convert_receiver(receiver, str)
        sender.send("test")
        assert await receiver == "test"

    arun(main())


def test_oneshot_convert_receiver_port_after_send(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(str)
        sender.send("test")
        receiver = convert_receiver(receiver, str)
        assert await receiver == "test"

    arun(main())


def test_oneshot_convert_both(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(str)
        sender = convert_sender(sender, str)
        receiver = convert_receiver(receiver, str)
        sender.send("test")
        assert await receiver == "test"

    arun(main())


def test_oneshot_convert_both_poll_first(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(str)
        poll = await parked(receiver)  # the receiver has been polled once
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
        sender = convert_sender(sender, str)
        receiver = convert_receiver(receiver, str)
        sender.send("test")
        assert await asyncio.wait_for(receiver.recv(), 5) == "test"

    arun(main())


def test_oneshot_convert_both_poll_first_blocking() -> None:
    sender, receiver = wm.oneshot(str)
    with pytest.raises(TimeoutError):
        receiver.recv_blocking(timeout=0)  # a poll that leaves a waiter behind
    sender = convert_sender(sender, str)
    receiver = convert_receiver(receiver, str)
    sender.send("test")
    assert receiver.recv_blocking(timeout=5) == "test"


def test_oneshot_message_corruption(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(int)
        waiting = await parked(receiver)
        sender = convert_sender(sender, str)
        sender.send("text")
        with pytest.raises(wm.ChannelFailed) as info:
            await asyncio.wait_for(waiting, 5)  # the waiter is woken
        assert info.value.kind is wm.ChannelErrorKind.CORRUPTION

    arun(main())


def test_oneshot_extra_messages(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(int)
        port = oneshot_sender_to_port(sender)
        port.send(codec_for(int).encode(1))
        port.send(codec_for(int).encode(2))
        with pytest.raises(wm.ChannelFailed):
            await asyncio.wait_for(receiver.recv(), 5)

    arun(main())


def test_oneshot_extra_messages_wake_a_waiter(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(int)
        waiting = await parked(receiver)
        port = oneshot_sender_to_port(sender)
        port.send(codec_for(int).encode(1))
        port.send(codec_for(int).encode(2))
        # Either the first value or the failure, never a hang; the spec says failure.
        with pytest.raises(wm.ChannelFailed):
            await asyncio.wait_for(waiting, 5)

    arun(main())


def test_oneshot_extra_messages_close_the_discarded_values_endpoints() -> None:
    sender, receiver = wm.oneshot()
    port = oneshot_sender_to_port(sender)
    inner_send, inner_recv = wm.channel(int)
    port.send(codec_for(object).encode(inner_recv))  # the first value carries a receiver
    port.send(codec_for(object).encode(2))
    with pytest.raises(wm.ChannelFailed):
        receiver.recv_blocking(timeout=5)
    # The first value was discarded, so the receiver inside it must be closed.
    assert inner_send.is_closed()


def test_oneshot_closed(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.oneshot(int)
        del sender
        with pytest.raises(wm.ChannelClosed):
            await receiver

    arun(main())


# --------------------------------------------------------------------------- §1.4 rules


@pytest.mark.parametrize("kind", ["local", "port"])
@pytest.mark.parametrize("how", ["close", "del"])
def test_sender_gone_without_sending_wakes_a_waiter(arun: Run, kind: str, how: str) -> None:
    async def main() -> None:
        sender, receiver = make_oneshot(kind, int)
        waiting = await parked(receiver)
        holder = [sender]
        del sender
        with refcounting_only():
            if how == "close":
                holder.pop().close()
            else:
                holder.clear()
            with pytest.raises(wm.ChannelClosed):
                await asyncio.wait_for(waiting, 5)

    arun(main())


@pytest.mark.parametrize("kind", ["local", "port"])
def test_second_send_raises(kind: str) -> None:
    sender, receiver = make_oneshot(kind, int)
    sender.send(1)
    with pytest.raises(RuntimeError):
        sender.send(2)
    assert receiver.recv_blocking(timeout=5) == 1


@pytest.mark.parametrize("kind", ["local", "port"])
def test_sender_is_closed(kind: str) -> None:
    sender, receiver = make_oneshot(kind, int)
    assert not sender.is_closed()
    receiver.close()
    assert sender.is_closed()
    sender.send(1)  # silently discarded


@pytest.mark.parametrize("kind", ["local", "port"])
def test_value_sent_to_a_gone_receiver_is_destroyed(kind: str) -> None:
    sender, receiver = make_oneshot(kind)
    del receiver
    inner_send, inner_recv = wm.channel(int)
    holder = [inner_recv]
    del inner_recv
    with refcounting_only():
        sender.send(holder.pop())
        assert inner_send.is_closed()


@pytest.mark.parametrize("kind", ["local", "port"])
def test_unread_value_is_destroyed_with_the_receiver(kind: str) -> None:
    sender, receiver = make_oneshot(kind)
    inner_send, inner_recv = wm.channel(int)
    sender.send(inner_recv)
    del inner_recv
    assert not inner_send.is_closed()
    holder = [receiver]
    del receiver
    with refcounting_only():
        holder.clear()
        assert inner_send.is_closed()


def test_close_after_value_keeps_the_value() -> None:
    a, b = local_node().new_pair()
    receiver = oneshot_receiver_from_port(b, int)
    a.send(codec_for(int).encode(5))
    a.close()
    assert receiver.recv_blocking(timeout=5) == 5


def test_failure_after_value_drops_the_value() -> None:
    a, b = local_node().new_pair()
    receiver = oneshot_receiver_from_port(b, int)
    a.send(codec_for(int).encode(5))
    a.fail(wm.NodeError("x"))
    with pytest.raises(wm.ChannelFailed) as info:
        receiver.recv_blocking(timeout=5)
    assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE


def test_failure_after_value_closes_the_values_endpoints() -> None:
    a, b = local_node().new_pair()
    receiver = oneshot_receiver_from_port(b)
    inner_send, inner_recv = wm.channel(int)
    a.send(codec_for(object).encode(inner_recv))
    a.fail(wm.NodeError("x"))
    with pytest.raises(wm.ChannelFailed):
        receiver.recv_blocking(timeout=5)
    assert inner_send.is_closed()


def test_convert_receiver_port_after_close() -> None:
    sender, receiver = wm.oneshot(int)
    sender.close()
    receiver = convert_receiver(receiver, int)
    with pytest.raises(wm.ChannelClosed):
        receiver.recv_blocking(timeout=5)


def test_convert_receiver_port_after_failure() -> None:
    a, b = local_node().new_pair()
    receiver = oneshot_receiver_from_port(b, int)
    a.fail(wm.NodeError("x"))
    receiver = convert_receiver(receiver, int)
    with pytest.raises(wm.ChannelFailed) as info:
        receiver.recv_blocking(timeout=5)
    assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE


def test_convert_sender_port_after_receiver_gone() -> None:
    sender, receiver = wm.oneshot(int)
    receiver.close()
    sender = convert_sender(sender, int)
    assert sender.is_closed()
    sender.send(1)  # discarded


def test_failure_before_value(arun: Run) -> None:
    async def main() -> None:
        a, b = local_node().new_pair()
        receiver = oneshot_receiver_from_port(b, int)
        waiting = await parked(receiver)
        a.fail(wm.NodeError("x"))
        with pytest.raises(wm.ChannelFailed) as info:
            await asyncio.wait_for(waiting, 5)
        assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
        assert isinstance(info.value.__cause__, wm.NodeError)

    arun(main())


@pytest.mark.parametrize("kind", ["local", "port"])
def test_recv_blocking_timeout(kind: str) -> None:
    sender, receiver = make_oneshot(kind, int)
    with pytest.raises(TimeoutError):
        receiver.recv_blocking(timeout=0.01)
    sender.send(3)
    assert receiver.recv_blocking(timeout=0.01) == 3


@pytest.mark.parametrize("kind", ["local", "port"])
@pytest.mark.parametrize("order", ["cancel_only", "send_then_cancel", "cancel_then_send"])
def test_cancelled_await_loses_nothing(arun: Run, kind: str, order: str) -> None:
    async def main() -> None:
        sender, receiver = make_oneshot(kind, int)
        waiting = await parked(receiver)
        if order == "send_then_cancel":
            sender.send(1)
        waiting.cancel()
        if order != "send_then_cancel":
            sender.send(1)
        try:
            got = await waiting
        except asyncio.CancelledError:
            got = await asyncio.wait_for(receiver.recv(), 5)
        assert got == 1

    arun(main())


def test_unencodable_value_on_port_sender_raises_and_leaves_it_usable() -> None:
    sender, receiver = make_oneshot("port")
    inner_send, inner_recv = wm.channel(int)
    with pytest.raises(wm.PayloadError):
        sender.send((inner_recv, object()))
    inner_send.send(1)
    assert inner_recv.try_recv() == 1
    sender.send(2)
    assert receiver.recv_blocking(timeout=5) == 2


def test_oneshot_endpoints_travel_inside_messages() -> None:
    send, recv = wm.channel(wm.OneshotSender[int])
    send = sender_from_port(sender_to_port(send), wm.OneshotSender[int])  # encodes
    tx, rx = wm.oneshot(int)
    send.send(tx)
    moved = recv.try_recv()
    assert isinstance(moved, wm.OneshotSender)
    moved.send(8)
    assert rx.recv_blocking(timeout=5) == 8


def test_receiver_holding_unencodable_value_fails_the_send_cleanly() -> None:
    carrier, carried = wm.channel()
    carrier = sender_from_port(sender_to_port(carrier), object)  # encodes what it sends
    tx, rx = wm.oneshot()
    value = object()
    tx.send(value)  # local: kept by reference, cannot be encoded
    other_send, other_recv = wm.channel(int)
    message = (other_recv, rx)
    with pytest.raises(wm.PayloadError):
        carrier.send(message)
    del message
    # Nothing was consumed: the value is still there, and so is the other endpoint.
    assert rx.recv_blocking(timeout=1) is value
    other_send.send(1)
    assert other_recv.try_recv() == 1
    with pytest.raises(wm.ChannelEmpty):
        carried.try_recv()
