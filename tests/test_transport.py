"""The Unix transport: two nodes in one process joined by a real socketpair."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import gc
import os
import select
import socket
import termios
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from tests.helpers.build import python_only
from workmesh import (
    ChannelClosed,
    ChannelFailed,
    Message,
    NodeError,
    OwnedFd,
    Receiver,
    Sender,
)
from workmesh import _transport as transport
from workmesh._channel._mpsc import _FromRun, receiver_from_port, sender_from_port
from workmesh._frames import Limits
from workmesh._ids import new_port_id
from workmesh._node import LocalNode, Port, owed_spins, spin_before_park
from workmesh._transport import Connection, IoLoop
from workmesh._wire import (
    BY_REFERENCE,
    TAKE_APART_FROM,
    Payload,
    ReadFrame,
    SplicedPayload,
    codec_for,
    frame_prefix,
)

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
    """Two nodes joined by a socketpair; with ``reading=False`` b's side is not
    serviced (nothing reads what a sends) until :meth:`start_reading`."""

    def __init__(
        self,
        io: IoLoop,
        secret: bytes = b"",
        limits: Limits | None = None,
        *,
        reading: bool = True,
    ) -> None:
        self.io = io
        self.a, self.b = LocalNode(), LocalNode()
        sa, sb = socket.socketpair()
        self.ca = Connection(io, self.a, self.b.id, sa, send_hello=secret, limits=limits)
        self.cb = Connection(io, self.b, self.a.id, sb, expect_hello=secret, limits=limits)
        io.call_sync(self.ca.start)
        if reading:
            self.start_reading()
        ida, idb = new_port_id(), new_port_id()
        self.pa = self.a.bootstrap_port(ida, (self.b.id, idb))
        self.pb = self.b.bootstrap_port(idb, (self.a.id, ida))

    def start_reading(self) -> None:
        self.io.call_sync(self.cb.start)

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


def test_a_connection_asks_for_larger_socket_buffers(io: IoLoop) -> None:
    """Linux gives twice what is asked, capped by net.core.{w,r}mem_max."""
    pair = Pair(io)
    for option, cap in ((socket.SO_SNDBUF, "wmem_max"), (socket.SO_RCVBUF, "rmem_max")):
        with open(f"/proc/sys/net/core/{cap}") as f:
            most = int(f.read())
        fresh, other = socket.socketpair()
        with fresh, other:
            default = fresh.getsockopt(socket.SOL_SOCKET, option)
        got = pair.ca.sock.getsockopt(socket.SOL_SOCKET, option)
        assert got == max(default, 2 * min(transport.SOCKET_BUFFER, most))
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


def test_large_values_sent_by_reference_arrive_whole_and_in_order(io: IoLoop) -> None:
    """Pieces of frames -- a value larger than the socket holds, written in parts by
    the sending thread and then the I/O thread -- arrive whole, in order."""
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    values = [os.urandom(size) for size in (BY_REFERENCE, 65536, 1 << 20, 5 << 20)]
    for value in values:
        pair.pa.send(SplicedPayload(value))
        pair.pa.send(Payload(b"between"))
    got = [p.data for p in inbox.wait_for(2 * len(values))]
    assert got == [x for v in values for x in (SplicedPayload(v).data, b"between")]
    pair.close()


def wait_until_delivered(pair: Pair) -> None:
    """Return once b has been handed everything a sent before: a marker on a
    second stream of the same link comes after it (frames keep link order)."""
    ida, idb = new_port_id(), new_port_id()
    marker_a = pair.a.bootstrap_port(ida, (pair.b.id, idb))
    marker_b = pair.b.bootstrap_port(idb, (pair.a.id, ida))
    marker = Inbox()
    marker_b.set_handler(marker)
    marker_a.send(Payload(b"after"))
    marker.wait_for(1)
    marker.items.clear()  # (a payload kept counts against the link)


def test_a_large_value_arrives_in_its_pieces_copied_once(io: IoLoop) -> None:
    """A large frame written in pieces arrives as the pieces, read whole or
    finished in a buffer of its own: the value is one bytes object of its own,
    which a bytes receiver gets as it is."""
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    values = [os.urandom(TAKE_APART_FROM + i) for i in range(20)]
    for value in values:
        pair.pa.send(SplicedPayload(value))
    got = inbox.wait_for(len(values))
    assert [type(p) for p in got] == [SplicedPayload] * len(values)
    assert [p.body for p in got] == values  # type: ignore[attr-defined]
    assert [codec_for(bytes).decode(p) for p in got] == values
    pair.close()


def test_large_values_to_a_channel_arrive_whole_and_give_their_bytes_back(io: IoLoop) -> None:
    """Through a channel, at sizes read whole and read in place alike."""
    pair = Pair(io)
    rx = receiver_from_port(pair.pb, bytes)
    tx = sender_from_port(pair.pa, bytes)
    sizes = [BY_REFERENCE, 20_000, 65536, 100_000, 1 << 20]
    values = [os.urandom(size) for size in sizes * 4]

    async def exchange() -> list[bytes]:
        for value in values:
            tx.send(value)
        tx.close()
        return [value async for value in rx]

    assert asyncio.run(exchange()) == values
    gc.collect()
    assert pair.cb._inbound.pending() == 0
    pair.close()


def send_large_values(
    pair: Pair, tp: Any, count: int
) -> tuple[Receiver[Any], Sender[bytes], list[bytes]]:
    """A channel from a to b received as ``tp``, and ``count`` large values sent on
    it (each large enough to be taken apart when read whole)."""
    rx = receiver_from_port(pair.pb, tp)
    tx = sender_from_port(pair.pa, bytes)
    values = [os.urandom(TAKE_APART_FROM + i) for i in range(count)]
    for value in values:
        tx.send(value)
    return rx, tx, values


def test_large_values_waiting_unread_are_charged_to_the_link_until_dropped(io: IoLoop) -> None:
    """Values read in their pieces count against the connection's pending bytes
    while they wait in a receiver's queue, and are given back when it goes."""
    pair = Pair(io)
    rx, tx, values = send_large_values(pair, bytes, 10)
    wait_until_delivered(pair)
    assert pair.cb._inbound.pending() >= sum(map(len, values))
    assert rx.recv_blocking(timeout=10) == values[0]
    rx.close()
    gc.collect()
    assert pair.cb._inbound.pending() == 0
    tx.close()
    pair.close()


def test_large_values_received_as_messages_no_longer_count_against_the_link(
    io: IoLoop,
) -> None:
    """A large value taken as a type-erased Message keeps its pieces, but once
    received it is the holder's: kept Messages charge the connection nothing."""
    pair = Pair(io)
    rx, tx, values = send_large_values(pair, Message, 5)
    kept = [rx.recv_blocking(timeout=10) for _ in values]
    gc.collect()
    assert pair.cb._inbound.pending() == 0
    assert [message.parse(bytes) for message in kept] == values
    tx.close()
    rx.close()
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


