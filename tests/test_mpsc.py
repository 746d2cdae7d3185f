"""Conformance of ``wm.channel`` (mpsc): mesh-semantics §1.1, §1.2, §1.3, §1.7, §1.11, §9.

The first block ports mesh_channel_core::mpsc and mesh_channel's tests by name.
``Port::from(x)`` / ``T::from(port)`` are the internal promotion helpers of
``workmesh._channel._mpsc``; encoding a message that carries an endpoint with
``codec_for(T)`` promotes it the way a send to another process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest

import workmesh as wm
from workmesh._channel._mpsc import (
    receiver_from_port,
    receiver_to_port,
    sender_from_port,
    sender_to_port,
)
from workmesh._node import local_node
from workmesh._wire import codec_for
from workmesh.testing import MemoryNetwork

pytestmark = pytest.mark.timeout(20)

Run = Callable[[Any], Any]


class Point(msgspec.Struct, array_like=True):
    x: int
    y: int


def promoted(tp: Any = object) -> tuple[wm.Sender[Any], wm.Receiver[Any]]:
    """A channel whose both ends went through ports (encoded on every send)."""
    send, recv = wm.channel(tp)
    return sender_from_port(sender_to_port(send), tp), receiver_from_port(
        receiver_to_port(recv), tp
    )


def make_channel(kind: str, tp: Any = object) -> tuple[wm.Sender[Any], wm.Receiver[Any]]:
    return wm.channel(tp) if kind == "local" else promoted(tp)


def roundtrip(value: Any, tp: Any) -> Any:
    """Encode and decode ``value`` as ``tp``, as a trip to another process would."""
    codec = codec_for(tp)
    return codec.decode(codec.encode(value))


@contextmanager
def refcounting_only() -> Iterator[None]:
    """Prove that reference counting alone closes endpoints: no cycle collector runs."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def end_endpoint(how: str, holder: list[Any]) -> None:
    """Close the only reference to an endpoint in ``holder`` by ``how``."""
    endpoint = holder.pop()
    if how == "close":
        endpoint.close()
    elif how == "context":
        with endpoint:
            pass
    else:
        del endpoint  # the last reference: __del__ must close it


async def parked_recv(recv: wm.Receiver[Any]) -> asyncio.Task[Any]:
    """A task that is waiting inside ``recv.recv()`` when this returns."""
    started = asyncio.Event()

    async def body() -> Any:
        started.set()
        return await recv.recv()  # runs up to its first suspension before we resume

    task = asyncio.create_task(body())
    await started.wait()
    assert not task.done()
    return task


# --------------------------------------------------------------------------- §9 by name


