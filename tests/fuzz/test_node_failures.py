"""The three-node state machine of test_node_stateful, with a fourth node and failures.

Everything the original machine does -- sends, migrations (also of ports still
moving), bridges, closes, single-frame deliveries in any interleaving -- plus, at a
random moment, a node dying (its process is gone: frames it had not sent are lost,
every other node fails it) and a link being cut between two live nodes.

Invariants:

* per-sender FIFO, always: what an end has received is a prefix of what was sent
  to it, in order, without duplicates;
* no loss while both ends live: a stream that reported no failure at either end
  delivers everything, exactly;
* nothing hangs: in the end every end still held on a live node has been closed by
  its peer or has failed (the test closes one end of each stream still open), and
  no port of a live node is left moving or proxying.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from workmesh import NodeError
from workmesh._node import LocalNode, Port, Wake
from workmesh._wire import Payload
from workmesh.testing import MemoryNetwork

from ..chaos._scale import scale, timeout
from ..test_node_stateful import Carrier, End, MeshMachine
from ._settings import PHASES

pytestmark = pytest.mark.timeout(timeout(short=300, long=3600))

EXTRA_NODES = 1  # beside the original machine's three


class TolerantCarrier(Carrier):
    """A carrier that may fail: the link under it was cut or its far node died."""

    def port_failed(self, port: Port, error: NodeError, wakes: list[object]) -> None:
        pass


class FailureMachine(MeshMachine):
    CUT_LINKS = True  # also break links between two nodes that both live on

    def __init__(self) -> None:
        super().__init__()
        for _ in range(EXTRA_NODES):
            new = len(self.nodes)
            self.nodes.append(self.net.add_node())
            for other in range(new):
                a, b = self.net.pair(self.nodes[new], self.nodes[other])
                self.carriers[new, other], self.carriers[other, new] = a, b
        for port in self.carriers.values():
            port.set_handler(TolerantCarrier(self.ends))  # type: ignore[arg-type]  # see Carrier
        self.dead: set[int] = set()
        self.cut: set[frozenset[int]] = set()

    # ------------------------------------------------------------ where things are
    def _alive_nodes(self) -> list[int]:
        return [i for i in range(len(self.nodes)) if i not in self.dead]

    def _reachable(self, i: int, j: int) -> bool:
        return i not in self.dead and j not in self.dead and frozenset((i, j)) not in self.cut

    def _live(self) -> list[End]:
        # Ends on dead nodes are gone with them; a failed end can do nothing useful.
        return [
            e for e in super()._live() if self.location[e.name] not in self.dead and e.error is None
        ]

    def _busy_links(self) -> list[tuple[int, int]]:
        # A dead node sends nothing more; what it had not sent is lost.
        return [(i, j) for i, j in super()._busy_links() if self._reachable(i, j)]

    # ------------------------------------------------------------ the rules, re-aimed
    # The original rules pick nodes by number; these pick among the live ones.
    @precondition(lambda self: len(self._live()) < 6)
    @rule(data=st.data())
    def new_stream(self, data: st.DataObject) -> None:
        MeshMachine.new_stream(self, data.draw(st.sampled_from(self._alive_nodes())))

    @precondition(lambda self: self._live())
    @rule(data=st.data())
    def migrate(self, data: st.DataObject) -> None:
        end = data.draw(st.sampled_from(self._live()))
        src = self.location[end.name]
        dests = [d for d in self._alive_nodes() if d != src and self._reachable(src, d)]
        if not dests:
            return
        dest = data.draw(st.sampled_from(dests))
        port, end.port = end.port, None
        assert port is not None
        port.remove_handler()
        self.location[end.name] = dest
        self.carriers[src, dest].send(Payload(end.name.encode(), [port]))

    # ------------------------------------------------------------ failures
    @precondition(lambda self: not self.dead)
    @rule(data=st.data())
    def kill_node(self, data: st.DataObject) -> None:
        """A node's process dies at this moment."""
        victim = data.draw(st.sampled_from(self._alive_nodes()))
        self.dead.add(victim)
        self.net.kill(self.nodes[victim])

    @precondition(lambda self: self.CUT_LINKS and not self.cut and len(self._alive_nodes()) >= 2)
    @rule(data=st.data())
    def cut_link(self, data: st.DataObject) -> None:
        """The connection between two live nodes breaks."""
        i, j = data.draw(st.sampled_from(list(itertools.combinations(self._alive_nodes(), 2))))
        self.cut.add(frozenset((i, j)))
        self.net.cut(self.nodes[i], self.nodes[j])

    # ------------------------------------------------------------ invariants
    @invariant()
    def no_failures(self) -> None:
        assert not self.net.protocol_errors
        if not self.dead and not self.cut:
            for end in self.ends.values():
                assert end.error is None, (end.name, end.error)

    @invariant()
    def each_sender_in_order(self) -> None:
        for end in self.ends.values():
            got = end.received
            assert got == end.expect[: len(got)], (
                f"{end.name} received {got}, which is not a prefix of {end.expect}"
            )

    def _held(self, end: End) -> bool:
        """Still held by the test on a live node (not closed, bridged away or lost)."""
        return (
            end.port is not None
            and not end.closed
            and not end.retired
            and self.location[end.name] not in self.dead
        )

    def teardown(self) -> None:
        self.net.pump()
        # No loss while both ends live: a stream with no failure at either end got
        # everything.
        for end in self.ends.values():
            peer = end.peer
            if not self._held(end) or peer is None or not self._held(peer):
                continue
            if end.error is None and peer.error is None:
                assert end.received == end.expect, end.name
        # Nothing hangs: close one end of each stream still open at both ends; then
        # every end still held has heard of its peer's close, or has failed.
        for end in sorted(self.ends.values(), key=lambda e: e.name):
            peer = end.peer
            open_pair = (
                self._held(end)
                and end.error is None
                and not end.closed_by_peer
                and peer is not None
                and self._held(peer)
                and peer.error is None
                and not peer.closed
            )
            if open_pair:
                assert end.port is not None
                end.closed = True
                end.port.close()
        self.net.pump()
        for end in self.ends.values():
            if self._held(end):
                assert end.closed_by_peer or end.error is not None, (
                    f"{end.name} never learnt that its stream ended"
                )
        for i in self._alive_nodes():
            assert not self.nodes[i].moving_ports(), "a proxy never retired"


