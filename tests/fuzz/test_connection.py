"""Fuzzing end to end over a real socket: a raw peer writes garbage and mutated
frames (with real descriptors by SCM_RIGHTS) into a ``Connection``.

Node A talks to a well-behaved node B over one socketpair, and to a bad peer over
another, whose far end is a bare socket the test writes into.  The bad peer is cut
off with an error that names the problem, every port routed to it fails with that
reason, nothing raises on the I/O thread, every descriptor it sent is closed -- and
a round trip between A and B still works afterwards.
"""

from __future__ import annotations

import array
import gc
import random
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import workmesh as wm
from workmesh._channel._mpsc import receiver_from_port
from workmesh._frames import FdRecord, MessageFrame
from workmesh._ids import NodeId, new_node_id, new_port_id
from workmesh._node import LocalNode, Port
from workmesh._transport import Connection, IoLoop
from workmesh._wire import Payload, encode_frame, frame_prefix

from ..chaos._scale import figure, timeout
from ._kit import (
    DECLARED,
    Mutation,
    Scene,
    drain,
    fail_unknown_nodes,
    fd_count,
    framed,
    mutate,
    new_fd,
    random_frame,
    unexpected,
)
from ._settings import Tally, fuzz_settings, mutations, randoms

pytestmark = pytest.mark.timeout(timeout(short=300, long=3600))

WAIT = 10.0  # seconds; a functional bound on "the I/O thread has dealt with it"


class Echo:
    """B's end of the good link: sends back whatever arrives."""

    def port_message(self, port: Port, payload: Payload, wakes: list[Any]) -> None:
        wakes.append(lambda: port.send(Payload(payload.data)))

    def port_closed(self, port: Port, wakes: list[Any]) -> None:
        pass

    def port_failed(self, port: Port, error: wm.NodeError, wakes: list[Any]) -> None:
        pass


class Replies:
    """A's end of the good link: lets the test wait for each echo."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.cond = threading.Condition()
        self.error: wm.NodeError | None = None

    def port_message(self, port: Port, payload: Payload, wakes: list[Any]) -> None:
        with self.cond:
            self.got.append(payload.data)
            self.cond.notify_all()

    def port_closed(self, port: Port, wakes: list[Any]) -> None:
        pass

    def port_failed(self, port: Port, error: wm.NodeError, wakes: list[Any]) -> None:
        self.error = error


class Hub:
    """Node A with its good link to B; bad peers are attached one at a time."""

    def __init__(self, io: IoLoop) -> None:
        self.io = io
        self.a, self.b = LocalNode(), LocalNode()
        sa, sb = socket.socketpair()
        self.ca = Connection(io, self.a, self.b.id, sa)
        self.cb = Connection(io, self.b, self.a.id, sb)
        io.call_sync(self.ca.start)
        io.call_sync(self.cb.start)
        ida, idb = new_port_id(), new_port_id()
        self.pa = self.a.bootstrap_port(ida, (self.b.id, idb))
        self.pb = self.b.bootstrap_port(idb, (self.a.id, ida))
        self.known = {self.b.id}
        fail_unknown_nodes(self.a, self.known)
        self.replies = Replies()
        self.pa.set_handler(self.replies)
        self.pb.set_handler(Echo())
        self.loop_errors: list[str] = []
        assert io.loop is not None
        io.call_sync(lambda: io.loop.set_exception_handler(self._loop_error))  # type: ignore[union-attr]
        self.trips = 0

    def _loop_error(self, loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        self.loop_errors.append(
            unexpected("the I/O loop", exc) if exc else str(context.get("message"))
        )

    def round_trip(self) -> None:
        self.trips += 1
        text = f"ping {self.trips}".encode()
        self.pa.send(Payload(text))
        with self.replies.cond:
            assert self.replies.cond.wait_for(lambda: text in self.replies.got, WAIT), (
                f"no echo from B ({self.replies.error})"
            )

    def close(self) -> None:
        self.pa.close()
        self.pb.close()
        self.io.call_sync(lambda: self.ca.close(None))
        self.io.call_sync(lambda: self.cb.close(None))
        # Let go of the nodes: a node remembers each failed peer with its error, and
        # an error's traceback holds whatever its frames held -- descriptors too,
        # when a test finds that bug.  Dropped here, such a leak fails the test that
        # found it, not every test after it (pytest holds a failed test's hub on).
        del self.a, self.b, self.pa, self.pb, self.ca, self.cb


@dataclass
class BadPeer:
    raw: socket.socket
    conn: Connection
    gone: threading.Event
    peer: NodeId
    receivers: list[wm.Receiver[Any]]
    failures: list[wm.NodeError]
    scene: Scene


class Watch:
    """A's end of a port to the bad peer that only records how the port ended."""

    def __init__(self, failures: list[wm.NodeError]) -> None:
        self.failures = failures

    def port_message(self, port: Port, payload: Payload, wakes: list[Any]) -> None:
        payload.discard()

    def port_closed(self, port: Port, wakes: list[Any]) -> None:
        pass

    def port_failed(self, port: Port, error: wm.NodeError, wakes: list[Any]) -> None:
        self.failures.append(error)


