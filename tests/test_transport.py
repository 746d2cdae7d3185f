"""The Unix transport: two nodes in one process joined by a real socketpair."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from workmesh import NodeError, OwnedFd
from workmesh._ids import new_port_id
from workmesh._node import LocalNode, Port
from workmesh._transport import Connection, IoLoop
from workmesh._wire import Limits, Payload, frame_prefix

pytestmark = pytest.mark.timeout(30)


class Inbox:
    """A port handler that lets a test wait for what arrives."""

    def __init__(self) -> None:
        self.items: list[Payload] = []
        self.closed = threading.Event()
        self.failed: NodeError | None = None
        self._cond = threading.Condition()

    def port_message(self, port: Port, payload: Payload, wakes: list[object]) -> None:
        with self._cond:
            self.items.append(payload)
            self._cond.notify_all()

    def port_closed(self, port: Port, wakes: list[object]) -> None:
        self.closed.set()

    def port_failed(self, port: Port, error: NodeError, wakes: list[object]) -> None:
        self.failed = error
        self.closed.set()

    def wait_for(self, count: int, timeout: float = 10) -> list[Payload]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= count, timeout)
            return list(self.items)


class Pair:
    def __init__(self, io: IoLoop, secret: bytes = b"") -> None:
        self.io = io
        self.a, self.b = LocalNode(), LocalNode()
        sa, sb = socket.socketpair()
        self.ca = Connection(io, self.a, self.b.id, sa, send_hello=secret)
        self.cb = Connection(io, self.b, self.a.id, sb, expect_hello=secret)
        io.call_sync(self.ca.start)
        io.call_sync(self.cb.start)
        ida, idb = new_port_id(), new_port_id()
        self.pa = self.a.bootstrap_port(ida, (self.b.id, idb))
        self.pb = self.b.bootstrap_port(idb, (self.a.id, ida))

    def close(self) -> None:
        self.io.call_sync(lambda: self.ca.close(None))
        self.io.call_sync(lambda: self.cb.close(None))


@pytest.fixture
def io() -> Iterator[IoLoop]:
    loop = IoLoop("test-io")
    yield loop
    loop.stop()


def test_messages_cross_in_order(io: IoLoop) -> None:
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    for i in range(2000):
        pair.pa.send(Payload(str(i).encode()))
    got = inbox.wait_for(2000)
    assert [p.data for p in got] == [str(i).encode() for i in range(2000)]
    pair.close()


def test_large_messages(io: IoLoop) -> None:
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    blobs = [os.urandom(size) for size in (0, 1, 4095, 4096, 4097, 65536, 1 << 20)]
    for blob in blobs:
        pair.pa.send(Payload(blob))
    assert [p.data for p in inbox.wait_for(len(blobs))] == blobs
    pair.close()


def test_descriptors_cross(io: IoLoop) -> None:
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    pipes = [os.pipe() for _ in range(5)]
    for i, (_r, w) in enumerate(pipes):
        pair.pa.send(Payload(b"fd%d" % i, [OwnedFd(w)]))
    got = inbox.wait_for(5)
    for (r, _w), payload in zip(pipes, got, strict=True):
        (fd,) = payload.resources
        os.write(fd.fileno(), payload.data)
        fd.close()
        assert os.read(r, 10) == payload.data
        os.close(r)
    pair.close()


def test_peer_hanging_up_fails_ports(io: IoLoop) -> None:
    pair = Pair(io)
    inbox = Inbox()
    pair.pa.set_handler(inbox)
    io.call_sync(lambda: pair.cb.close(None))
    assert inbox.closed.wait(10)
    assert inbox.failed is not None
    assert "remote node disconnected" in str(inbox.failed)


def test_wrong_secret_cuts_the_connection(io: IoLoop) -> None:
    a, b = LocalNode(), LocalNode()
    sa, sb = socket.socketpair()
    ca = Connection(io, a, b.id, sa, send_hello=b"wrong-secret----")
    cb = Connection(io, b, a.id, sb, expect_hello=b"right-secret----")
    io.call_sync(ca.start)
    io.call_sync(cb.start)
    ida, idb = new_port_id(), new_port_id()
    pb = b.bootstrap_port(idb, (a.id, ida))
    inbox = Inbox()
    pb.set_handler(inbox)
    assert inbox.closed.wait(10)
    assert cb.closed
    assert "invitation secret" in str(cb.error)
    io.call_sync(lambda: ca.close(None))


def raw_connection(io: IoLoop, **limits: int) -> tuple[socket.socket, Connection, threading.Event]:
    """A connection whose peer is a bare socket the test writes bytes into."""
    raw, theirs = socket.socketpair()
    cut = threading.Event()
    conn = Connection(
        io,
        LocalNode(),
        LocalNode().id,
        theirs,
        on_closed=lambda c, e: cut.set(),
        limits=Limits(**limits),
    )
    io.call_sync(conn.start)
    return raw, conn, cut


def test_malformed_stream_cuts_only_that_connection(io: IoLoop) -> None:
    good = Pair(io)
    raw, conn, cut = raw_connection(io)
    raw.sendall(frame_prefix(3) + b"\xc1\xc1\xc1")
    assert cut.wait(10)
    assert "malformed frame" in str(conn.error)
    inbox = Inbox()
    good.pb.set_handler(inbox)
    good.pa.send(Payload(b"still here"))
    assert inbox.wait_for(1)[0].data == b"still here"
    raw.close()
    good.close()


def test_oversized_frame_cuts(io: IoLoop) -> None:
    raw, conn, cut = raw_connection(io, max_frame=100)
    raw.sendall(frame_prefix(101))
    assert cut.wait(10)
    assert "exceeds the limit of 100" in str(conn.error)
    raw.close()


def test_missing_descriptors_cut(io: IoLoop) -> None:
    raw, conn, cut = raw_connection(io)
    raw.sendall(frame_prefix(1, 2) + b"\x00")
    assert cut.wait(10)
    assert "names 2 descriptors but only 0 arrived" in str(conn.error)
    raw.close()


def test_stream_ending_inside_a_frame_is_an_error(io: IoLoop) -> None:
    raw, conn, cut = raw_connection(io)
    raw.sendall(frame_prefix(10) + b"abc")
    raw.close()
    assert cut.wait(10)
    assert "stream ended inside a frame" in str(conn.error)


def test_housekeeping_frames_go_out_even_when_nothing_follows(io: IoLoop) -> None:
    """A moved port's acknowledgement may wait for company, but not forever."""
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    mine, theirs = pair.a.new_pair()
    pair.pa.send(Payload(b"a port", [theirs]))  # its peer stays here: a lazy ack
    (arrived,) = inbox.wait_for(1)[0].resources
    settled = threading.Event()
    pair.a.when_settled(settled.set)  # once the proxy for `theirs` has retired
    assert settled.wait(10)
    got = Inbox()
    mine.set_handler(got)
    arrived.send(Payload(b"reply"))
    assert got.wait_for(1)[0].data == b"reply"
    arrived.close()
    assert got.closed.wait(10)
    mine.close()
    pair.close()