def test_frames_waiting_behind_a_full_socket_are_no_work_for_the_garbage_collector(
    io: IoLoop,
) -> None:
    """A sender far ahead of its reader queues thousands of frames; what waits must
    not be containers the collector walks at every collection (it did: a list and a
    memoryview per piece, several pieces per frame)."""
    pair = Pair(io, reading=False)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    value = os.urandom(64 * 1024)
    count = 300  # ~19 MiB: far more than the socket holds
    for i in range(count):
        pair.pa.send(SplicedPayload(value))  # three pieces, the value left in place
        pair.pa.send(Payload(b"small %d" % i))
    assert not pair.a.has_outbox(pair.b.id)  # the transport has taken every frame
    assert pair.ca.queued_segments > count
    tracked = [piece for piece in pair.ca._out if gc.is_tracked(piece)]
    assert len(tracked) <= 1, tracked[:3]  # at most the rest of a piece written in part
    pair.start_reading()
    got = [p.data for p in inbox.wait_for(2 * count)]
    big = SplicedPayload(value).data
    assert got == [x for i in range(count) for x in (big, b"small %d" % i)]
    pair.close()


def test_descriptors_queued_behind_a_full_socket_go_with_their_frames(io: IoLoop) -> None:
    """Descriptors that wait with their frames go out later, each with its own frame,
    over more sendmsg calls than one (which carries at most MAX_FDS_PER_SEND)."""
    pair = Pair(io, reading=False)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    pair.pa.send(SplicedPayload(os.urandom(8 << 20)))  # fills the socket: the rest waits
    count = transport.MAX_FDS_PER_SEND + 20
    for i in range(count):
        fd = os.memfd_create(f"frame-{i}")
        os.write(fd, b"%d" % i)
        pair.pa.send(Payload(b"%d" % i, [OwnedFd(fd)]))
    assert pair.ca.queued_segments > count
    pair.start_reading()
    got = inbox.wait_for(1 + count)[1:]
    try:
        assert [p.data for p in got] == [b"%d" % i for i in range(count)]
        for payload in got:
            (fd,) = payload.resources
            assert os.pread(fd.fileno(), 16, 0) == payload.data
    finally:
        for payload in got:
            for fd in payload.resources:
                fd.close()
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


def test_a_burst_under_a_small_frame_limit_is_merged_within_it(io: IoLoop) -> None:
    """A burst is merged into runs of messages, each within the links' frame limit
    (a larger one would cut the connection); every message arrives, in order."""
    limits = Limits(max_frame=300)
    pair = Pair(io, limits=limits)
    inbox = Inbox()
    pair.pb.set_handler(inbox)
    sent = [b"%04d" % i * 5 for i in range(1000)]  # 20 bytes each

    async def burst() -> None:
        for data in sent:
            pair.pa.send(Payload(data))

    asyncio.run(burst())
    assert [bytes(p.data) for p in inbox.wait_for(1000)] == sent
    assert not pair.cb.closed and pair.cb.error is None
    pair.close()


def test_a_burst_to_a_channel_arrives_whole_and_in_order(io: IoLoop) -> None:
    """Runs of messages reach a channel's receiver a run at a time, in order, and
    every payload gives its bytes back to the connection once consumed."""
    pair = Pair(io)
    rx = receiver_from_port(pair.pb, int)
    tx = sender_from_port(pair.pa, int)

    async def exchange() -> list[int]:
        for i in range(5000):
            tx.send(i)
        tx.close()
        return [i async for i in rx]

    assert asyncio.run(exchange()) == list(range(5000))
    assert pair.cb._inbound.pending() == 0
    pair.close()


def send_in_one_turn(tx: Sender[int], values: Iterable[int]) -> None:
    """Send ``values`` on ``tx`` within one turn of a loop: a burst, merged into runs."""

    async def burst() -> None:
        for value in values:
            tx.send(value)

    asyncio.run(burst())


def test_runs_received_one_recv_at_a_time_arrive_whole_and_in_order(io: IoLoop) -> None:
    """The same through await recv(), a message each: runs queued as one item
    give their messages one by one, and their bytes back once consumed."""
    pair = Pair(io)
    rx = receiver_from_port(pair.pb, int)
    tx = sender_from_port(pair.pa, int)

    async def receive() -> list[int]:
        got: list[int] = []
        with contextlib.suppress(ChannelClosed):
            while True:
                got.append(await rx.recv())
        return got

    send_in_one_turn(tx, range(5000))
    tx.close()
    wait_until_delivered(pair)
    queued = rx._core.items if rx._core is not None else ()
    assert any(type(item) is _FromRun for item in queued), "no run was queued"
    assert asyncio.run(receive()) == list(range(5000))
    assert pair.cb._inbound.pending() == 0
    pair.close()


def test_a_run_read_in_part_then_dropped_gives_its_bytes_back(io: IoLoop) -> None:
    pair = Pair(io)
    rx = receiver_from_port(pair.pb, int)
    tx = sender_from_port(pair.pa, int)
    send_in_one_turn(tx, [*range(1000), -1])
    wait_until_delivered(pair)
    got = [rx.recv_blocking(timeout=10) for _ in range(10)]
    assert got == list(range(10))
    assert pair.cb._inbound.pending() > 0  # the rest waits, charged to the link
    rx.close()
    assert pair.cb._inbound.pending() == 0
    tx.close()
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


# ----------------------------------------------------------------- home loop


class ThreadInbox(Inbox):
    """An inbox that also records which thread delivered each message."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []
        self._at: tuple[int, Callable[[], object]] | None = None

    def when_count(self, count: int, callback: Callable[[], object]) -> None:
        self._at = (count, callback)

    def port_message(self, port: Port, payload: Payload, wakes: list[object]) -> None:
        self.threads.append(threading.get_ident())
        super().port_message(port, payload, wakes)
        if self._at is not None and len(self.items) == self._at[0]:
            self._at[1]()


def test_a_homed_connection_is_read_on_its_loop(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames are read and delivered on the home loop: no hand-off from the I/O thread."""
    # The I/O thread reads in a home loop's place once data has waited HOME_GRACE
    # unread (tested below); a loaded machine can starve this loop that long, so
    # here the grace outlasts the test and every frame must be read at home.
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)
    pair = Pair(io)
    inbox = ThreadInbox()
    pair.pb.set_handler(inbox)

    async def homed() -> None:
        pair.cb.adopt()
        assert pair.cb.home is asyncio.get_running_loop()
        loop = asyncio.get_running_loop()
        all_in: asyncio.Future[None] = loop.create_future()
        inbox.when_count(300, lambda: loop.call_soon_threadsafe(all_in.set_result, None))
        sender = threading.Thread(
            target=lambda: [pair.pa.send(Payload(b"%d" % i)) for i in range(300)]
        )
        sender.start()
        await all_in
        sender.join()
        pair.cb.leave_home()
        assert pair.cb.home is None

    asyncio.run(homed())
    me = threading.get_ident()
    assert [p.data for p in inbox.items] == [b"%d" % i for i in range(300)]
    assert inbox.threads.count(me) == 300, f"{inbox.threads.count(me)} of 300 on the home loop"
    # Given back: the I/O thread reads again.
    pair.pa.send(Payload(b"after"))
    assert inbox.wait_for(301)[-1].data == b"after"
    assert inbox.threads[-1] == io.thread.ident
    pair.close()


