"""The port/node state machine, alone and across two and three in-memory nodes.

These port the node-level cases of the original mesh (test_local, test_remote,
test_send_port, test_bridge ...) and add the migration cases the design relies on.
"""

from __future__ import annotations

import os
from typing import cast

import pytest

from workmesh import NodeError, OwnedFd
from workmesh._frames import MessageFrame, MessageRunFrame
from workmesh._node import LocalNode, Port, PortState
from workmesh._wire import (
    BY_REFERENCE,
    Payload,
    RunPayload,
    SplicedPayload,
    decode_frame,
    encode_frame,
    frame_bytes,
)
from workmesh.testing import MemoryNetwork

pytestmark = pytest.mark.timeout(20)


class Recorder:
    """A port handler that records what arrives."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.payloads: list[Payload] = []
        self.closed = False
        self.error: NodeError | None = None

    def port_message(self, port: Port, payload: Payload, wakes: list[object]) -> None:
        self.messages.append(payload.data)
        self.payloads.append(payload)

    def port_closed(self, port: Port, wakes: list[object]) -> None:
        self.closed = True

    def port_failed(self, port: Port, error: NodeError, wakes: list[object]) -> None:
        self.error = error

    @property
    def text(self) -> str:
        return b"".join(self.messages).decode()


def msg(text: str, *resources: object) -> Payload:
    return Payload(text.encode(), list(resources))


def record(port: Port) -> Recorder:
    rec = Recorder()
    port.set_handler(rec)
    return rec


# ------------------------------------------------------------------ one node


def test_local_message_then_empty() -> None:
    node = LocalNode()
    a, b = node.new_pair()
    a.send(msg("x"))
    assert [p.data for p in b.queue] == [b"x"]
    rec = record(b)
    assert rec.messages == [b"x"]
    assert not b.queue


def test_local_close_after_data() -> None:
    node = LocalNode()
    a, b = node.new_pair()
    rec = record(b)
    a.send(msg("d"))
    a.close()
    assert rec.messages == [b"d"]
    assert rec.closed
    assert a.state is PortState.DONE and b.state is PortState.DONE


def test_handler_set_late_sees_close() -> None:
    node = LocalNode()
    a, b = node.new_pair()
    a.send(msg("1"))
    a.close()
    rec = record(b)
    assert rec.messages == [b"1"] and rec.closed


def test_fail_port_reaches_peer() -> None:
    node = LocalNode()
    a, b = node.new_pair()
    rec = record(b)
    a.fail(NodeError("boom"))
    assert rec.error is not None
    assert "boom" in str(rec.error)  # a peer in the same node hears the real reason
    assert a.state is PortState.FAILED and b.state is PortState.FAILED


def test_close_drops_queued_ports() -> None:
    """Closing a port with a queued message that carries a port closes that port."""
    node = LocalNode()
    a, b = node.new_pair()
    inner_a, inner_b = node.new_pair()
    rec = record(inner_b)
    a.send(msg("carrier", inner_a))
    b.close()
    assert rec.closed


def test_send_to_closed_port_closes_carried_port() -> None:
    node = LocalNode()
    a, b = node.new_pair()
    b.close()
    inner_a, inner_b = node.new_pair()
    rec = record(inner_b)
    a.send(msg("late", inner_a))
    assert rec.closed


def test_bridge_local_ordering() -> None:
    """abcdefghi: delivered data first, then the consumed end's queue, then new data."""
    node = LocalNode()
    p1, p2 = node.new_pair()
    p3, p4 = node.new_pair()
    for c in "ab":
        p2.send(msg(c))
    for c in "xycdefgh":
        p4.send(msg(c))
    assert [p3.queue.popleft().data for _ in range(2)] == [b"x", b"y"]
    p2.bridge(p3)
    p4.send(msg("i"))
    p4.close()
    rec = record(p1)
    assert rec.text == "abcdefghi"
    assert rec.closed
    assert node.port_count() == 0


def test_bridge_self_fails_both() -> None:
    node = LocalNode()
    a, b = node.new_pair()
    a.bridge(b)
    assert a.state is PortState.FAILED and b.state is PortState.FAILED
    assert a.error is not None and "circular bridge" in str(a.error)