class DeathMachine(FailureMachine):
    """Nodes die (their processes end); links between live nodes hold."""

    CUT_LINKS = False


_machine_settings = settings(
    max_examples=scale(short=120, long=2000),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    report_multiple_bugs=False,
    phases=PHASES,
)
DeathMachine.TestCase.settings = _machine_settings
FailureMachine.TestCase.settings = _machine_settings
TestNodeDeaths = DeathMachine.TestCase

# Known open defect: with a link cut between two nodes that both live on (a
# partial partition), some moves leave an end that never hears of its peer's
# failure or a proxy that waits for ever.  The machine still runs every time; it
# is expected to find such an interleaving until the protocol covers the case.
TestPartialPartitions = pytest.mark.xfail(
    reason="known: moves across a partial partition can leave an end or a proxy hanging",
    strict=False,
)(FailureMachine.TestCase)


# ------------------------------------------------------------------ what the machine found
# Two small scenes it shrank to.  A port moves from node 0 to node 2, then on to
# node 1 -- which has already lost node 0, where the port's peer is.


class Catch:
    """A carrier's handler that keeps the ports that arrive, and records failures."""

    def __init__(self) -> None:
        self.ports: list[Port] = []
        self.error: NodeError | None = None
        self.closed = False

    def port_message(self, port: Port, payload: Payload, wakes: list[Wake]) -> None:
        self.ports += payload.take_resources()

    def port_closed(self, port: Port, wakes: list[Wake]) -> None:
        self.closed = True

    def port_failed(self, port: Port, error: NodeError, wakes: list[Wake]) -> None:
        self.error = error


def carrier(net: MemoryNetwork, src: LocalNode, dst: LocalNode) -> tuple[Port, Catch]:
    """A port on ``src`` to send ports to ``dst`` with; what arrives there is caught."""
    to_dst, at_dst = net.pair(src, dst)
    arrivals = Catch()
    at_dst.set_handler(arrivals)
    return to_dst, arrivals