def test_a_blocked_home_loop_does_not_stall_its_connection(io: IoLoop) -> None:
    """Data left unread by a blocked home loop is read by the I/O thread instead."""
    pair = Pair(io)
    inbox = ThreadInbox()
    pair.pb.set_handler(inbox)

    async def block_while_messages_come() -> None:
        pair.cb.adopt()
        sender = threading.Thread(
            target=lambda: [pair.pa.send(Payload(b"%d" % i)) for i in range(50)]
        )
        sender.start()
        got = inbox.wait_for(50)  # blocks this loop: nothing here can read
        sender.join()
        assert [p.data for p in got] == [b"%d" % i for i in range(50)]
        pair.cb.leave_home()

    asyncio.run(block_while_messages_come())
    assert set(inbox.threads) == {io.thread.ident}
    pair.close()


def test_a_home_loop_that_stops_running_does_not_stall_its_connection(io: IoLoop) -> None:
    """Between runs of a loop (asyncio.Runner), the I/O thread reads in its place."""
    pair = Pair(io)
    inbox = ThreadInbox()
    pair.pb.set_handler(inbox)

    async def adopt() -> None:
        pair.cb.adopt()

    async def leave() -> None:
        pair.cb.leave_home()

    with asyncio.Runner() as runner:
        runner.run(adopt())
        pair.pa.send(Payload(b"while stopped"))
        assert inbox.wait_for(1)[0].data == b"while stopped"
        runner.run(leave())
    assert inbox.threads == [io.thread.ident]
    pair.close()


def test_the_io_thread_stays_away_while_the_home_loop_reads(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the I/O thread looks away from a home loop's socket, each check that
    finds the home loop has read since keeps it away, not watching; a check that
    finds no progress has it watch again, and read in a blocked home's place."""
    # The checks are made here, by hand: no timer may make one meanwhile.
    monkeypatch.setattr(transport, "HOME_CHECK", 60.0)
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)
    pair = Pair(io)
    inbox = ThreadInbox()
    pair.pb.set_handler(inbox)
    conn = pair.cb

    def look_away() -> None:  # as on a readable socket the home loop has been reading
        conn._io_seen = conn._home_reads - 1
        conn._io_readable()

    def check() -> bool:  # as the look-away's timer would; whether it watches after
        pause = conn._io_pause
        assert pause is not None, "a check is due"
        pause.cancel()
        conn._io_look_again()
        return conn._io_watching

    async def homed() -> None:
        conn.adopt()
        loop = asyncio.get_running_loop()
        io.call_sync(look_away)
        assert not conn._io_watching

        async def read_at_home(n: int) -> None:
            arrived: asyncio.Future[None] = loop.create_future()
            inbox.when_count(n, lambda: loop.call_soon_threadsafe(arrived.set_result, None))
            pair.pa.send(Payload(b"%d" % n))
            await arrived

        for n in (1, 2):
            await read_at_home(n)
            assert io.call_sync(check) is False, "the home loop read: the I/O thread stays away"
        assert io.call_sync(check) is True, "no read since the last check: it watches again"
        assert conn._io_pause is None
        # Watching again, it reads in the place of a home loop that blocks.
        monkeypatch.setattr(transport, "HOME_GRACE", 0.001)
        pair.pa.send(Payload(b"3"))
        got = inbox.wait_for(3)  # blocks this loop: nothing here can read
        assert [p.data for p in got] == [b"1", b"2", b"3"]
        conn.leave_home()

    asyncio.run(homed())
    me = threading.get_ident()
    assert inbox.threads == [me, me, io.thread.ident]
    pair.close()


def test_a_connection_ending_while_homed_fails_its_ports_and_closes_its_socket(
    io: IoLoop,
) -> None:
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)

    async def homed() -> None:
        pair.cb.adopt()
        io.call_sync(lambda: pair.ca.close(None))  # the peer hangs up
        await asyncio.to_thread(inbox.closed.wait, 10)
        assert pair.cb.closed
        pair.cb.leave_home()

    asyncio.run(homed())
    assert inbox.failed is not None
    assert "remote node disconnected" in str(inbox.failed)
    assert pair.cb.sock.fileno() == -1  # closed, once the home loop let go of it


def test_a_malformed_stream_on_a_homed_connection_cuts_it(io: IoLoop) -> None:
    raw, conn, cut = raw_connection(io)

    async def homed() -> None:
        conn.adopt()
        raw.sendall(frame_prefix(3) + b"\xc1\xc1\xc1")
        assert await asyncio.to_thread(cut.wait, 10)
        conn.leave_home()

    asyncio.run(homed())
    assert conn.closed
    assert "malformed frame" in str(conn.error)
    assert conn.sock.fileno() == -1
    raw.close()


def test_a_home_loop_that_closes_without_leaving_lets_the_socket_close(io: IoLoop) -> None:
    """A loop closed while it still read a connection cannot keep the socket open."""
    pair = Pair(io)

    async def adopt() -> None:
        pair.cb.adopt()

    asyncio.run(adopt())  # the loop closes, its selector with it
    pair.close()
    assert pair.cb.sock.fileno() == -1


def test_what_a_peer_sent_before_going_arrives_even_if_a_write_finds_it_gone(
    io: IoLoop,
) -> None:
    """A write that fails because the peer left must not drop what the peer sent first."""
    pair = Pair(io)
    inbox = Inbox()
    pair.pb.set_handler(inbox)

    def stop_reading() -> None:  # b reads nothing until its write fails
        pair.cb.io._loop.remove_reader(pair.cb.sock.fileno())
        pair.cb._io_watching = False

    io.call_sync(stop_reading)
    pair.pa.send(Payload(b"last words"))
    io.call_sync(lambda: pair.ca.close(None))  # a leaves; its message waits in b's socket
    pair.pb.send(Payload(b"to nobody"))  # b's write fails: a is gone
    assert inbox.closed.wait(10)
    assert [p.data for p in inbox.items] == [b"last words"]
    assert pair.cb.closed
    assert pair.cb.error is None  # an orderly end


