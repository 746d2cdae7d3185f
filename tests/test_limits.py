"""Limits and forged addresses: what one peer may make this process hold.

Each test connects a node to a *raw* peer -- a bare socket the test writes frames
into, as a broken or hostile process would -- and checks that crossing a limit cuts
that peer off with an error naming the limit, while a well-behaved peer of the same
node goes on working.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import workmesh as wm
from tests.test_transport import Inbox as TransportInbox
from workmesh import Limits, NodeError
from workmesh._frames import FailPortFrame, Frame, MessageFrame, PortRecord
from workmesh._ids import NodeId, PortId, new_node_id, new_port_id, node_name, port_name
from workmesh._node import LocalNode
from workmesh._transport import Connection, IoLoop
from workmesh._wire import Payload, encode_frame, frame_prefix

pytestmark = pytest.mark.timeout(30)


class Inbox(TransportInbox):
    """A port handler that holds on to what arrives until the test takes it."""

    def take(self) -> None:
        """Consume everything received so far (the application read it)."""
        with self._cond:
            self.items.clear()


class RawPeer:
    """A node and a raw socket posing as its peer, with one port between them."""

    def __init__(self, io: IoLoop, node: LocalNode, limits: Limits | None = None) -> None:
        self.io = io
        self.node = node
        self.peer_id: NodeId = new_node_id()
        self.raw, theirs = socket.socketpair()
        self.cut = threading.Event()
        self.conn = Connection(
            io, node, self.peer_id, theirs, limits=limits, on_closed=lambda c, e: self.cut.set()
        )
        io.call_sync(self.conn.start)
        self.port_id: PortId = new_port_id()
        self.port = node.bootstrap_port(self.port_id, (self.peer_id, new_port_id()))
        self.inbox = Inbox()
        self.port.set_handler(self.inbox)
        self.seq = 0

    def send(self, frame: Frame) -> None:
        data = encode_frame(frame)
        self.raw.sendall(frame_prefix(len(data)) + data)

    def message(self, data: bytes, resources: list[PortRecord] | None = None) -> None:
        self.seq += 1
        self.send(MessageFrame(self.port_id, self.seq, False, data, resources or []))

    def close(self) -> None:
        self.raw.close()
        assert self.cut.wait(10)


class GoodPair:
    """Two nodes over a real connection: the peer that must keep working."""

    def __init__(self, io: IoLoop, node: LocalNode) -> None:
        other = LocalNode()
        sa, sb = socket.socketpair()
        self.conns = [Connection(io, node, other.id, sa), Connection(io, other, node.id, sb)]
        for conn in self.conns:
            io.call_sync(conn.start)
        here, there = new_port_id(), new_port_id()
        self.mine = node.bootstrap_port(here, (other.id, there))
        self.theirs = other.bootstrap_port(there, (node.id, here))
        self.io = io

    def still_works(self) -> None:
        inbox = Inbox()
        self.mine.set_handler(inbox)
        self.theirs.send(Payload(b"still here"))
        assert inbox.wait_for(1)[0].data == b"still here"

    def close(self) -> None:
        for conn in self.conns:
            self.io.call_sync(lambda c=conn: c.close(None))


@pytest.fixture
def io() -> Iterator[IoLoop]:
    loop = IoLoop("test-limits")
    yield loop
    loop.stop()


def _record() -> PortRecord:
    """A well-formed port record whose peer lives on a node nobody knows."""
    return PortRecord(new_port_id(), 1, new_node_id(), new_port_id(), new_node_id(), new_port_id())


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_ports must be a positive int, got 0"):
        Limits(max_ports=0)
    with pytest.raises(ValueError, match="max_frame must be a positive int, got '1'"):
        Limits(max_frame="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32-bit frame header"):
        Limits(max_frame=1 << 32)
    with pytest.raises(ValueError, match="16-bit frame header"):
        Limits(max_fds=1 << 16)
    assert Limits().max_ports >= 64


def test_a_forged_port_id_gets_nothing_and_cuts_the_peer_off(io: IoLoop) -> None:
    node = LocalNode()
    good = GoodPair(io, node)
    forger = RawPeer(io, node)
    guessed = new_port_id()
    forger.send(MessageFrame(guessed, 1, False, b"let me in", []))
    assert forger.cut.wait(10)
    assert "never handed out" in str(forger.conn.error)
    assert port_name(guessed) in str(forger.conn.error)
    # The port the forger was handed fails (its node is cut off), nothing arrived.
    assert forger.inbox.closed.wait(10)
    assert forger.inbox.items == []
    assert "connection failed" in str(forger.inbox.failed)
    good.still_works()
    good.close()
    forger.raw.close()


def test_a_late_frame_for_a_failed_port_is_dropped_not_punished(io: IoLoop) -> None:
    node = LocalNode()
    peer = RawPeer(io, node)
    # The port fails here (say, a message out of order) while the peer keeps talking.
    node.fail(peer.port, NodeError("test failure"))
    assert peer.inbox.closed.wait(10)
    peer.message(b"late")
    # A frame for a port this node *does* have after it must still be accepted.
    second = node.bootstrap_port(new_port_id(), (peer.peer_id, new_port_id()))
    inbox = Inbox()
    second.set_handler(inbox)
    peer.send(MessageFrame(second.id, 1, False, b"after", []))
    assert inbox.wait_for(1)[0].data == b"after"
    assert not peer.cut.is_set()
    peer.close()


def test_too_many_ports_in_one_message_cuts(io: IoLoop) -> None:
    node = LocalNode()
    good = GoodPair(io, node)
    peer = RawPeer(io, node, Limits(max_ports=2))
    peer.message(b"two", [_record(), _record()])
    assert [p.data for p in peer.inbox.wait_for(1)] == [b"two"]
    peer.inbox.take()
    peer.message(b"three", [_record(), _record(), _record()])
    assert peer.cut.wait(10)
    assert "carries 3 ports, above the limit of 2 per message" in str(peer.conn.error)
    assert peer.inbox.items == []
    good.still_works()
    good.close()
    peer.raw.close()


def test_unread_bytes_above_the_limit_cut(io: IoLoop) -> None:
    node = LocalNode()
    good = GoodPair(io, node)
    peer = RawPeer(io, node, Limits(max_pending_bytes=1000))
    peer.message(b"x" * 400)
    peer.message(b"x" * 400)
    assert len(peer.inbox.wait_for(2)) == 2  # 800 bytes wait: within the limit
    assert not peer.cut.is_set()
    peer.message(b"x" * 400)
    assert peer.cut.wait(10)
    assert "1200 bytes that wait unread here" in str(peer.conn.error)
    assert "limit of 1000 pending bytes" in str(peer.conn.error)
    good.still_works()
    good.close()
    peer.raw.close()


def test_bytes_read_by_the_application_no_longer_count(io: IoLoop) -> None:
    node = LocalNode()
    peer = RawPeer(io, node, Limits(max_pending_bytes=1000))
    for i in range(20):  # 8000 bytes in all, never more than 400 unread at once
        peer.message(b"x" * 400)
        assert len(peer.inbox.wait_for(1)) == 1, i
        peer.inbox.take()
    peer.message(b"x" * 400)
    peer.message(b"x" * 400)
    assert len(peer.inbox.wait_for(2)) == 2
    assert not peer.cut.is_set()
    peer.close()


def test_a_frame_above_max_frame_cuts(io: IoLoop) -> None:
    node = LocalNode()
    peer = RawPeer(io, node, Limits(max_frame=100))
    peer.message(b"x" * 40)
    assert peer.inbox.wait_for(1)
    peer.message(b"x" * 100)
    assert peer.cut.wait(10)
    assert "exceeds the limit of 100" in str(peer.conn.error)
    peer.raw.close()


def test_good_frames_before_an_oversized_one_in_the_same_read_still_arrive(
    io: IoLoop,
) -> None:
    node = LocalNode()
    peer = RawPeer(io, node, Limits(max_frame=100))
    last_words = encode_frame(MessageFrame(peer.port_id, 1, False, b"ready", []))
    peer.raw.sendall(frame_prefix(len(last_words)) + last_words + frame_prefix(500))
    assert [p.data for p in peer.inbox.wait_for(1)] == [b"ready"]
    assert peer.cut.wait(10)
    assert "exceeds the limit of 100" in str(peer.conn.error)
    assert "connection failed: frame of 500 bytes" in str(peer.inbox.failed)
    peer.raw.close()


def test_a_failure_notice_for_an_unknown_port_is_a_forgery_too(io: IoLoop) -> None:
    node = LocalNode()
    peer = RawPeer(io, node)
    peer.send(FailPortFrame(new_port_id(), peer.peer_id))
    assert peer.cut.wait(10)
    assert "never handed out" in str(peer.conn.error)
    assert peer.inbox.closed.wait(10)
    peer.raw.close()


# ---------------------------------------------------------------------------- processes
FORGER = "tests.helpers.forger"


@pytest.mark.timeout(60)
def test_a_child_that_forges_port_ids_is_cut_off(arun: Any) -> None:
    from tests.helpers.children import EchoParams  # noqa: PLC0415
    from tests.helpers.forger import ForgerParams  # noqa: PLC0415

    async def main() -> None:
        async with wm.Mesh("forgery") as mesh:
            # An honest child, to show the others are unaffected.
            req_tx, req_rx = wm.channel(str)
            rep_tx, rep_rx = wm.channel(str)
            await mesh.spawn("honest", "tests.helpers.children:echo", EchoParams(req_rx, rep_tx))
            said_tx, said_rx = wm.channel(str)
            hold_tx, hold_rx = wm.channel(str)
            forger = await mesh.spawn("forger", f"{FORGER}:forge", ForgerParams(said_tx, hold_rx))
            assert await said_rx.recv() == "hello, honestly"
            with pytest.raises(wm.ChannelFailed) as failed:
                await said_rx.recv()
            assert failed.value.kind is wm.ChannelErrorKind.NODE_FAILURE
            text = _chain(failed.value)
            assert "never handed out" in text, text
            assert node_name(forger.node_id) in text, text
            hold_tx.send("never delivered")
            # The forger's own receive failed too, so its entry ends; its status is
            # there to read, and the honest child still answers.
            assert await forger.wait() == 0
            req_tx.send("ping")
            assert await rep_rx.recv() == "ping"

    arun(main())


def _chain(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return " | ".join(parts)


def test_a_moved_port_claiming_a_peer_here_that_never_was_cuts(io: IoLoop) -> None:
    node = LocalNode()
    peer = RawPeer(io, node)
    made_up = new_port_id()
    record = PortRecord(new_port_id(), 1, peer.peer_id, new_port_id(), node.id, made_up)
    peer.message(b"a port", [record])
    assert peer.cut.wait(10)
    assert f"whose peer would be {port_name(made_up)} here" in str(peer.conn.error)
    assert peer.inbox.items == []
    peer.raw.close()