def test_basic(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.channel(str)
        sender.send("test")
        assert await receiver.recv() == "test"
        del sender
        with pytest.raises(wm.ChannelClosed):
            await receiver.recv()

    arun(main())


def test_convert_sender_port(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.channel(str)
        sender = sender_from_port(sender_to_port(sender), str)
        sender.send("test")
        assert await receiver.recv() == "test"
        del sender
        with pytest.raises(wm.ChannelClosed):
            await receiver.recv()

    arun(main())


def test_convert_receiver_port(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.channel(str)
        receiver = receiver_from_port(receiver_to_port(receiver), str)
        sender.send("test")
        assert await receiver.recv() == "test"
        del sender
        with pytest.raises(wm.ChannelClosed):
            await receiver.recv()

    arun(main())


def test_non_port_and_port_sender(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.channel(str)
        sender2 = sender_from_port(sender_to_port(sender.clone()), str)
        sender.send("test")
        sender2.send("tset")
        assert await receiver.recv() == "test"
        assert await receiver.recv() == "tset"
        del sender
        del sender2
        with pytest.raises(wm.ChannelClosed):
            await receiver.recv()

    arun(main())


def test_port_receiver_with_senders_and_messages(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.channel(str)
        sender2 = sender_from_port(sender_to_port(sender.clone()), str)
        sender.send("test")
        sender2.send("tset")
        receiver = receiver_from_port(receiver_to_port(receiver), str)
        assert await receiver.recv() == "test"
        assert await receiver.recv() == "tset"
        sender.send("after")  # the local sender now sends through the port
        assert await receiver.recv() == "after"
        del sender
        del sender2
        with pytest.raises(wm.ChannelClosed):
            await receiver.recv()

    arun(main())


def test_message_corruption(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.channel(str)
        receiver = receiver_from_port(receiver_to_port(receiver), int)
        sender.send("text")
        with pytest.raises(wm.ChannelFailed) as info:
            await receiver.recv()
        assert info.value.kind is wm.ChannelErrorKind.CORRUPTION
        assert receiver.is_terminated()
        # The offending port is failed, which the sending side sees as closed.
        assert sender.is_closed()

    arun(main())


def test_tuple_of_strings_through_port() -> None:
    # mesh_channel `test`: a tuple of strings crosses a port intact.
    sender, receiver = promoted(tuple[str, str])
    sender.send(("abc", "def"))
    assert receiver.try_recv() == ("abc", "def")


def test_send_port(arun: Run) -> None:
    async def main() -> None:
        outer_send, outer_recv = promoted(wm.Receiver[int])
        inner_send, inner_recv = wm.channel(int)
        inner_send.send(1)  # queued before the receiver moves
        outer_send.send(inner_recv)
        inner_send.send(2)  # while the receiver is in flight
        moved = await outer_recv.recv()
        assert isinstance(moved, wm.Receiver)
        inner_send.send(3)
        assert [await moved.recv() for _ in range(3)] == [1, 2, 3]
        inner_send.close()
        with pytest.raises(wm.ChannelClosed):
            await moved.recv()

    arun(main())


def test_send_port_on_local_channel_moves_the_object() -> None:
    outer_send, outer_recv = wm.channel()
    inner_send, inner_recv = wm.channel(int)
    outer_send.send(inner_recv)
    assert outer_recv.try_recv() is inner_recv  # passed by reference, not promoted
    inner_send.send(4)
    assert inner_recv.try_recv() == 4


def test_mpsc(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = wm.channel(int)
        sender2 = roundtrip(sender.clone(), wm.Sender[int])
        assert isinstance(sender2, wm.Sender)
        sender.send(5)
        sender2.send(6)
        del sender
        del sender2
        # No order is defined between different senders.
        assert sorted([await receiver.recv(), await receiver.recv()]) == [5, 6]
        with pytest.raises(wm.ChannelClosed):
            await receiver.recv()

    arun(main())


@pytest.mark.parametrize("kind", ["local", "port"])
def test_mpsc_again(kind: str) -> None:
    sender, receiver = make_channel(kind, int)
    del receiver
    sender.send(5)  # harmless: dropped
    sender.send(6)
    assert sender.is_closed()


# --------------------------------------------------------------------------- §1.7 type changes


def test_change_sender_types() -> None:
    sender, receiver = wm.channel(Point)
    retyped = sender_from_port(sender_to_port(sender), tuple[int, int])
    retyped.send((1, 2))
    got = receiver.try_recv()
    assert type(got) is Point
    assert got == Point(1, 2)


def test_change_receiver_types() -> None:
    sender, receiver = wm.channel(tuple[int, int])
    retyped = receiver_from_port(receiver_to_port(receiver), Point)
    sender.send((3, 4))
    got = retyped.try_recv()
    assert type(got) is Point
    assert got == Point(3, 4)


def test_change_both_types() -> None:
    sender, receiver = wm.channel(str)
    tuple_send = sender_from_port(sender_to_port(sender), tuple[int, int])
    point_recv = receiver_from_port(receiver_to_port(receiver), Point)
    tuple_send.send((5, 6))
    got = point_recv.try_recv()
    assert type(got) is Point
    assert got == Point(5, 6)


def test_change_int_to_float() -> None:
    # The u32 -> u64 case: a wider numeric type decodes what a narrower one sent.
    sender, receiver = wm.channel(int)
    float_recv = receiver_from_port(receiver_to_port(receiver), float)
    sender.send(5)
    got = float_recv.try_recv()
    assert type(got) is float
    assert got == 5.0


def test_change_to_generic_receiver() -> None:
    # test_change_from_generic, receiving side: a typed message read as wm.Message.
    sender, receiver = wm.channel(wm.Message)
    typed = sender_from_port(sender_to_port(sender), Point)
    typed.send(Point(1, 2))
    got = receiver.try_recv()
    assert isinstance(got, wm.Message)
    assert got.parse(Point) == Point(1, 2)


def test_change_from_generic_sender() -> None:
    # test_change_from_generic, sending side: wm.Message <-> any type (§1.7), so a
    # generic sender feeding a typed receiver delivers the typed value.
    sender, receiver = wm.channel(Point)
    generic = sender_from_port(sender_to_port(sender), wm.Message)
    generic.send(wm.Message(Point(1, 2)))
    got = receiver.try_recv()
    assert type(got) is Point
    assert got == Point(1, 2)


def test_change_to_incompatible_type_is_corruption() -> None:
    sender, receiver = wm.channel(int)
    retyped = sender_from_port(sender_to_port(sender), Point)
    retyped.send(Point(1, 2))
    with pytest.raises(wm.ChannelFailed) as info:
        receiver.try_recv()
    assert info.value.kind is wm.ChannelErrorKind.CORRUPTION


# --------------------------------------------------------------------------- §1.2 promotion


def test_serialized_clone_of_a_port_backed_sender() -> None:
    # Not the sole owner of a port-backed queue: a new port travels to the receiver
    # as an attach control message through the existing port.
    sender, receiver = promoted(int)
    clone = roundtrip(sender.clone(), wm.Sender[int])
    clone.send(1)
    sender.send(2)
    assert sorted([receiver.try_recv(), receiver.try_recv()]) == [1, 2]
    sender.close()
    clone.send(3)
    assert receiver.try_recv() == 3
    clone.close()
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()


def test_serialized_sole_sender_of_a_gone_receiver_is_closed() -> None:
    sender, receiver = wm.channel(int)
    receiver.close()
    moved = roundtrip(sender, wm.Sender[int])
    assert moved.is_closed()
    moved.send(1)  # dropped


def test_serialized_sender_keeps_the_channel_open() -> None:
    sender, receiver = wm.channel(int)
    moved = roundtrip(sender, wm.Sender[int])  # the only sender, now a port
    with pytest.raises(wm.ChannelEmpty):
        receiver.try_recv()
    moved.send(1)
    assert receiver.try_recv() == 1
    del moved
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()


def test_local_sender_sees_a_promoted_receiver_close() -> None:
    sender, receiver = wm.channel(int)
    moved = receiver_from_port(receiver_to_port(receiver), int)
    assert not sender.is_closed()
    moved.close()
    assert sender.is_closed()


def test_close_is_idempotent() -> None:
    sender, receiver = wm.channel(int)
    sender.close()
    sender.close()
    with sender:
        pass
    receiver.close()
    receiver.close()
    assert sender.is_closed()


# --------------------------------------------------------------------------- §1.2 ordering


@pytest.mark.parametrize("kind", ["local", "port"])
def test_fifo_per_sender(kind: str) -> None:
    sender, receiver = make_channel(kind, int)
    clone = sender.clone()
    for i in range(500):
        (sender if i % 2 else clone).send(i)  # clones share one queue: send-call order
    assert [receiver.try_recv() for _ in range(500)] == list(range(500))


def test_fifo_per_serialized_sender() -> None:
    sender, receiver = wm.channel(tuple[str, int])
    a = roundtrip(sender.clone(), wm.Sender[tuple[str, int]])
    b = roundtrip(sender.clone(), wm.Sender[tuple[str, int]])
    for i in range(200):
        a.send(("a", i))
        sender.send(("local", i))
        b.send(("b", i))
    got = [receiver.try_recv() for _ in range(600)]
    for name in ("a", "local", "b"):
        assert [i for who, i in got if who == name] == list(range(200))


# --------------------------------------------------------------------------- §1.2 failure rule


def test_failed_last_source_raises_channel_failed_after_its_messages() -> None:
    sender, receiver = wm.channel(int)
    port = sender_to_port(sender)  # the port is now the channel's only source
    far = sender_from_port(port, int)
    far.send(1)
    port.fail(wm.NodeError("x"))
    assert receiver.try_recv() == 1  # what arrived before the failure is delivered
    with pytest.raises(wm.ChannelFailed) as info:
        receiver.try_recv()
    assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
    assert isinstance(info.value.__cause__, wm.NodeError)
    assert receiver.is_terminated()
    assert far.is_closed()


def test_failed_port_with_a_local_sender_left_ends_closed() -> None:
    sender, receiver = wm.channel(int)
    port = sender_to_port(sender.clone())
    port.fail(wm.NodeError("x"))
    sender.send(2)
    assert receiver.try_recv() == 2
    with pytest.raises(wm.ChannelEmpty):
        receiver.try_recv()
    assert not receiver.is_terminated()
    sender.close()
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()
    assert receiver.is_terminated()


def test_failed_port_with_messages_queued_behind_it_ends_closed() -> None:
    sender, receiver = wm.channel(int)
    failing_port = sender_to_port(sender.clone())
    failing = sender_from_port(failing_port, int)
    other = sender_from_port(sender_to_port(sender), int)  # no local sender left
    failing.send(1)
    failing_port.fail(wm.NodeError("x"))
    other.send(2)
    other.close()
    assert receiver.try_recv() == 1
    assert receiver.try_recv() == 2
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()


def test_failed_port_with_another_port_sender_alive_is_not_reported() -> None:
    sender, receiver = wm.channel(int)
    failing_port = sender_to_port(sender.clone())
    other = sender_from_port(sender_to_port(sender), int)
    failing_port.fail(wm.NodeError("x"))
    with pytest.raises(wm.ChannelEmpty):
        receiver.try_recv()
    other.send(3)
    assert receiver.try_recv() == 3
    del other
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()


# --------------------------------------------------------------------------- §1.2 receiver state


def test_sender_reopens_after_closed() -> None:
    sender, receiver = wm.channel(int)
    sender.close()
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()
    assert receiver.is_terminated()
    again = receiver.sender()
    assert not receiver.is_terminated()
    again.send(7)
    assert receiver.try_recv() == 7
    again.close()
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()


def test_is_terminated_states() -> None:
    sender, receiver = wm.channel(int)
    assert not receiver.is_terminated()
    sender.send(1)
    sender.close()
    assert not receiver.is_terminated()  # a message is still waiting
    assert receiver.try_recv() == 1
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()
    assert receiver.is_terminated()


def test_sender_is_closed_local() -> None:
    sender, receiver = wm.channel(int)
    clone = sender.clone()
    assert not sender.is_closed()
    assert not clone.is_closed()
    receiver.close()
    assert sender.is_closed()
    assert clone.is_closed()


def test_sender_is_closed_port_backed() -> None:
    sender, receiver = promoted(int)
    assert not sender.is_closed()
    receiver.close()
    assert sender.is_closed()


def test_sender_is_closed_when_its_port_failed() -> None:
    a, b = local_node().new_pair()
    sender = sender_from_port(a, int)
    receiver = receiver_from_port(b, int)
    b.fail(wm.NodeError("x"))
    assert sender.is_closed()  # an error counts as closed
    with pytest.raises(wm.ChannelFailed):
        receiver.try_recv()


# --------------------------------------------------------------------------- §1.2 closing


@pytest.mark.parametrize("kind", ["local", "port"])
@pytest.mark.parametrize("how", ["close", "context", "del"])
def test_ending_the_last_sender_closes_the_channel(kind: str, how: str) -> None:
    sender, receiver = make_channel(kind, int)
    sender.send(1)
    holder = [sender]
    del sender
    with refcounting_only():
        end_endpoint(how, holder)
        assert receiver.try_recv() == 1
        with pytest.raises(wm.ChannelClosed):
            receiver.try_recv()


@pytest.mark.parametrize("kind", ["local", "port"])
@pytest.mark.parametrize("how", ["close", "context", "del"])
def test_ending_the_receiver_closes_the_senders(kind: str, how: str) -> None:
    sender, receiver = make_channel(kind, int)
    holder = [receiver]
    del receiver
    with refcounting_only():
        end_endpoint(how, holder)
        assert sender.is_closed()
        sender.send(1)  # dropped, silently


@pytest.mark.parametrize("kind", ["local", "port"])
def test_dropping_a_clone_keeps_the_channel_open(kind: str) -> None:
    sender, receiver = make_channel(kind, int)
    clone = sender.clone()
    del clone
    sender.send(1)
    assert receiver.try_recv() == 1
    with pytest.raises(wm.ChannelEmpty):
        receiver.try_recv()


@pytest.mark.parametrize("kind", ["local", "port"])
def test_endpoint_sent_to_a_gone_receiver_is_closed(kind: str) -> None:
    sender, receiver = make_channel(kind)
    receiver.close()
    inner_send, inner_recv = wm.channel(int)
    holder = [inner_recv]
    del inner_recv
    with refcounting_only():
        sender.send(holder.pop())
        assert inner_send.is_closed()


@pytest.mark.parametrize("kind", ["local", "port"])
@pytest.mark.parametrize("how", ["close", "del"])
def test_endpoints_queued_in_a_dropped_receiver_are_closed(kind: str, how: str) -> None:
    sender, receiver = make_channel(kind)
    inner_send, inner_recv = wm.channel(int)
    sender.send(inner_recv)
    del inner_recv
    holder = [receiver]
    del receiver
    assert not inner_send.is_closed()
    with refcounting_only():
        end_endpoint(how, holder)
        assert inner_send.is_closed()


# --------------------------------------------------------------------------- receiving


def test_try_recv_empty_value_closed() -> None:
    sender, receiver = wm.channel(int)
    with pytest.raises(wm.ChannelEmpty) as info:
        receiver.try_recv()
    assert isinstance(info.value, wm.RecvError)
    sender.send(1)
    assert receiver.try_recv() == 1
    sender.close()
    with pytest.raises(wm.ChannelClosed):
        receiver.try_recv()


@pytest.mark.parametrize("kind", ["local", "port"])
def test_recv_blocking_timeout(kind: str) -> None:
    sender, receiver = make_channel(kind, int)
    with pytest.raises(TimeoutError):
        receiver.recv_blocking(timeout=0.01)
    sender.send(3)
    assert receiver.recv_blocking(timeout=0.01) == 3
    sender.close()
    with pytest.raises(wm.ChannelClosed):
        receiver.recv_blocking(timeout=5)


@pytest.mark.parametrize("kind", ["local", "port"])
def test_async_for_ends_on_close(arun: Run, kind: str) -> None:
    async def main() -> list[int]:
        sender, receiver = make_channel(kind, int)
        for i in range(3):
            sender.send(i)
        sender.close()
        return [item async for item in receiver]

    assert arun(main()) == [0, 1, 2]


@pytest.mark.parametrize("kind", ["local", "port"])
def test_for_ends_on_close(kind: str) -> None:
    sender, receiver = make_channel(kind, int)
    for i in range(3):
        sender.send(i)
    sender.close()
    assert list(receiver) == [0, 1, 2]


class FailingChannel:
    """A receiver holding two messages from one port sender, whose port can be failed."""

    def __init__(self) -> None:
        a, b = local_node().new_pair()
        self.port = a
        self.sender = sender_from_port(a, int)
        self.receiver = receiver_from_port(b, int)
        self.sender.send(1)
        self.sender.send(2)

    def fail(self) -> None:
        self.port.fail(wm.NodeError("boom"))


def test_async_for_ends_quietly_on_failure(arun: Run) -> None:
    async def main() -> None:
        chan = FailingChannel()
        chan.fail()
        assert [item async for item in chan.receiver] == [1, 2]
        assert chan.receiver.is_terminated()

    arun(main())


@pytest.mark.parametrize("kind", ["local", "port"])
def test_async_for_cancelled_while_waiting_loses_nothing(arun: Run, kind: str) -> None:
    async def main() -> list[int]:
        sender, receiver = make_channel(kind, int)
        got: list[int] = []
        first = asyncio.Event()

        async def iterate() -> None:
            async for value in receiver:
                got.append(value)
                first.set()

        task = asyncio.create_task(iterate())
        sender.send(1)
        await first.wait()  # the iteration has gone on to wait for the next message
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()
        sender.send(2)
        sender.close()
        return got + [value async for value in receiver]

    assert arun(main()) == [1, 2]


def test_for_ends_quietly_on_failure() -> None:
    chan = FailingChannel()
    chan.fail()
    assert list(chan.receiver) == [1, 2]
    assert chan.receiver.is_terminated()


def test_recv_tells_failure_from_close(arun: Run) -> None:
    async def main() -> None:
        chan = FailingChannel()
        assert await chan.receiver.recv() == 1
        assert await chan.receiver.recv() == 2
        waiting = await parked_recv(chan.receiver)
        chan.fail()  # wakes the parked receive
        with pytest.raises(wm.ChannelFailed) as info:
            await asyncio.wait_for(waiting, 5)
        assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE

    arun(main())


@pytest.mark.parametrize("kind", ["local", "port"])
def test_cancelled_recv_loses_nothing(arun: Run, kind: str) -> None:
    async def main() -> None:
        sender, receiver = make_channel(kind, int)
        task = await parked_recv(receiver)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sender.send(1)
        assert await asyncio.wait_for(receiver.recv(), 5) == 1

    arun(main())


@pytest.mark.parametrize("kind", ["local", "port"])
@pytest.mark.parametrize("order", ["send_then_cancel", "cancel_then_send"])
def test_cancel_racing_with_send_loses_nothing(arun: Run, kind: str, order: str) -> None:
    async def main() -> None:
        sender, receiver = make_channel(kind, int)
        got: list[int] = []
        for i in range(50):
            task = await parked_recv(receiver)
            if order == "send_then_cancel":
                sender.send(i)
                task.cancel()
            else:
                task.cancel()
                sender.send(i)
            try:
                got.append(await task)
            except asyncio.CancelledError:
                got.append(await asyncio.wait_for(receiver.recv(), 5))
        assert got == list(range(50))
        with pytest.raises(wm.ChannelEmpty):
            receiver.try_recv()

    arun(main())


def test_recv_wakes_for_a_port_sender(arun: Run) -> None:
    async def main() -> None:
        sender, receiver = promoted(int)
        task = await parked_recv(receiver)
        sender.send(9)
        assert await asyncio.wait_for(task, 5) == 9

    arun(main())


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [object(), lambda: None], ids=["object", "lambda"])
def test_unencodable_value_raises_payload_error_at_send(bad: Any) -> None:
    sender, receiver = promoted()
    with pytest.raises(wm.PayloadError):
        sender.send(bad)
    sender.send(1)  # the channel is unharmed
    assert receiver.try_recv() == 1


def test_unencodable_value_on_local_channel_is_fine() -> None:
    sender, receiver = wm.channel()
    bad = object()
    sender.send(bad)
    assert receiver.try_recv() is bad


def test_endpoints_in_a_message_that_failed_to_encode_stay_usable() -> None:
    sender, receiver = promoted()
    inner_send, inner_recv = wm.channel(int)
    with pytest.raises(wm.PayloadError):
        sender.send((inner_recv, inner_send, object()))
    # Both ends are still local and working.
    inner_send.send(5)
    assert inner_recv.try_recv() == 5
    assert "local" in repr(inner_send)
    # And the same endpoints can still be sent for real.
    sender.send((inner_recv, 1))
    moved, one = receiver.try_recv()
    assert one == 1
    inner_send.send(6)
    assert moved.try_recv() == 6


@pytest.mark.parametrize("order", ["good_first", "bad_first"])
def test_receiver_with_unencodable_queued_data_fails_the_send_cleanly(order: str) -> None:
    # Promoting a receiver re-encodes what it buffered; if that fails, the send fails
    # and no endpoint of the message may have been consumed.
    sender, receiver = promoted()
    good_send, good_recv = wm.channel(int)
    bad_send, bad_recv = wm.channel()
    bad = object()
    bad_send.send(bad)
    message = (good_recv, bad_recv) if order == "good_first" else (bad_recv, good_recv)
    with pytest.raises(wm.PayloadError):
        sender.send(message)
    del message
    good_send.send(1)
    assert good_recv.try_recv() == 1
    assert bad_recv.try_recv() is bad
    with pytest.raises(wm.ChannelEmpty):
        receiver.try_recv()


def test_payload_error_on_encode_says_expected_and_got() -> None:
    sender, _receiver = promoted(int)
    with pytest.raises(wm.PayloadError) as info:
        sender.send(object())
    err = info.value
    assert err.expected == "int"
    assert err.got == "object"
    assert "int" in str(err)
    assert "object" in str(err)


def test_payload_error_on_decode_says_expected_got_and_where() -> None:
    class Holder(msgspec.Struct):
        a: int

    with pytest.raises(wm.PayloadError) as info:
        codec_for(Holder).decode(codec_for(object).encode({"a": "x"}))
    err = info.value
    assert "Expected `int`, got `str`" in str(err)
    assert err.path == "$.a"
    assert "$.a" in str(err)


def test_message_parse_error_says_expected_and_got() -> None:
    with pytest.raises(wm.PayloadError) as info:
        wm.Message("text").parse(int)
    assert "Expected `int`, got `str`" in str(info.value)


def test_corruption_cause_chain_names_the_decode_error() -> None:
    sender, receiver = wm.channel(str)
    receiver = receiver_from_port(receiver_to_port(receiver), int)
    sender.send("text")
    with pytest.raises(wm.ChannelFailed) as info:
        receiver.try_recv()
    causes = []
    link: BaseException | None = info.value
    while link is not None:
        causes.append(link)
        link = link.__cause__
    payload_errors = [c for c in causes if isinstance(c, wm.PayloadError)]
    assert payload_errors, causes
    assert "Expected `int`, got `str`" in str(payload_errors[0])
    assert str(info.value).startswith("channel failure: message corruption")


def test_forged_attach_marker_is_data_not_control() -> None:
    """A value that encodes like the ATTACH control message is not mistaken for it."""
    import msgspec  # noqa: PLC0415 - local to this case

    tx, rx = wm.channel(object)
    far_tx, far_rx = wm.channel(object)
    far_tx.bridge(rx)  # what tx sends now travels through ports to far_rx, encoded
    tx.send(msgspec.msgpack.Ext(127, b"\x00"))
    with pytest.raises(wm.ChannelFailed) as info:
        far_rx.recv_blocking(timeout=5)
    assert info.value.kind is wm.ChannelErrorKind.CORRUPTION


# --------------------------------------------------------------------------------------
# Runs of messages from another node (MessageRun): queued as one item, taken one by one


def _run_into(
    tp: Any, values: list[Any], sent_as: Any = object
) -> tuple[MemoryNetwork, wm.Receiver[Any]]:
    """A receiver on one in-memory node holding ``values`` sent from another node as
    one run (one frame); returns the network and the receiver."""
    net = MemoryNetwork()
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rx = receiver_from_port(b, tp)
    tx = sender_from_port(a, sent_as)
    for value in values:
        tx.send(value)
    assert net.pump() == 1  # one frame: the run
    return net, rx


def test_a_run_is_taken_one_message_at_a_time_by_every_kind_of_receive() -> None:
    _net, rx = _run_into(int, list(range(8)))
    got = [rx.try_recv(), rx.recv_blocking(timeout=5)]

    async def rest() -> list[int]:
        first = await rx.recv()
        more = []
        async for value in rx:
            more.append(value)
            if len(more) == 4:
                break
        return [first, *more]

    got += asyncio.run(rest())
    got.append(rx.try_recv())
    assert got == list(range(8))
    with pytest.raises(wm.ChannelEmpty):
        rx.try_recv()


def test_a_receiver_moved_in_the_middle_of_a_run_forwards_the_rest_in_order() -> None:
    _net, rx = _run_into(int, list(range(6)))
    assert [rx.try_recv(), rx.try_recv()] == [0, 1]
    moved = receiver_from_port(receiver_to_port(rx), int)
    assert [moved.try_recv() for _ in range(4)] == [2, 3, 4, 5]


def test_a_message_of_a_run_that_does_not_decode_fails_the_channel_there() -> None:
    """The messages before it are received; it and the rest of the run are not."""
    _net, rx = _run_into(int, [1, 2, "three", 4])
    assert [rx.try_recv(), rx.try_recv()] == [1, 2]
    with pytest.raises(wm.ChannelFailed) as info:
        rx.try_recv()
    assert info.value.kind is wm.ChannelErrorKind.CORRUPTION
    with pytest.raises(wm.ChannelClosed):  # the rest of the run went with the port
        rx.try_recv()


def test_async_for_stops_at_the_corrupt_message_of_a_run() -> None:
    _net, rx = _run_into(int, [1, 2, "three", 4])

    async def drain() -> list[int]:
        return [value async for value in rx]

    assert asyncio.run(drain()) == [1, 2]


@pytest.mark.parametrize("tp", [bytes, wm.Message])
def test_large_bytes_by_reference_through_ports_in_one_process(tp: Any) -> None:
    """A value sent by reference (see BY_REFERENCE) to a receiver in this process:
    decoded from its pieces, in either build (compiled code once read the joined
    encoding from a slot a spliced payload never sets)."""
    send, recv = promoted(tp)
    blob = bytes(range(256)) * 256  # 64 KiB
    send.send(blob)
    got = recv.try_recv()
    assert (got.parse(bytes) if tp is wm.Message else got) == blob
    send.close()
    recv.close()