def test_on_its_home_loop_a_send_after_a_read_costs_no_extra_turn(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request made after its predecessor's reply was read on the home loop is
    written at once and schedules nothing on the loop (no extra turn per call); a
    second send in the same turn is held, and the end of the turn writes it.  (With
    spinning on, the one callback a lone send schedules is the spin for its answer,
    which takes the place of the loop's wait in its selector: tested below.)"""
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)  # as above: every read at home
    monkeypatch.setattr(transport, "SPIN_NS", 0)
    pair = Pair(io)
    inbox = ThreadInbox()  # on b, read on the home loop
    pair.pb.set_handler(inbox)
    replies = Inbox()  # on a, read by the I/O thread
    pair.pa.set_handler(replies)
    me = threading.get_ident()
    lone: list[tuple[bool, int]] = []  # (written at once, callbacks scheduled)

    async def homed() -> None:
        loop = asyncio.get_running_loop()
        scheduled: list[object] = []
        call_soon = loop.call_soon

        def counting(callback: Callable[..., object], *args: object, **kw: object) -> object:
            if getattr(callback, "__self__", None) is pair.cb:
                scheduled.append(callback)
            return call_soon(callback, *args, **kw)  # type: ignore[arg-type]

        loop.call_soon = counting  # type: ignore[method-assign]
        pair.cb.adopt()
        for i in range(20):
            arrived: asyncio.Future[None] = loop.create_future()
            inbox.when_count(i + 1, lambda f=arrived: loop.call_soon_threadsafe(f.set_result, None))
            pair.pa.send(Payload(b"request %d" % i))
            await arrived
            scheduled.clear()
            pair.pb.send(Payload(b"reply %d" % i))
            assert inbox.threads[-1] == me
            lone.append((not pair.b.has_outbox(pair.a.id), len(scheduled)))
            pair.pb.send(Payload(b"more %d" % i))  # same turn: held for its end
            assert pair.b.has_outbox(pair.a.id)
            assert scheduled, "a held frame must have the end of its turn scheduled"
        pair.cb.leave_home()

    asyncio.run(homed())
    assert lone == [(True, 0)] * 20
    want = [b"%s %d" % (kind, i) for i in range(20) for kind in (b"reply", b"more")]
    assert [p.data for p in replies.wait_for(40)] == want
    pair.close()


# ----------------------------------------------------------------- spinning
# The loop's own scheduling decides when a spin runs (next turn) and when the
# selector would have seen an answer instead, so these tests drive the steps
# themselves: where a test calls Connection._spin directly, it is the call the
# loop would make next; uvloop's loop (which has no queue of ready callbacks for
# the spin to defer to) runs the ones that go through the loop.


def uvloop_runner() -> asyncio.Runner:
    uvloop = pytest.importorskip("uvloop")
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def wait_readable(sock: socket.socket) -> None:
    ready, _, _ = select.select([sock], [], [], 10)
    assert ready, "nothing arrived within 10 s"


def unread(sock: socket.socket) -> int:
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count, True)
    return count[0]


class Echo(Inbox):
    """Answers every frame at once, on the thread that delivers it."""

    def port_message(self, port: Port, payload: Payload, wakes: list[object]) -> None:
        super().port_message(port, payload, wakes)
        port.send(Payload(b"answer to " + payload.data))


def spinning_pair(io: IoLoop, monkeypatch: pytest.MonkeyPatch, spin_ns: int, peer: Inbox) -> Pair:
    """A Pair whose b end is to be read on a home loop (never by the I/O thread in
    its place), spinning for up to ``spin_ns``; ``peer`` takes what reaches a."""
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)
    monkeypatch.setattr(transport, "SPIN_NS", spin_ns)
    pair = Pair(io)
    pair.pa.set_handler(peer)
    return pair