def attach_bad_peer(hub: Hub) -> BadPeer:
    raw, theirs = socket.socketpair()
    gone = threading.Event()
    peer = new_node_id()
    hub.known.add(peer)
    conn = Connection(hub.io, hub.a, peer, theirs, on_closed=lambda _c, _e: gone.set())
    receivers = []
    targets = []
    for tp in DECLARED:
        port_id = new_port_id()
        receivers.append(
            receiver_from_port(hub.a.bootstrap_port(port_id, (peer, new_port_id())), tp)
        )
        targets.append((port_id, tp))
    failures: list[wm.NodeError] = []
    watched = hub.a.bootstrap_port(new_port_id(), (peer, new_port_id()))
    watched.set_handler(Watch(failures))
    hub.io.call_sync(conn.start)
    return BadPeer(raw, conn, gone, peer, receivers, failures, Scene(hub.a.id, peer, targets))


def send_with_fds(raw: socket.socket, data: bytes, nfds: int) -> None:
    """Write ``data``, passing ``nfds`` fresh pipe descriptors with its first byte."""
    fds = [new_fd() for _ in range(nfds)]
    try:
        if fds and data:
            numbers = array.array("i", [fd.fileno() for fd in fds])
            sent = raw.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, numbers)])
            raw.sendall(data[sent:])
        elif data:
            raw.sendall(data)
    except OSError:
        pass  # the connection was cut while we wrote: that is the point
    finally:
        for fd in fds:
            fd.close()


def finish(hub: Hub, bad: BadPeer) -> str:
    """End the bad peer's stream; wait until A has dealt with it.  Returns how it ended."""
    bad.raw.close()
    assert bad.gone.wait(WAIT), "the connection never noticed its peer went"
    problems: list[str] = []
    drain(bad.receivers, problems)
    for rx in bad.receivers:
        rx.close()
    assert not problems, problems[0]
    assert not hub.loop_errors, hub.loop_errors[0]
    error = bad.conn.error
    assert bad.failures, "the port routed to the bad peer did not fail"
    reason = str(bad.failures[0])
    if error is None:
        assert "disconnected" in reason, reason
        return "ended"
    text = str(error)
    assert text, f"{error!r} says nothing"
    assert "connection failed" in reason, reason
    assert text in str(bad.failures[0].__cause__), (reason, text)
    return "cut: " + classify(text)


KNOWN_PROBLEMS = {
    "malformed frame": "malformed frame",
    "exceeds the limit": "oversized frame",
    "above the limit": "too many descriptors",
    "descriptors but": "descriptor count",
    "stream ended inside a frame": "truncated stream",
    "resources but no data": "malformed frame",
    "control data truncated": "descriptors lost",
    "never handed out": "unknown port",
    "ports, above": "too many ports",
}


def classify(text: str) -> str:
    for phrase, name in KNOWN_PROBLEMS.items():
        if phrase in text:
            return name
    return text[:60]


@pytest.fixture
def hub() -> Iterator[Hub]:
    io = IoLoop("fuzz-io")
    hub = Hub(io)
    try:
        yield hub
    finally:
        hub.close()
        io.stop()