def test_bridge_with_closed_end_propagates_close() -> None:
    node = LocalNode()
    p1, p2 = node.new_pair()
    p3, p4 = node.new_pair()
    p3.send(msg("kept"))
    p4_rec = record(p4)
    p1.send(msg("q"))
    p1.close()  # p2 is now done, with "q" queued
    p2.bridge(p3)
    assert p4_rec.messages == [b"kept", b"q"]
    assert p4_rec.closed


def test_bridge_with_failed_end_propagates_failure() -> None:
    node = LocalNode()
    p1, p2 = node.new_pair()
    p3, p4 = node.new_pair()
    rec = record(p4)
    p1.fail(NodeError("dead"))
    p2.bridge(p3)
    assert rec.error is not None


# ------------------------------------------------------------------ two and three nodes


@pytest.fixture
def net() -> MemoryNetwork:
    return MemoryNetwork()


def test_remote_message_and_tables_empty_after_close(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    a.send(msg("hello"))
    net.pump()
    assert rec.messages == [b"hello"]
    a.close()
    net.pump()
    assert rec.closed
    assert a.state is PortState.DONE
    assert a_node.port_count() == 0 and b_node.port_count() == 0


def test_send_port_keeps_order(net: MemoryNetwork) -> None:
    """A port sent to another node keeps its queued and its later messages in order."""
    a_node, b_node = net.add_node(), net.add_node()
    carrier_a, carrier_b = net.pair(a_node, b_node)
    p, q = a_node.new_pair()
    for c in "abc":
        q.send(msg(c))
    carrier_a.send(msg("port", p))
    for c in "def":
        q.send(msg(c))
    net.pump()
    (arrived,) = carrier_b.queue
    moved = arrived.resources[0]
    assert isinstance(moved, Port) and moved.node is b_node
    rec = record(moved)
    net.pump()
    assert rec.text == "abcdef"
    q.send(msg("g"))
    net.pump()
    assert rec.text == "abcdefg"
    # The peer talks to the moved port directly now: the proxy on A retired.
    assert p.state is PortState.DONE
    moved.send(msg("back"))
    net.pump()
    assert [x.data for x in q.queue] == [b"back"]


def test_a_large_bytes_value_is_queued_by_reference_and_arrives_whole(
    net: MemoryNetwork,
) -> None:
    """The frame for a remote peer holds the caller's own bytes object (no copy);
    the peer gets exactly the encoding a copy would have given."""
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    value = os.urandom(BY_REFERENCE)
    payload = SplicedPayload(value)
    a.send(payload)
    ((data, fds),) = a_node.take_outbox(b_node.id)
    assert isinstance(data, tuple) and data[1] is value and fds == []
    b_node.receive(a_node.id, frame_bytes(data), [])
    assert rec.messages == [payload.data]
    assert payload.data == b"\xc5" + len(value).to_bytes(2, "big") + value  # msgpack bin 16


def test_large_values_keep_their_order_through_a_moving_port(net: MemoryNetwork) -> None:
    """Queued behind a port on the move, forwarded by its proxy, delivered in this
    process: each path gives the value whole and in order."""
    a_node, b_node = net.add_node(), net.add_node()
    carrier_a, carrier_b = net.pair(a_node, b_node)
    p, q = a_node.new_pair()
    values = [os.urandom(BY_REFERENCE + i) for i in range(6)]
    for value in values[:2]:
        q.send(SplicedPayload(value))
    carrier_a.send(msg("port", p))
    for value in values[2:4]:
        q.send(SplicedPayload(value))
    net.pump()
    (arrived,) = carrier_b.queue
    moved = arrived.resources[0]
    rec = record(moved)
    net.pump()
    for value in values[4:]:
        q.send(SplicedPayload(value))
    net.pump()
    assert rec.messages == [SplicedPayload(v).data for v in values]
    assert p.state is PortState.DONE
    one, other = a_node.new_pair()  # a peer in this process gets the pieces joined
    got = record(other)
    one.send(SplicedPayload(values[0]))
    assert got.messages == [SplicedPayload(values[0]).data]


def test_send_port_with_peer_on_third_node(net: MemoryNetwork) -> None:
    a_node, b_node, c_node = net.add_node(), net.add_node(), net.add_node()
    ab_a, ab_b = net.pair(a_node, b_node)
    p_on_a, q_on_c = net.pair(a_node, c_node)
    q_on_c.send(msg("1"))
    ab_a.send(msg("carrier", p_on_a))
    q_on_c.send(msg("2"))
    net.pump()
    moved = ab_b.queue[0].resources[0]
    rec = record(moved)
    q_on_c.send(msg("3"))
    net.pump()
    assert rec.text == "123"
    before = net.frames[c_node.id, a_node.id]
    q_on_c.send(msg("4"))
    net.pump()
    assert rec.text == "1234"
    assert net.frames[c_node.id, a_node.id] == before, "traffic still relayed through A"


def test_receiver_forwarded_twice_then_middle_dies(net: MemoryNetwork) -> None:
    """A sends a port to B, B forwards it to C; A and C then talk directly and
    killing B does not disturb them."""
    a_node, b_node, c_node = net.add_node(), net.add_node(), net.add_node()
    ab_a, ab_b = net.pair(a_node, b_node)
    bc_b, bc_c = net.pair(b_node, c_node)
    sender, receiver = a_node.new_pair()
    ab_a.send(msg("rx", receiver))
    sender.send(msg("1"))
    net.pump()
    at_b = ab_b.queue.popleft().resources[0]
    bc_b.send(msg("rx", at_b))
    sender.send(msg("2"))
    net.pump()
    at_c = bc_c.queue.popleft().resources[0]
    rec = record(at_c)
    net.pump()
    assert rec.text == "12"
    net.kill(b_node)
    net.pump()
    sender.send(msg("3"))
    net.pump()
    assert rec.text == "123"
    assert rec.error is None
    at_c.send(msg("reply"))
    net.pump()
    assert [x.data for x in sender.queue] == [b"reply"]


def test_remote_close(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    a.send(msg("x"))
    a.close()
    net.pump()
    assert rec.messages == [b"x"] and rec.closed


def test_node_failure_fails_ports(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, _b = net.pair(a_node, b_node)
    rec = record(a)
    net.kill(b_node)
    assert rec.error is not None
    assert "communication with node" in str(rec.error)
    assert "remote node disconnected" in str(rec.error)


def test_send_closed_port_arrives_closed(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    carrier_a, carrier_b = net.pair(a_node, b_node)
    p, q = a_node.new_pair()
    q.send(msg("last"))
    q.close()
    carrier_a.send(msg("port", p))
    net.pump()
    moved = carrier_b.queue[0].resources[0]
    rec = record(moved)
    net.pump()
    assert rec.messages == [b"last"]
    assert rec.closed
    carrier_a.close()
    net.pump()
    # Every proxy retired: nothing is left routed (a stand-in that expected the
    # wrong sequence number would leave the moved port proxying for ever).
    assert a_node.port_count() == 0
    assert b_node.port_count() == 0


def test_send_failed_port_arrives_failed(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    carrier_a, carrier_b = net.pair(a_node, b_node)
    p, q = a_node.new_pair()
    q.fail(NodeError("broken"))
    carrier_a.send(msg("port", p))
    net.pump()
    moved = carrier_b.queue[0].resources[0]
    rec = record(moved)
    assert rec.error is not None


def test_port_in_flight_to_failed_node_fails_peer(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    carrier_a, _carrier_b = net.pair(a_node, b_node)
    p, q = a_node.new_pair()
    rec = record(q)
    carrier_a.send(msg("port", p))
    net.kill(b_node)  # before the frame (and so before AcknowledgePort) ever arrived
    assert rec.error is not None
    assert p.state is PortState.FAILED


def test_port_arriving_that_refers_to_failed_node(net: MemoryNetwork) -> None:
    a_node, b_node, c_node = net.add_node(), net.add_node(), net.add_node()
    ab_a, ab_b = net.pair(a_node, b_node)
    p_on_a, _q_on_c = net.pair(a_node, c_node)
    ab_a.send(msg("port", p_on_a))
    b_node.fail_node(c_node.id, "remote node disconnected")
    net.pump()
    moved = ab_b.queue[0].resources[0]
    assert moved.state is PortState.FAILED


def test_bridge_remote_ordering(net: MemoryNetwork) -> None:
    """The bridge case with the outer ports on two other nodes."""
    a_node, b_node, c_node = net.add_node(), net.add_node(), net.add_node()
    p1, p2 = net.pair(a_node, b_node)
    p3, p4 = net.pair(b_node, c_node)
    for c in "ab":
        p2.send(msg(c))
    for c in "xycdefgh":
        p4.send(msg(c))
    net.pump()
    assert [p3.queue.popleft().data for _ in range(2)] == [b"x", b"y"]
    p2.bridge(p3)
    p4.send(msg("i"))
    p4.close()
    net.pump()
    rec = record(p1)
    net.pump()
    assert rec.text == "abcdefghi"
    assert rec.closed
    for node in (a_node, b_node, c_node):
        assert node.port_count() == 0, node


def test_both_ends_migrate_at_once(net: MemoryNetwork) -> None:
    """Each end of a pair is sent to a different node in the same instant."""
    a_node, b_node, c_node = net.add_node(), net.add_node(), net.add_node()
    ab_a, ab_b = net.pair(a_node, b_node)
    ac_a, ac_c = net.pair(a_node, c_node)
    p, q = a_node.new_pair()
    p.send(msg("p1"))
    q.send(msg("q1"))
    ab_a.send(msg("p", p))
    ac_a.send(msg("q", q))
    net.pump()
    on_b = ab_b.queue[0].resources[0]
    on_c = ac_c.queue[0].resources[0]
    rec_b, rec_c = record(on_b), record(on_c)
    on_b.send(msg("p2"))
    on_c.send(msg("q2"))
    net.pump()
    assert rec_b.text == "q1q2"
    assert rec_c.text == "p1p2"
    on_b.close()
    net.pump()
    assert rec_c.closed
    for carrier in (ab_a, ac_a):
        carrier.close()
    net.pump()
    for node in (a_node, b_node, c_node):
        assert node.port_count() == 0, node


def test_fd_travels_between_nodes(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    r, w = os.pipe()
    a.send(msg("fd", OwnedFd(w)))
    net.pump()
    (payload,) = b.queue
    (fd,) = payload.resources
    assert isinstance(fd, OwnedFd)
    os.write(fd.fileno(), b"ping")
    fd.close()
    assert os.read(r, 4) == b"ping"
    os.close(r)


def test_fds_of_message_to_unknown_port_are_closed(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, _b = net.pair(a_node, b_node)
    b_node._ports.clear()  # b is forgotten: frames for it now address an unknown port
    r, w = os.pipe()
    a.send(msg("fd", OwnedFd(w)))
    net.pump()
    assert os.read(r, 1) == b"", "the write end should have been closed"
    os.close(r)


def test_malformed_frame_cuts_only_that_link(net: MemoryNetwork) -> None:
    a_node, b_node, c_node = net.add_node(), net.add_node(), net.add_node()
    ab_a, _ab_b = net.pair(a_node, b_node)
    cb_c, cb_b = net.pair(c_node, b_node)
    rec_a = record(ab_a)
    rec_cb = record(cb_b)
    a_node._link(b_node.id).outbox.append((b"\xc1garbage", []))
    net.pump()
    assert net.protocol_errors and "malformed frame" in str(net.protocol_errors[0])
    assert rec_a.error is not None
    cb_c.send(msg("still fine"))
    net.pump()
    assert rec_cb.messages == [b"still fine"]
    assert rec_cb.error is None


def test_duplicate_sequence_number_fails_port(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    a.send(msg("1"))
    (frame,) = a_node.take_outbox(b_node.id)
    b_node.receive(a_node.id, *frame)
    b_node.receive(a_node.id, frame[0], [])
    assert rec.messages == [b"1"]
    assert rec.error is not None and "duplicate sequence number" in str(rec.error)


def test_out_of_order_frames_are_reordered(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    frames = []
    for c in "xyz":
        a.send(msg(c))
        frames += a_node.take_outbox(b_node.id)  # a frame each: no run forms
    assert len(frames) == 3
    for data, fds in reversed(frames):
        b_node.receive(a_node.id, data, fds)
    assert rec.text == "xyz"


# ------------------------------------------------------------------ runs of messages


def test_messages_queued_together_travel_as_one_run(net: MemoryNetwork) -> None:
    """Plain messages sent while the transport has not taken the outbox share a
    frame; the peer gets each one, in order, and the next send starts a new run."""
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    for c in "abcde":
        a.send(msg(c))
    ((data, fds),) = a_node.take_outbox(b_node.id)
    frame = decode_frame(data)
    assert isinstance(frame, MessageRunFrame) and frame.seq == 1 and fds == []
    assert [bytes(d) for d in frame.datas] == [c.encode() for c in "abcde"]
    b_node.receive(a_node.id, data, fds)
    assert rec.text == "abcde"
    a.send(msg("f"))  # alone in the outbox: a plain message frame
    ((data, fds),) = a_node.take_outbox(b_node.id)
    assert isinstance(decode_frame(data), MessageFrame)
    b_node.receive(a_node.id, data, fds)
    assert rec.text == "abcdef"
    assert [type(p) for p in rec.payloads] == [Payload] * 6


def test_send_data_queues_an_encoding_as_send_would(net: MemoryNetwork) -> None:
    """Encodings sent with send_data share runs with payloads sent with send, in
    order; to a local peer, or on a closed port, they behave as send does."""
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    a_node.send_data(a, b"1")
    a.send(msg("2"))
    a_node.send_data(a, b"3")
    ((data, _fds),) = a_node.take_outbox(b_node.id)
    frame = decode_frame(data)
    assert isinstance(frame, MessageRunFrame) and frame.datas == [b"1", b"2", b"3"]
    b_node.receive(a_node.id, data, [])
    assert rec.text == "123"
    here, there = a_node.new_pair()
    got = record(there)
    a_node.send_data(here, b"local")
    assert got.messages == [b"local"]
    a.close()
    a_node.send_data(a, b"after close")
    net.pump()
    assert rec.text == "123" and rec.closed


def test_a_run_ends_where_another_frame_is_queued(net: MemoryNetwork) -> None:
    """Frames keep their order on a link: a message carrying a port, or a message
    to another port, is queued after the run, and later messages start a new run."""
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    a2, b2 = net.pair(a_node, b_node)
    rec, rec2 = record(b), record(b2)
    p, _q = a_node.new_pair()
    a.send(msg("1"))
    a.send(msg("2"))
    a2.send(msg("other"))
    a.send(msg("3", p))
    a.send(msg("4"))
    a.send(msg("5"))
    kinds = [type(decode_frame(frame_bytes(d))) for d, _fds in a_node._link(b_node.id).outbox]
    assert kinds == [MessageRunFrame, MessageFrame, MessageFrame, MessageRunFrame]
    net.pump()
    assert rec.text == "12345" and rec2.text == "other"
    assert isinstance(rec.payloads[2].resources[0], Port)


def test_a_run_stays_within_the_link_frame_limit(net: MemoryNetwork) -> None:
    """A link told its frame limit never gets a run above it."""
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    a_node.connect(b_node.id, lambda: None, max_frame=200)
    rec = record(b)
    texts = [f"{i:03d}" * 10 for i in range(40)]  # 30 bytes each
    for text in texts:
        a.send(msg(text))
    frames = a_node.take_outbox(b_node.id)
    assert len(frames) > 1
    assert all(len(frame_bytes(d)) <= 200 for d, _fds in frames)
    for data, fds in frames:
        b_node.receive(a_node.id, data, fds)
    assert rec.messages == [t.encode() for t in texts]


def test_a_run_that_arrives_early_waits_for_the_message_before_it(net: MemoryNetwork) -> None:
    """The general path takes a run message by message: an early run waits, in
    order, for the frame it follows."""
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = record(b)
    a.send(msg("a"))
    first = a_node.take_outbox(b_node.id)
    for c in "bcd":
        a.send(msg(c))
    ((run, fds),) = a_node.take_outbox(b_node.id)
    assert isinstance(decode_frame(run), MessageRunFrame)
    b_node.receive(a_node.id, run, fds)
    assert rec.text == ""
    b_node.receive(a_node.id, *first[0])
    assert rec.text == "abcd"
    a.send(msg("e"))
    net.pump()
    assert rec.text == "abcde" and rec.error is None


class BatchRecorder(Recorder):
    """A recorder that also takes runs of messages in one call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def port_run(self, port: Port, run: RunPayload, wakes: list[object]) -> None:
        self.batches.append(len(run.datas))
        for data in run.datas:
            self.port_message(port, Payload(data), wakes)


def test_a_run_in_order_reaches_a_batch_handler_in_one_call(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = BatchRecorder()
    b.set_handler(rec)
    for c in "abcd":
        a.send(msg(c))
    net.pump()
    a.send(msg("e"))  # alone: an ordinary message frame
    net.pump()
    assert rec.text == "abcde" and rec.batches == [4]
    assert b.next_peer_seq == 6


def test_an_early_run_reaches_a_batch_handler_message_by_message(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a, b = net.pair(a_node, b_node)
    rec = BatchRecorder()
    b.set_handler(rec)
    a.send(msg("a"))
    first = a_node.take_outbox(b_node.id)
    for c in "bcd":
        a.send(msg(c))
    ((run, fds),) = a_node.take_outbox(b_node.id)
    b_node.receive(a_node.id, run, fds)
    b_node.receive(a_node.id, *first[0])
    assert rec.text == "abcd" and rec.batches == []


@pytest.mark.parametrize(
    ("datas", "nfds", "what"),
    [([], 0, "holds 0 messages and 0 descriptors"), ([b"x"], 1, "and 1 descriptors")],
)
def test_a_run_with_descriptors_or_no_message_cuts_the_link(
    net: MemoryNetwork, datas: list[bytes], nfds: int, what: str
) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    _a, b = net.pair(a_node, b_node)
    rec = record(b)
    r, w = os.pipe()
    os.close(w)
    fds = [OwnedFd(r)] if nfds else []
    if not nfds:
        os.close(r)
    bad = encode_frame(MessageRunFrame(b.id, 1, cast("list[memoryview]", datas)))
    a_node._link(b_node.id).outbox.append((bad, fds))
    net.pump()
    (error,) = net.protocol_errors
    assert "run of messages" in str(error) and what in str(error)
    assert all(fd.closed for fd in fds)
    assert rec.messages == [] and rec.error is not None


def test_send_and_close_is_one_frame(net: MemoryNetwork) -> None:
    a_node, b_node = net.add_node(), net.add_node()
    a2, b2 = net.pair(a_node, b_node)
    rec2 = record(b2)
    a2.send_and_close(msg("final"))
    assert net.pump() == 2  # the message-and-close, and the echo of the close
    assert rec2.messages == [b"final"]
    assert rec2.closed
    assert a2.state is PortState.DONE


def test_send_and_close_after_peer_closed_drops_the_message() -> None:
    node = LocalNode()
    a, b = node.new_pair()
    inner_a, inner_b = node.new_pair()
    inner_rec = record(inner_b)
    b.close()
    a.send_and_close(msg("late", inner_a))
    assert inner_rec.closed, "resources of a dropped message are closed"
    assert a.state is PortState.DONE


def test_a_peer_that_races_ahead_of_its_moving_port_never_names_it_too_early(
    net: MemoryNetwork,
) -> None:
    """P moves from A to B; its peer Q then moves from A to C and on to B, and that
    road is faster.  Q's record must not name P's new port on B before B has it --
    B would rightly refuse a port it never handed out -- which is what waiting for
    B's acknowledgement before Q points at the new port guarantees, even for a
    fresh pair that never carried anything."""
    a_node, b_node, c_node = net.add_node(), net.add_node(), net.add_node()
    ab_a, ab_b = net.pair(a_node, b_node)
    ac_a, ac_c = net.pair(a_node, c_node)
    cb_c, cb_b = net.pair(c_node, b_node)
    p, q = a_node.new_pair()
    ab_a.send(msg("p", p))  # waits on the link A -> B
    ac_a.send(msg("q", q))
    assert net.deliver_one(a_node, c_node)
    (q_on_c,) = ac_c.queue[0].resources
    cb_c.send(msg("q again", q_on_c))
    assert net.deliver_one(c_node, b_node)  # Q reaches B before P does
    net.pump()
    assert net.protocol_errors == []
    (p_on_b,) = ab_b.queue[0].resources
    (q_on_b,) = cb_b.queue[0].resources
    assert isinstance(p_on_b, Port) and isinstance(q_on_b, Port)
    rec = record(q_on_b)
    p_on_b.send(msg("across"))
    net.pump()
    assert rec.messages == [b"across"]
    assert a_node.moving_ports() == [] and c_node.moving_ports() == []