def test_a_write_from_the_home_loop_makes_a_spin_due(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unless spinning is off; a write held for the end of its turn spins after it."""
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)
    off, on = Pair(io), Pair(io)
    for pair in (off, on):
        pair.pa.set_handler(Inbox())
    seen: list[tuple[bool, int]] = []  # (spin due right after the write, spins after)

    async def homed() -> None:
        for pair, budget in ((off, 0), (on, 10**6)):
            monkeypatch.setattr(transport, "SPIN_NS", budget)
            pair.cb.adopt()
            pair.pb.send(Payload(b"first"))
            due = pair.cb._spin_due
            await a_turn()  # the spin, if due, has run (and found nothing)
            seen.append((due, pair.cb.spins))
            pair.cb._spin_skips = 0  # this test is not about backing off
            pair.pb.send(Payload(b"held"))  # no read since the last write: a stream
            due = pair.cb._spin_due  # held for the end of the turn, which writes it
            await a_turn()  # and spins after it
            seen.append((due, pair.cb.spins))
            pair.cb.leave_home()

    with uvloop_runner() as runner:
        runner.run(homed())
    assert seen == [(False, 0), (False, 0), (True, 1), (False, 2)]
    off.close()
    on.close()


def test_no_spin_while_frames_wait_for_the_end_of_their_turn(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests in one turn: the second is held for the turn's end, and the
    loop does not spin for answers before it has gone (one spin, after it)."""
    pair = spinning_pair(io, monkeypatch, 30 * 10**9, Echo())
    answers = ThreadInbox()
    pair.pb.set_handler(answers)

    async def homed() -> None:
        loop = asyncio.get_running_loop()
        pair.cb.adopt()
        both: asyncio.Future[None] = loop.create_future()
        answers.when_count(2, lambda: both.set_result(None))
        pair.pb.send(Payload(b"1"))
        pair.pb.send(Payload(b"2"))  # the same turn: held for its end
        await both
        pair.cb.leave_home()

    with uvloop_runner() as runner:
        runner.run(homed())
    assert sorted(bytes(p.data) for p in answers.items) == [b"answer to 1", b"answer to 2"]
    assert pair.cb.spins <= 1  # none if the loop had read both before its spin's turn
    pair.close()


def test_no_spin_once_the_loop_has_read_since_the_write(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the loop's reader ran between the write and the spin's turn (the answer
    came first), the spin is passed over instead of waiting for a second answer."""
    pair = spinning_pair(io, monkeypatch, 30 * 10**9, Inbox())

    async def homed() -> None:
        pair.cb.adopt()
        pair.pb.send(Payload(b"ask"))
        assert pair.cb._spin_due
        pair.cb._home_readable()  # as the loop's reader does when the socket is readable
        await a_turn()  # the spin's turn
        pair.cb.leave_home()

    with uvloop_runner() as runner:
        runner.run(homed())
    assert (pair.cb.spins, pair.cb._spin_skips) == (0, 0)
    pair.close()


def test_a_spin_reads_the_answer_itself(io: IoLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is read and delivered by the spin, on the home loop, at once."""
    pair = spinning_pair(io, monkeypatch, 30 * 10**9, Echo())  # a: read by the I/O thread
    answers = ThreadInbox()  # on b, read on the home loop
    pair.pb.set_handler(answers)

    async def homed() -> None:
        loop = asyncio.get_running_loop()
        pair.cb.adopt()
        for i in range(5):
            pair.pb.send(Payload(b"%d" % i))  # a spin is due
            wait_readable(pair.cb.sock)  # the answer is there, and nothing has read it
            pair.cb._spin(loop)  # the spin's turn, come now
            assert len(answers.items) == i + 1  # delivered within the spin
            await a_turn()  # the scheduled call finds the answer read: passes over
        pair.cb.leave_home()

    with uvloop_runner() as runner:
        runner.run(homed())
    assert [p.data for p in answers.items] == [b"answer to %d" % i for i in range(5)]
    assert set(answers.threads) == {threading.get_ident()}
    assert (pair.cb.spins, pair.cb.spin_reads) == (5, 5)
    pair.close()


def test_a_coroutine_about_to_park_runs_the_spin_in_place(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On asyncio's loop, with nothing else ready, the spin a write made due is run
    by the next coroutine to park (spin_before_park): the answer is read and
    delivered within it, and the loop's own turn for the spin then passes over."""
    pair = spinning_pair(io, monkeypatch, 30 * 10**9, Echo())  # a: read by the I/O thread
    answers = ThreadInbox()  # on b, read on the home loop
    pair.pb.set_handler(answers)
    me = threading.get_ident()
    seen: list[tuple[bool, int, int]] = []  # (owed to b, answers after, spins after turn)

    async def homed() -> None:
        pair.cb.adopt()
        for i in range(5):
            pair.pb.send(Payload(b"%d" % i))  # a spin is due, and owed to this thread
            owed = owed_spins.get(me) is pair.cb
            assert spin_before_park()
            delivered = len(answers.items)  # before the loop has taken a turn
            await a_turn()  # the loop's turn for the spin: passes over
            seen.append((owed, delivered, pair.cb.spins))
        assert me not in owed_spins
        assert not spin_before_park()  # nothing owed: nothing run
        pair.cb.leave_home()

    asyncio.run(homed())
    assert seen == [(True, i + 1, i + 1) for i in range(5)]
    assert [p.data for p in answers.items] == [b"answer to %d" % i for i in range(5)]
    assert set(answers.threads) == {me}
    assert (pair.cb.spins, pair.cb.spin_reads, pair.cb.spins_in_place) == (5, 5, 5)
    pair.close()


def test_no_spin_in_place_with_other_work_ready_or_on_uvloop(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parking coroutine leaves the spin to the loop's turn while asyncio's loop
    has another callback ready, and always on uvloop's loop, which does not show
    what is ready (there no spin is even owed to it); the answer still comes,
    read on the home loop."""
    pair = spinning_pair(io, monkeypatch, 30 * 10**9, Echo())
    answers = ThreadInbox()
    pair.pb.set_handler(answers)

    async def homed(*, busy: bool, owed: bool) -> None:
        loop = asyncio.get_running_loop()
        pair.cb.adopt()
        arrived: asyncio.Future[None] = loop.create_future()
        answers.when_count(len(answers.items) + 1, lambda: arrived.set_result(None))
        if busy:
            loop.call_soon(lambda: None)  # other work, ready before the spin's turn
        pair.pb.send(Payload(b"ask"))
        assert spin_before_park() is owed  # and if owed, not run here
        assert pair.cb._spin_due
        await arrived  # read by the loop: in its turn's spin, or by its selector
        pair.cb.leave_home()

    asyncio.run(homed(busy=True, owed=True))
    with uvloop_runner() as runner:
        runner.run(homed(busy=False, owed=False))  # nothing to run in place: none owed
    assert [p.data for p in answers.items] == [b"answer to ask"] * 2
    assert set(answers.threads) == {threading.get_ident()}
    assert pair.cb.spins_in_place == 0
    pair.close()


def test_spins_in_place_wait_for_a_turn_of_the_loop_every_so_often(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most IN_PLACE_RUN spins run in place between two turns of the loop for
    the connection: a coroutine whose every answer came in place would keep the
    loop from its timers and other sockets.  The next one parks, the loop's turn
    reads its answer, and spins in place may begin again."""
    pair = spinning_pair(io, monkeypatch, 30 * 10**9, Echo())
    answers = ThreadInbox()
    pair.pb.set_handler(answers)
    run = transport.IN_PLACE_RUN
    in_place: list[int] = []
    fired: list[int] = []  # answers delivered when a timer set at the start fired

    async def homed() -> None:
        loop = asyncio.get_running_loop()
        pair.cb.adopt()
        loop.call_later(0, lambda: fired.append(len(answers.items)))
        for rounds in (1, 2):
            for _ in range(run + 1):
                pair.pb.send(Payload(b"x"))
                spin_before_park()
                in_place.append(pair.cb.spins_in_place)
            # The last was left to the loop: its answer comes in a turn of it.
            arrived: asyncio.Future[None] = loop.create_future()
            want = rounds * (run + 1)
            answers.when_count(want, lambda f=arrived: f.set_result(None))
            if len(answers.items) < want:
                await arrived
        pair.cb.leave_home()

    asyncio.run(homed())
    first = list(range(1, run + 1))
    assert in_place == [*first, run, *[run + n for n in first], 2 * run]
    assert len(answers.items) == 2 * (run + 1)
    # The timer ran at the first turn the loop got, before any later spin in place:
    # with 16 answers, or 17 when the last had come by the time that turn polled
    # the selector (the loop then reads it first, in the same turn).
    assert fired in ([run], [run + 1])
    pair.close()


def test_spins_that_find_nothing_back_off(io: IoLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that does not answer: the first write spins for its whole budget and
    finds nothing, then writes spin ever more rarely (after 1, 3, 7 ... writes)."""
    inbox = Inbox()  # on a: takes everything, answers nothing
    pair = spinning_pair(io, monkeypatch, 10**6, inbox)  # 1 ms
    spun: list[int] = []

    async def homed() -> None:
        pair.cb.adopt()
        for i in range(20):
            pair.pb.send(Payload(b"%d" % i))
            await a_turn()  # the spin, if one was due, has run
            spun.append(pair.cb.spins)
        pair.cb.leave_home()

    with uvloop_runner() as runner:
        runner.run(homed())
    writes_that_spun = [i + 1 for i in range(20) if spun[i] > (spun[i - 1] if i else 0)]
    assert writes_that_spun == [1, 3, 7, 15]
    assert pair.cb.spin_reads == 0
    assert [p.data for p in inbox.wait_for(20)] == [b"%d" % i for i in range(20)]
    pair.close()


def test_asyncio_loop_with_callbacks_ready_does_not_spin(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On asyncio's loop a spin is passed over (not begun, no back-off) while other
    callbacks are ready to run."""
    pair = spinning_pair(io, monkeypatch, 30 * 10**9, Inbox())

    async def homed() -> None:
        pair.cb.adopt()
        for i in range(5):
            pair.pb.send(Payload(b"%d" % i))
            await a_turn()  # its callback is ready when the spin's turn comes
        pair.cb.leave_home()

    asyncio.run(homed())
    assert pair.cb.spins == 0
    assert pair.cb._spin_skips == 0
    pair.close()


class SplittingRelay:
    """Carries bytes between two sockets, both ways, each way on a thread of its
    own.  From ``a`` to ``b``, a read of more than SPLIT bytes is written in two
    parts: the second once the first has been read at the far end (``reader``),
    so the reader sees a frame arrive in pieces."""

    SPLIT = 40 * 1024

    def __init__(self, a: socket.socket, b: socket.socket, reader: socket.socket) -> None:
        self.splits = 0
        self._reader = reader
        self._threads = [
            threading.Thread(target=self._carry, args=(a, b, True)),
            threading.Thread(target=self._carry, args=(b, a, False)),
        ]
        for thread in self._threads:
            thread.start()

    def _carry(self, src: socket.socket, dst: socket.socket, split: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 20):
                if split and len(data) > self.SPLIT:
                    self.splits += 1
                    dst.sendall(data[: self.SPLIT])
                    self._until_read()
                    data = data[self.SPLIT :]
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _until_read(self) -> None:
        """Until the reader has taken what waits in its socket (no event says so)."""
        deadline = time.monotonic() + 10
        while unread(self._reader) and time.monotonic() < deadline:
            time.sleep(0.0005)  # polling a condition, with a deadline

    def join(self) -> None:
        for thread in self._threads:
            thread.join(10)


class BigEcho(Inbox):
    """Answers every frame with 100 KiB."""

    ANSWER = bytes(range(256)) * 400

    def port_message(self, port: Port, payload: Payload, wakes: list[object]) -> None:
        super().port_message(port, payload, wakes)
        port.send(Payload(self.ANSWER))


def test_a_spin_that_reads_part_of_a_frame_waits_for_the_rest(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer that arrives in two parts -- the second only once the first has
    been read -- is read whole within one spin, not left for the loop's selector."""
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)
    monkeypatch.setattr(transport, "SPIN_NS", 30 * 10**9)
    a, b = LocalNode(), LocalNode()
    sa, relay_a = socket.socketpair()
    relay_b, sb = socket.socketpair()
    relay = SplittingRelay(relay_a, relay_b, reader=sb)
    ca = Connection(io, a, b.id, sa)
    cb = Connection(io, b, a.id, sb)
    io.call_sync(ca.start)
    io.call_sync(cb.start)
    ida, idb = new_port_id(), new_port_id()
    pa = a.bootstrap_port(ida, (b.id, idb))
    pb = b.bootstrap_port(idb, (a.id, ida))
    pa.set_handler(BigEcho())
    answers = ThreadInbox()
    pb.set_handler(answers)

    async def homed() -> None:
        loop = asyncio.get_running_loop()
        cb.adopt()
        pb.send(Payload(b"ask"))  # a spin is due
        wait_readable(sb)  # the first part
        cb._spin(loop)  # the spin's turn, come now
        assert [p.data for p in answers.items] == [BigEcho.ANSWER]  # whole, within it
        await a_turn()  # the scheduled call finds the answer read: passes over
        cb.leave_home()

    try:
        with uvloop_runner() as runner:
            runner.run(homed())
    finally:
        io.call_sync(lambda: ca.close(None))
        io.call_sync(lambda: cb.close(None))
        relay.join()  # each way ends with its source's end of stream
        relay_a.close()
        relay_b.close()
    assert relay.splits >= 1  # the relay's reads may cut the answer more than once
    assert (cb.spins, cb.spin_reads) == (1, 1)


def test_the_spin_budget_from_the_environment(caplog: pytest.LogCaptureFixture) -> None:
    us = 1000
    assert transport.spin_budget_ns(None, cpus=2) == transport.SPIN_DEFAULT_US * us
    assert transport.spin_budget_ns(" 250 ", cpus=8) == 250 * us
    assert transport.spin_budget_ns("0", cpus=2) == 0  # off
    assert transport.spin_budget_ns("250", cpus=1) == 0  # one CPU: never spin
    assert not caplog.records
    for bad in ("fast", "-5", "1.5", str(transport.SPIN_MAX_US + 1)):
        caplog.clear()
        assert transport.spin_budget_ns(bad, cpus=2) == transport.SPIN_DEFAULT_US * us, bad
        (record,) = caplog.records
        said = record.getMessage()
        assert "WORKMESH_SPIN_US" in said and repr(bad) in said and "microseconds" in said


@python_only
def test_another_loop_still_batches_its_burst_after_the_home_loop_sent(io: IoLoop) -> None:
    """The home loop's record of its last send must not stop a burst from another
    loop, on the same connection, being written together."""
    pair = Pair(io)
    inbox = Inbox()
    pair.pa.set_handler(inbox)
    writes: list[int] = []
    send_batch = pair.cb._send_batch

    def counting() -> int:
        writes.append(1)
        return send_batch()

    pair.cb._send_batch = counting  # type: ignore[method-assign]

    async def burst() -> None:  # one turn of another loop
        for i in range(1000):
            pair.pb.send(Payload(b"%d" % i))

    async def homed() -> None:
        loop = asyncio.get_running_loop()
        pair.cb.adopt()
        pair.pb.send(Payload(b"from home"))
        assert inbox.wait_for(1)[0].data == b"from home"
        writes.clear()
        done: asyncio.Future[None] = loop.create_future()
        other = threading.Thread(
            target=lambda: (
                asyncio.run(burst()),
                loop.call_soon_threadsafe(done.set_result, None),
            )
        )
        other.start()
        await done
        other.join()
        pair.cb.leave_home()

    asyncio.run(homed())
    got = inbox.wait_for(1001)
    assert [p.data for p in got[1:]] == [b"%d" % i for i in range(1000)]
    assert len(writes) < 100, f"{len(writes)} writes for a burst of 1000"
    pair.close()


def test_leaving_home_sends_the_housekeeping_frames_that_waited_there(io: IoLoop) -> None:
    """An acknowledgement made on the home loop waits for company; leaving sends it."""
    pair = Pair(io)
    inbox = ThreadInbox()
    pair.pb.set_handler(inbox)
    mine, theirs = pair.a.new_pair()

    async def homed() -> None:
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[None] = loop.create_future()
        inbox.when_count(1, lambda: loop.call_soon_threadsafe(arrived.set_result, None))
        pair.cb.adopt()
        pair.pa.send(Payload(b"a port", [theirs]))  # its peer stays on a: a lazy ack
        await arrived  # delivered on this loop; the ack waits on this loop's timer
        pair.cb.leave_home()

    asyncio.run(homed())
    settled = threading.Event()
    pair.a.when_settled(settled.set)  # a's proxy for `theirs` retires on the ack
    assert settled.wait(10)
    (moved,) = inbox.items[0].resources
    moved.close()
    mine.close()
    pair.close()


# ----------------------------------------------------------------- reading follows the messages


class Arrivals:
    """What a consumer of ints received, and a way to wait for each arrival."""

    def __init__(self, rx: Receiver[int]) -> None:
        self.rx = rx
        self.got: list[int] = []
        self.arrived = threading.Semaphore(0)

    def note(self, value: int) -> None:
        self.got.append(value)
        self.arrived.release()

    def next(self) -> None:
        assert self.arrived.acquire(timeout=10), "a message did not arrive"


class Consumer(Arrivals):
    """Receives on another thread's event loop (as an asyncio worker does), parked
    between messages."""

    def __init__(self, where: IoLoop, rx: Receiver[int]) -> None:
        super().__init__(rx)
        assert where.loop is not None
        self.task = asyncio.run_coroutine_threadsafe(self._consume(), where.loop)

    async def _consume(self) -> None:
        with contextlib.suppress(ChannelClosed):
            while True:
                self.note(await self.rx.recv())


@pytest.fixture
def other_loop() -> Iterator[IoLoop]:
    """An event loop on a thread of its own: the project's I/O loop class will do."""
    where = IoLoop("test-loop")
    yield where
    where.stop()


def record_readers(monkeypatch: pytest.MonkeyPatch, conn: Connection) -> list[int]:
    """The thread of every read of ``conn`` that delivered frames, in order."""
    readers: list[int] = []
    deliver = conn._deliver

    def recording(frames: list[tuple[ReadFrame, int]]) -> None:
        readers.append(threading.get_ident())
        deliver(frames)

    monkeypatch.setattr(conn, "_deliver", recording)
    return readers


def send_one_by_one(tx: Sender[int], consumer: Consumer, values: range) -> None:
    for value in values:
        tx.send(value)
        consumer.next()


def send_until_read_on(
    conn: Connection, loop: asyncio.AbstractEventLoop, tx: Sender[int], consumer: Consumer
) -> int:
    """Send 0, 1, 2 ... one at a time until ``loop`` reads ``conn``; how many it took."""
    sent = 0
    while conn.home is not loop:
        assert sent < 100, "reading never moved to the receiver's loop"
        send_one_by_one(tx, consumer, range(sent, sent + 1))
        sent += 1
    return sent


@python_only
def test_reading_moves_to_the_offered_loop_its_messages_wake_and_back_when_it_withdraws(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch, other_loop: IoLoop
) -> None:
    """A home loop that hands every message to a receiver parked on another loop
    gives reading to that loop when it offered (an asyncio worker's loop), so later
    messages are read where they are awaited; its withdrawal gives reading back."""
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)  # no reads in a home's place
    pair = Pair(io)
    readers = record_readers(monkeypatch, pair.cb)
    tx, rx = sender_from_port(pair.pa, int), receiver_from_port(pair.pb, int)
    worker = other_loop
    pair.b.offer_home(worker.loop)
    consumer = Consumer(worker, rx)

    async def main() -> None:
        base = asyncio.get_running_loop()
        pair.cb.adopt()
        moved_after = None
        for value in range(100):
            await asyncio.to_thread(send_one_by_one, tx, consumer, range(value, value + 1))
            if pair.cb.home is worker.loop:
                moved_after = value + 1
                break
        assert moved_after is not None, "reading never moved to the receiver's loop"
        assert moved_after >= transport.REHOME_VOTES
        before = len(readers)
        await asyncio.to_thread(send_one_by_one, tx, consumer, range(moved_after, 300))
        assert set(readers[before:]) == {worker.thread.ident}
        # The worker's loop withdraws: reading goes back to the base loop.
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(withdraw(pair.b, worker.loop), worker.loop)
        )
        assert pair.cb.home is base
        assert pair.cb.base is base
        pair.cb.leave_home()

    asyncio.run(main())
    assert consumer.got == list(range(300))
    tx.close()
    consumer.task.result(10)
    pair.close()


async def withdraw(node: LocalNode, loop: asyncio.AbstractEventLoop) -> None:
    node.withdraw_home(loop)


@python_only
def test_reading_stays_home_when_the_loop_its_messages_wake_did_not_offer(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch, other_loop: IoLoop
) -> None:
    elsewhere = other_loop  # it offers nothing
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)
    pair = Pair(io)
    readers = record_readers(monkeypatch, pair.cb)
    tx, rx = sender_from_port(pair.pa, int), receiver_from_port(pair.pb, int)
    consumer = Consumer(elsewhere, rx)

    async def main() -> None:
        pair.cb.adopt()
        await asyncio.to_thread(send_one_by_one, tx, consumer, range(50))
        assert pair.cb.home is asyncio.get_running_loop()
        pair.cb.leave_home()

    asyncio.run(main())
    assert set(readers) == {threading.get_ident()}  # this thread ran the home loop
    assert consumer.got == list(range(50))
    tx.close()
    consumer.task.result(10)
    pair.close()


@python_only
def test_reading_moves_from_the_io_thread_to_an_offered_loop_and_back(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch, other_loop: IoLoop
) -> None:
    """Without an adopting loop, reading leaves the I/O thread for an offered loop
    its messages wake, and returns to the I/O thread when that loop withdraws."""
    pair = Pair(io)
    readers = record_readers(monkeypatch, pair.cb)
    tx, rx = sender_from_port(pair.pa, int), receiver_from_port(pair.pb, int)
    worker = other_loop
    pair.b.offer_home(worker.loop)
    consumer = Consumer(worker, rx)
    sent = send_until_read_on(pair.cb, worker.loop, tx, consumer)
    assert readers[: transport.REHOME_VOTES] == [io.thread.ident] * transport.REHOME_VOTES
    worker.call_sync(lambda: pair.b.withdraw_home(worker.loop))
    assert pair.cb.home is None
    assert pair.cb.base is None
    before = len(readers)
    send_one_by_one(tx, consumer, range(sent, sent + 20))
    assert set(readers[before:]) == {io.thread.ident}
    assert consumer.got == list(range(sent + 20))
    tx.close()
    consumer.task.result(10)
    pair.close()


def test_a_connection_closing_while_an_offered_loop_reads_it_closes_its_socket(
    io: IoLoop, other_loop: IoLoop
) -> None:
    pair = Pair(io)
    tx, rx = sender_from_port(pair.pa, int), receiver_from_port(pair.pb, int)
    worker = other_loop
    pair.b.offer_home(worker.loop)
    consumer = Consumer(worker, rx)
    send_until_read_on(pair.cb, worker.loop, tx, consumer)
    io.call_sync(lambda: pair.ca.close(None))  # the peer hangs up
    with pytest.raises(ChannelFailed, match="disconnected"):
        consumer.task.result(10)  # the receiver saw the peer go
    worker.call_sync(lambda: None)  # a turn of the worker's loop: it lets go of the socket
    assert pair.cb.closed
    assert pair.cb.sock.fileno() == -1
    worker.call_sync(lambda: pair.b.withdraw_home(worker.loop))
    assert pair.cb.home is None


def test_a_loop_that_withdraws_before_it_took_reading_over_sends_it_back_to_the_base(
    io: IoLoop, other_loop: IoLoop
) -> None:
    """Reading was on its way to an offered loop (moving) when that loop withdrew:
    the loop declines it, and it goes back to the adopting loop instead."""
    pair = Pair(io)
    worker = other_loop
    pair.b.offer_home(worker.loop)

    async def main() -> None:
        base = asyncio.get_running_loop()
        pair.cb.adopt()
        # Hand reading away as a vote would: the base lets go, the worker's loop is
        # asked to take it -- but it is busy, and withdraws before it gets there.
        go = threading.Event()
        worker.loop.call_soon_threadsafe(go.wait, 10)
        with pair.cb._rlock:
            pair.cb._home_unwatch()
            pair.cb._home = None
        pair.cb._move_to(worker.loop)
        assert pair.cb._moving is worker.loop
        worker.loop.call_soon_threadsafe(pair.b.withdraw_home, worker.loop)
        go.set()
        # Once the worker's loop has run all that (declining reading), the base has
        # been asked to take it back -- before it hears that the worker's loop is
        # done, so by the time this await returns.
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(nothing(), worker.loop))
        assert pair.cb.home is base
        pair.cb.leave_home()

    asyncio.run(main())
    inbox = ThreadInbox()
    pair.pb.set_handler(inbox)
    pair.pa.send(Payload(b"still read"))
    assert inbox.wait_for(1)[0].data == b"still read"
    pair.close()


async def nothing() -> None:
    return None


class ThreadConsumer(Arrivals):
    """Receives on a plain thread with blocking receives (as a sync worker does)."""

    def __init__(self, rx: Receiver[int]) -> None:
        super().__init__(rx)
        self.thread = threading.Thread(target=self._consume, name="test-plain")
        self.thread.start()

    def _consume(self) -> None:
        with contextlib.suppress(ChannelClosed):
            while True:
                self.note(self.rx.recv_blocking(10))


def test_reading_goes_back_to_the_base_when_messages_wake_plain_threads(
    io: IoLoop, monkeypatch: pytest.MonkeyPatch, other_loop: IoLoop
) -> None:
    """Read on a worker's loop, messages that only wake plain threads (a sync
    worker's blocking receives) send reading back to the adopting loop."""
    monkeypatch.setattr(transport, "HOME_GRACE", 60.0)
    pair = Pair(io)
    tx, rx = sender_from_port(pair.pa, int), receiver_from_port(pair.pb, int)
    ida, idb = new_port_id(), new_port_id()
    plain_a = pair.a.bootstrap_port(ida, (pair.b.id, idb))
    plain_b = pair.b.bootstrap_port(idb, (pair.a.id, ida))
    tx2, rx2 = sender_from_port(plain_a, int), receiver_from_port(plain_b, int)
    worker = other_loop
    pair.b.offer_home(worker.loop)
    consumer = Consumer(worker, rx)
    plain = ThreadConsumer(rx2)

    def send_to(sender: Sender[int], wait: Callable[[], None], value: int) -> None:
        sender.send(value)
        wait()

    async def main() -> None:
        base = asyncio.get_running_loop()
        pair.cb.adopt()
        for value in range(100):
            if pair.cb.home is worker.loop:
                break
            await asyncio.to_thread(send_to, tx, consumer.next, value)
        assert pair.cb.home is worker.loop
        for value in range(100):
            if pair.cb.home is base:
                break
            await asyncio.to_thread(send_to, tx2, plain.next, value)
        assert pair.cb.home is base, "reading stayed on the worker's loop"
        pair.cb.leave_home()

    asyncio.run(main())
    assert plain.got == list(range(len(plain.got)))
    tx.close()
    tx2.close()
    consumer.task.result(10)
    plain.thread.join(10)
    pair.close()


async def a_turn() -> None:
    """Let the running loop run what was queued on it before this call."""
    loop = asyncio.get_running_loop()
    turn: asyncio.Future[None] = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn


def test_a_move_towards_a_loop_that_withdrew_meanwhile_goes_to_the_base(
    io: IoLoop, other_loop: IoLoop
) -> None:
    """Reading chosen for a loop that withdraws before the move is made goes to the
    base instead: that loop may close before it could decline."""
    pair = Pair(io)
    worker = other_loop
    pair.b.offer_home(worker.loop)
    worker.call_sync(lambda: pair.b.withdraw_home(worker.loop))

    async def main() -> None:
        base = asyncio.get_running_loop()
        pair.cb.adopt()
        with pair.cb._rlock:  # let go of it here, as a vote does before it moves
            pair.cb._home_unwatch()
            pair.cb._home = None
        pair.cb._move_to(worker.loop)
        assert pair.cb._moving is base
        await a_turn()
        assert pair.cb.home is base
        pair.cb.leave_home()

    asyncio.run(main())
    pair.close()


def test_a_move_whose_loop_closed_before_it_ran_does_not_block_the_next(io: IoLoop) -> None:
    """A closed loop drops the callbacks queued on it: a move waiting for one must
    not stop reading from ever moving again."""
    pair = Pair(io)
    gone = asyncio.new_event_loop()
    gone.close()

    async def main() -> None:
        base = asyncio.get_running_loop()
        pair.cb.adopt()
        with pair.cb._rlock:
            pair.cb._home_unwatch()
            pair.cb._home = None
            pair.cb._moving = gone  # its _take_home was dropped when it closed
        pair.cb._move_to(base)
        await a_turn()
        assert pair.cb.home is base
        assert pair.cb._moving is None
        pair.cb.leave_home()

    asyncio.run(main())
    pair.close()