CASES: list[tuple[str, Callable[[Scene], list[tuple[bytes, int, int]]], str]] = [
    ("garbage bytes", lambda s: [(b"\xff" * 64, 0, 0)], "oversized frame"),
    ("not msgpack", lambda s: [(frame_prefix(3) + b"\xc1\xc1\xc1", 0, 0)], "malformed frame"),
    ("not a frame", lambda s: [(frame_prefix(2) + b"\x92\x01", 0, 0)], "malformed frame"),
    ("names fds none sent", lambda s: [(frame_prefix(1, 2) + b"\x00", 0, 0)], "descriptor count"),
    (
        "too many fds named",
        lambda s: [(frame_prefix(1, 0xFFFF) + b"\x00", 0, 0)],
        "too many descriptors",
    ),
    ("truncated", lambda s: [(frame_prefix(10) + b"abc", 0, 0)], "truncated stream"),
    (
        "records disagree with fds",
        lambda s: [(framed([(encode_frame(_fd_message(s)), 2)]), 2, 0)],
        "descriptor count",
    ),
]


def _fd_message(scene: Scene) -> MessageFrame:
    target = scene.targets[0][0]
    return MessageFrame(target, 1, False, b"\xd6\x01\x00\x00\x00\x00", [FdRecord()])


@pytest.mark.parametrize(("name", "make", "problem"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_peer_is_cut_off_with_a_clear_error_and_others_carry_on(
    hub: Hub, name: str, make: Callable[[Scene], list[tuple[bytes, int, int]]], problem: str
) -> None:
    before = fd_count()
    bad = attach_bad_peer(hub)
    for data, nfds, _ in make(bad.scene):
        send_with_fds(bad.raw, data, nfds)
    assert finish(hub, bad) == f"cut: {problem}"
    hub.round_trip()
    assert fd_count() == before


def fds_back_to(count: int) -> bool:
    """Whether the process has no more than ``count`` descriptors open (collecting
    garbage first if it has: a cycle may hold an OwnedFd that nothing else does).

    Fewer is fine: what an earlier input left behind may be collected meanwhile.
    """
    if fd_count() > count:
        gc.collect()
    return fd_count() <= count


def one_bad_peer(
    hub: Hub, rnd: random.Random, muts: list[Mutation], fd_error: int, junk: bytes | None
) -> str:
    """One bad peer, start to end.  (A function of its own, so that nothing of the
    peer is still referenced by the test once it returns.)"""
    bad = attach_bad_peer(hub)
    if junk is not None:
        send_with_fds(bad.raw, junk, max(0, fd_error))
    else:
        frames = [random_frame(rnd, bad.scene) for _ in range(rnd.randint(1, 4))]
        stream = framed(frames)
        nfds = sum(n for _, n in frames) + fd_error
        send_with_fds(bad.raw, mutate(stream, muts, donor=stream), nfds)
    return finish(hub, bad)


def test_garbage_and_mutated_frames_from_a_raw_peer(hub: Hub) -> None:
    tally = Tally()

    @fuzz_settings(short=500, long=5_000)
    @given(
        rnd=randoms,
        muts=st.one_of(st.just([]), mutations),
        fd_error=st.sampled_from([0, 0, 0, -1, 1, 3]),
        junk=st.one_of(st.none(), st.binary(max_size=64)),
    )
    def prop(rnd: random.Random, muts: list[Mutation], fd_error: int, junk: bytes | None) -> None:
        before = fd_count()
        tally.add(one_bad_peer(hub, rnd, muts, fd_error, junk))
        hub.round_trip()
        assert fds_back_to(before), "descriptors sent by the bad peer were left open"

    prop()
    figure(tally.line("fuzz: raw peer over a socket"))


def test_descriptors_of_frames_before_a_bad_count_are_closed(hub: Hub) -> None:
    """One read brings a good frame with its descriptor, then a frame naming more
    descriptors than arrived.  The peer is cut off; the good frame's descriptor was
    taken off the queue but never delivered, and must be closed all the same --
    even while the connection (and the node's record of the failure) live on."""
    before = fd_count()

    def good_then_bad() -> str:
        bad = attach_bad_peer(hub)
        good = _fd_message(bad.scene)
        stream = framed([(encode_frame(good), 1)]) + frame_prefix(1, 2) + b"\x00"
        send_with_fds(bad.raw, stream, 1)
        return finish(hub, bad)

    assert good_then_bad() == "cut: descriptor count"
    assert fds_back_to(before), "the good frame's descriptor is still open"