def move_towards_a_lost_node() -> tuple[MemoryNetwork, list[LocalNode], Catch]:
    net = MemoryNetwork()
    n0, n1, n2 = (net.add_node() for _ in range(3))
    to_n2, arrivals_n2 = carrier(net, n0, n2)
    to_n1, _arrivals_n1 = carrier(net, n2, n1)
    mover, stays = n0.new_pair()
    stays_end = Catch()
    stays.set_handler(stays_end)
    net.cut(n0, n1)
    to_n2.send(Payload(b"", [mover]))
    net.pump()
    (moved,) = arrivals_n2.ports
    to_n1.send(Payload(b"", [moved]))
    net.pump()
    return net, [n0, n1, n2], stays_end


def test_a_port_that_arrives_failed_releases_its_old_node() -> None:
    """Node 1 takes the port in as failed (its peer's node is lost to it); node 2,
    whence it came, must hear of it: its port may not stay SENDING for ever, and the
    peer on node 0 must learn that its stream ended."""
    _net, (_n0, _n1, n2), stays_end = move_towards_a_lost_node()
    assert not n2.moving_ports(), "node 2's port waits for an acknowledgement for ever"
    assert stays_end.error is not None or stays_end.closed, "the peer never learns"


def test_a_late_failure_for_a_port_that_arrived_failed_is_no_forgery() -> None:
    """Node 0 then dies; node 2 fails its port and tells node 1, where the port had
    arrived failed.  That is a late frame for a failed port, not a forged id: the
    link between nodes 2 and 1 must not be cut."""
    net, (n0, _n1, _n2), _stays_end = move_towards_a_lost_node()
    net.kill(n0)
    net.pump()
    assert not net.protocol_errors, net.protocol_errors


def test_ends_redirected_towards_a_lost_node_fail() -> None:
    """Both ends of a stream on node 1 move, one to node 0 and one to node 2, which
    have lost each other.  Each end is then told (ChangePeer) to talk to the other
    directly, on a node its own node has failed: both must fail -- not stay open
    with what they send dropped on the floor."""
    net = MemoryNetwork()
    n0, n1, n2 = (net.add_node() for _ in range(3))
    to_n0, arrivals_n0 = carrier(net, n1, n0)
    to_n2, arrivals_n2 = carrier(net, n1, n2)
    one, other = n1.new_pair()
    net.cut(n0, n2)
    to_n0.send(Payload(b"", [one]))
    to_n2.send(Payload(b"", [other]))
    net.pump()
    (at_0,), (at_2,) = arrivals_n0.ports, arrivals_n2.ports
    end_0, end_2 = Catch(), Catch()
    at_0.set_handler(end_0)
    at_2.set_handler(end_2)
    at_0.send(Payload(b"lost?"))
    net.pump()
    assert end_0.error is not None, "the end on node 0 talks into a lost node, unaware"
    assert end_2.error is not None, "the end on node 2 waits for ever"


def test_a_proxy_failing_after_its_port_ended_elsewhere_is_no_forgery() -> None:
    """A port on node 0 hears (ChangePeer) that its peer moved on from node 1 to
    node 2, and ends there, while its acknowledgement to node 1's proxy is still
    on the way.  Node 2 dies; the proxy fails and tells node 0's port, which is
    gone by then.  That is a late frame for it, not a forged id: the link between
    nodes 1 and 0 must not be cut, and the proxy must settle."""
    net = MemoryNetwork()
    n0, n1, n2 = (net.add_node() for _ in range(3))
    to_n1, arrivals_n1 = carrier(net, n0, n1)
    to_n2, _arrivals_n2 = carrier(net, n1, n2)
    here, mover = n0.new_pair()
    here.set_handler(Catch())
    to_n1.send(Payload(b"", [mover]))
    net.pump()
    (on_n1,) = arrivals_n1.ports
    to_n2.send(Payload(b"", [on_n1]))

    def deliver_all_but_node_0_to_node_1() -> None:
        links = [(a, b) for a, b in itertools.permutations((n0, n1, n2), 2) if (a, b) != (n0, n1)]
        while any([net.deliver_one(a, b) for a, b in links]):
            pass

    deliver_all_but_node_0_to_node_1()
    assert n1.moving_ports(), "node 1 keeps a proxy until node 0 acknowledges"
    here.close()  # to the peer's new place, on node 2
    deliver_all_but_node_0_to_node_1()
    net.kill(n2)
    net.pump()
    assert not net.protocol_errors, net.protocol_errors
    assert not n1.moving_ports(), "node 1's proxy never settled"
