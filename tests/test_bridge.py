"""Bridging channels: mesh-semantics §1.6 (``Sender.bridge`` / ``Receiver.bridge``)."""

from __future__ import annotations

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

pytestmark = pytest.mark.timeout(20)


class Point(msgspec.Struct):
    x: int
    y: int


def drain(receiver: wm.Receiver[Any]) -> list[Any]:
    """Everything queued now; ChannelEmpty ends it (ChannelClosed propagates)."""
    out = []
    while True:
        try:
            out.append(receiver.try_recv())
        except wm.ChannelEmpty:
            return out


def test_bridge_doc_example() -> None:
    outer_send, inner_recv = wm.channel(int)
    inner_send, outer_recv = wm.channel(int)
    outer_send.send(2)
    inner_send.send(1)
    inner_send.bridge(inner_recv)
    assert outer_recv.recv_blocking(timeout=5) == 1
    assert outer_recv.recv_blocking(timeout=5) == 2
    # Later traffic follows, and the close of the last sender reaches the far end.
    outer_send.send(3)
    assert outer_recv.recv_blocking(timeout=5) == 3
    outer_send.close()
    with pytest.raises(wm.ChannelClosed):
        outer_recv.recv_blocking(timeout=5)


def test_receiver_bridge_is_the_same_join() -> None:
    outer_send, inner_recv = wm.channel(int)
    inner_send, outer_recv = wm.channel(int)
    outer_send.send(2)
    inner_send.send(1)
    inner_recv.bridge(inner_send)
    outer_send.send(3)
    del outer_send
    assert [outer_recv.recv_blocking(timeout=5) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(wm.ChannelClosed):
        outer_recv.recv_blocking(timeout=5)


def test_bridge_ordering_abcdefghi() -> None:
    # The channel form of mesh_node's test_bridge: delivered data first, then the
    # consumed receiver's unread data in order, then new traffic.
    outer_send, inner_recv = wm.channel(str)
    inner_send, outer_recv = wm.channel(str)
    inner_send.send("a")
    inner_send.send("b")
    for item in "xycdefgh":
        outer_send.send(item)
    assert inner_recv.try_recv() == "x"
    assert inner_recv.try_recv() == "y"
    inner_send.bridge(inner_recv)
    outer_send.send("i")
    outer_send.close()
    assert "".join(drain_until_closed(outer_recv)) == "abcdefghi"


def drain_until_closed(receiver: wm.Receiver[Any]) -> list[Any]:
    out = []
    while True:
        try:
            out.append(receiver.recv_blocking(timeout=5))
        except wm.ChannelClosed:
            return out


def test_bridge_of_promoted_typed_channels_keeps_types() -> None:
    outer_send, inner_recv = wm.channel(Point)
    inner_send, outer_recv = wm.channel(Point)
    outer_send = sender_from_port(sender_to_port(outer_send), Point)
    outer_recv = receiver_from_port(receiver_to_port(outer_recv), Point)
    outer_send.send(Point(1, 2))
    inner_send.bridge(inner_recv)
    outer_send.send(Point(3, 4))
    got = [outer_recv.recv_blocking(timeout=5) for _ in range(2)]
    assert got == [Point(1, 2), Point(3, 4)]
    assert all(type(p) is Point for p in got)


def test_bridging_a_sender_with_clones_leaves_the_clones_working() -> None:
    outer_send, inner_recv = wm.channel(int)
    inner_send, outer_recv = wm.channel(int)
    clone = inner_send.clone()
    inner_send.bridge(inner_recv)
    outer_send.send(1)
    clone.send(2)
    assert sorted(outer_recv.recv_blocking(timeout=5) for _ in range(2)) == [1, 2]
    outer_send.close()
    with pytest.raises(wm.ChannelEmpty):
        outer_recv.try_recv()  # the clone still holds the channel open
    clone.close()
    with pytest.raises(wm.ChannelClosed):
        outer_recv.recv_blocking(timeout=5)


def test_bridging_a_receiver_whose_senders_are_gone() -> None:
    dead_send, dead_recv = wm.channel(str)
    dead_send.send("x")
    dead_send.send("y")
    dead_send.close()
    out_send, out_recv = wm.channel(str)
    out_send.bridge(dead_recv)
    assert drain_until_closed(out_recv) == ["x", "y"]


def test_bridging_a_sender_whose_receiver_is_gone_closes_the_other_side() -> None:
    in_send, in_recv = wm.channel(int)
    out_send, out_recv = wm.channel(int)
    out_recv.close()
    out_send.bridge(in_recv)
    assert in_send.is_closed()
    in_send.send(1)  # dropped, silently


def test_failure_after_bridge_propagates() -> None:
    a, b = local_node().new_pair()
    remote_send = sender_from_port(a, int)
    bridged_recv = receiver_from_port(b, int)
    out_send, out_recv = wm.channel(int)
    bridged_recv.bridge(out_send)
    remote_send.send(1)
    a.fail(wm.NodeError("x"))
    assert out_recv.recv_blocking(timeout=5) == 1
    with pytest.raises(wm.ChannelFailed) as info:
        out_recv.recv_blocking(timeout=5)
    assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE


def test_failed_end_before_bridge_propagates() -> None:
    a, b = local_node().new_pair()
    bridged_recv = receiver_from_port(b, int)
    a.fail(wm.NodeError("x"))
    out_send, out_recv = wm.channel(int)
    out_send.bridge(bridged_recv)
    with pytest.raises(wm.ChannelFailed) as info:
        out_recv.recv_blocking(timeout=5)
    assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE


def test_failure_of_the_final_receiver_reaches_the_first_senders() -> None:
    first_send, inner_recv = wm.channel(int)
    x, y = local_node().new_pair()
    inner_send = sender_from_port(x, int)  # its receiver is the raw port y
    inner_send.bridge(inner_recv)
    assert not first_send.is_closed()
    y.fail(wm.NodeError("x"))
    assert first_send.is_closed()


def test_close_of_the_final_receiver_reaches_the_first_senders() -> None:
    first_send, inner_recv = wm.channel(int)
    inner_send, final_recv = wm.channel(int)
    inner_send.bridge(inner_recv)
    first_send.send(1)
    assert final_recv.recv_blocking(timeout=5) == 1
    assert not first_send.is_closed()
    final_recv.close()
    assert first_send.is_closed()


def test_bridging_a_channel_with_itself_does_not_crash() -> None:
    send, recv = wm.channel(int)
    send.bridge(recv)  # "circular bridge": both ends fail, nobody hangs or raises


def test_bridge_with_unencodable_queued_data_leaves_both_ends_usable() -> None:
    outer_send, inner_recv = wm.channel()
    inner_send, outer_recv = wm.channel()
    outer_send.send(object())  # cannot be encoded, so the receiver cannot become a port
    with pytest.raises(wm.PayloadError):
        inner_send.bridge(inner_recv)
    # A failed bridge must not have consumed (and leaked) either endpoint.
    inner_send.send(1)
    assert outer_recv.recv_blocking(timeout=1) == 1
    assert type(inner_recv.try_recv()) is object