def test_a_burst_from_a_coroutine_arrives_whole_and_in_order(io: IoLoop) -> None:
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)

    async def burst() -> None:  # one turn of the loop: written together
        for i in range(1000):
            pair.pa.send(Payload(b"%d" % i))

    asyncio.run(burst())
    assert [p.data for p in inbox.wait_for(1000)] == [b"%d" % i for i in range(1000)]
    pair.close()


def test_frames_held_for_a_burst_go_out_even_if_the_loop_then_blocks(io: IoLoop) -> None:
    """A sender that blocks its own loop after a burst must not strand the burst."""
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)

    async def send_then_block() -> list[Payload]:
        pair.pa.send(Payload(b"first"))  # written at once
        pair.pa.send(Payload(b"second"))  # held for the end of this turn...
        return inbox.wait_for(2)  # ...which never comes while this blocks

    got = asyncio.run(send_then_block())
    assert [p.data for p in got] == [b"first", b"second"]
    pair.close()


def test_what_a_peer_sent_before_going_arrives_even_if_a_write_finds_it_gone(
    io: IoLoop,
) -> None:
    """A write that fails because the peer left must not drop what the peer sent first."""
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    # b reads nothing until its write fails.
    io.call_sync(lambda: pair.cb.io._loop.remove_reader(pair.cb.sock.fileno()))
    pair.pa.send(Payload(b"last words"))
    io.call_sync(lambda: pair.ca.close(None))  # a leaves; its message waits in b's socket
    pair.pb.send(Payload(b"to nobody"))  # b's write fails: a is gone
    assert inbox.closed.wait(10)
    assert [p.data for p in inbox.items] == [b"last words"]
    assert pair.cb.closed
    assert pair.cb.error is None  # an orderly end
