"""Ports and the local node (layer L2): a synchronous, sans-I/O state machine.

Theory of operation
-------------------
A *port* is one end of an untyped, bidirectional stream of messages (a
:class:`~workmesh._wire.Payload` each).  Ports come in pairs; each port knows its
*peer*.  A peer is either another port object of the same node, or the address
``(node id, port id)`` of a port on a remote node.  Every process has one
:class:`LocalNode`; tests may build several and join them with an in-memory
transport.

Ordering.  Every event a port sends to its peer carries a sequence number from the
sender's ``next_local_seq`` (starting at 1).  The receiver processes events in
strict sequence order and parks early ones in a heap, so ordering does not depend
on which route an event took.  Two events are out of band (sequence 0): FailPort,
which overtakes queued data, and AcknowledgePort.

Close and failure.  Close is a handshake: the closer sends ``close`` and stays
registered until its peer echoes it.  Failure is immediate: a failing port sends
FailPort to its peer (or onward to its target when it is a proxy), and a node that
is lost fails every port whose peer or target lives there.

Migration (sending port P, whose peer is Q, to node B).  P picks the new id X,
reserves one sequence number for a later ChangePeer, becomes SENDING and writes a
:class:`~workmesh._frames.PortRecord`.  B creates X peered with Q and acknowledges
to P.  On the acknowledgement P forwards to X everything it holds, becomes
PROXYING and sends Q ``ChangePeer(X, delta)`` with the reserved number.  Q answers
AcknowledgeChangePeer to P (at its own next number) and from then on talks to X
directly, shifting its numbering by ``delta`` so that X sees one gapless sequence.
``delta`` is ``next_peer_seq - fwd_seq + 1``: the acknowledgement spends one of
Q's numbers that is never forwarded.  P retires when the acknowledgement arrives
in order; until then it forwards whatever Q sends.  Bridging two ports is the same
dance done by both at once.

Locking.  One re-entrant lock per node guards every port of that node.  Work is
done iteratively through a queue of (port, event) pairs, never by recursion.
Handlers run under the lock and must only record what happened; the wake-up
callables they append are run after the lock is released.  Frames for remote
nodes are appended to per-node outboxes; the transport is told (after the lock is
released) that an outbox has something, and drains it.  This module performs no
I/O of its own.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from ._errors import NodeError, PayloadError, WorkmeshError
from ._fd import OwnedFd
from ._frames import (
    RUN_BYTES,
    AckChangePeerFrame,
    AckPortFrame,
    ChangePeerFrame,
    FailPortFrame,
    FdRecord,
    Frame,
    MessageFrame,
    MessageRunFrame,
    PeerGoneFrame,
    PortRecord,
)
from ._ids import ZERO_ID, NodeId, PortId, new_node_id, new_port_id, node_name, port_name
from ._wire import (
    Charge,
    Data,
    FrameBytes,
    FrameData,
    Inbound,
    InboundPayload,
    InboundRunPayload,
    MessageRun,
    Payload,
    ReadFrame,
    RunPayload,
    SplicedPayload,
    decode_frame,
    encode_frame,
    encode_spliced,
    encoding_of,
    message_frame,
)

log = logging.getLogger(__name__)

Wake = Callable[[], None]
Address = tuple[NodeId, PortId]


_LATE_GENERATION: Final = 16384


class ProtocolError(WorkmeshError):
    """A remote node broke the protocol (the connection to it should be cut)."""


class PortState(enum.Enum):
    PEERED = "peered"
    SENDING = "sending"
    PROXYING = "proxying"
    DONE = "done"
    FAILED = "failed"


# Members are singletons: hash them by identity, not (in Python code) by name --
# the transition table is consulted several times per message.
PortState.__hash__ = object.__hash__  # type: ignore[method-assign]
# The state the per-message fast paths test for, as a module global: reading an
# enum member off its class costs ~46 ns on CPython 3.11, a global ~4 ns.
_PEERED: Final = PortState.PEERED


# Legal transitions: (state, event) -> new state.  Failure is legal from every live
# state and is handled separately.
_TRANSITIONS: Final[dict[tuple[PortState, str], PortState]] = {
    (PortState.PEERED, "send_away"): PortState.SENDING,
    (PortState.PEERED, "bridge"): PortState.PROXYING,
    (PortState.PEERED, "closed"): PortState.DONE,
    (PortState.SENDING, "ack_port"): PortState.PROXYING,
    (PortState.PROXYING, "ack_change_peer"): PortState.DONE,
}


class IllegalTransition(WorkmeshError):
    pass


class PortHandler(Protocol):
    """Receives a port's events.  Runs under the node lock: record, don't act."""

    def port_message(self, port: Port, payload: Payload, wakes: list[Wake]) -> None: ...

    def port_closed(self, port: Port, wakes: list[Wake]) -> None: ...

    def port_failed(self, port: Port, error: NodeError, wakes: list[Wake]) -> None: ...


# A handler may also define ``port_run(port, run, wakes)`` to take a run of
# messages that arrived in order (a RunPayload, see MessageRun) in one call; it
# must do what ``port_message`` for each of its messages, in order, would.
TakeRun = Callable[["Port", RunPayload, list[Wake]], None]


# Event kinds inside a node.
MESSAGE, CHANGE_PEER, ACK_CHANGE_PEER, ACK_PORT, FAIL_PORT, PEER_GONE = 1, 3, 4, 5, 6, 7


class _Event:
    __slots__ = ("close", "delta", "error", "kind", "lazy", "new_peer", "payload", "seq")

    def __init__(
        self,
        kind: int,
        seq: int = 0,
        *,
        payload: Payload | None = None,
        close: bool = False,
        new_peer: Port | Address | None = None,
        delta: int = 0,
        error: NodeError | None = None,
        lazy: bool = False,
    ) -> None:
        self.kind = kind
        self.lazy = lazy
        self.seq = seq
        self.payload = payload
        self.close = close
        self.new_peer = new_peer
        self.delta = delta
        self.error = error


_tiebreak: Final = itertools.count()
# Frames nobody waits for: the transport may send them late, with the next other one.
# (Other events are marked lazy one by one where they are made: see _Event.lazy.)
_HOUSEKEEPING: Final = frozenset((ACK_CHANGE_PEER,))
_BATCH_FRAMES: Final = 128


class Port:
    """One end of a message stream.  Create pairs with :meth:`LocalNode.new_pair`."""

    __slots__ = (
        "__weakref__",
        "closed_local",
        "early",
        "error",
        "fwd_seq",
        "handler",
        "held",
        "id",
        "next_local_seq",
        "next_peer_seq",
        "node",
        "peer",
        "queue",
        "registered",
        "reserved_seq",
        "state",
        "target",
    )

    def __init__(self, node: LocalNode, port_id: PortId | None = None) -> None:
        self.node = node
        self.id = port_id if port_id is not None else new_port_id()
        self.state = PortState.PEERED
        self.peer: Port | Address | None = None
        self.target: Port | Address | None = None
        self.next_local_seq = 1
        self.next_peer_seq = 1
        self.early: list[tuple[int, int, _Event]] = []
        self.handler: PortHandler | None = None
        self.queue: deque[Payload] = deque()
        self.held: list[_Event] = []
        self.closed_local = False
        self.error: NodeError | None = None
        self.fwd_seq = 1
        self.reserved_seq = 0
        self.registered = False

    # Public operations delegate to the node, which takes the lock.
    def send(self, payload: Payload) -> None:
        self.node.send(self, payload)

    def close(self) -> None:
        self.node.close(self)

    def send_and_close(self, payload: Payload) -> None:
        self.node.send_and_close(self, payload)

    def fail(self, error: NodeError) -> None:
        self.node.fail(self, error)

    def set_handler(self, handler: PortHandler) -> None:
        self.node.set_handler(self, handler)

    def remove_handler(self) -> None:
        self.node.remove_handler(self)

    def bridge(self, other: Port) -> None:
        self.node.bridge(self, other)

    def is_closed(self) -> bool:
        """True once the peer is gone: closed, or failed."""
        return self.state in (PortState.DONE, PortState.FAILED)

    def __repr__(self) -> str:
        return f"<Port {port_name(self.id)} {self.state.value}>"


class LinkState(enum.Enum):
    QUEUING = "queuing"
    ACTIVE = "active"
    FAILED = "failed"


_ACTIVE: Final = LinkState.ACTIVE  # see _PEERED


class _Link:
    """A remote node as this node sees it; frames wait in the outbox for the transport."""

    __slots__ = (
        "error",
        "max_run",
        "node_id",
        "notify",
        "notify_lazy",
        "outbox",
        "state",
        "urgent",
    )

    def __init__(self, node_id: NodeId) -> None:
        self.node_id = node_id
        self.state = LinkState.QUEUING
        self.outbox: list[tuple[FrameData | MessageRun, list[OwnedFd]]] = []
        self.max_run = RUN_BYTES  # bytes a MessageRun may grow to on this link
        # ``notify``: a frame someone waits for is queued; ``notify_lazy``: only
        # housekeeping frames are (see _emit).  ``urgent``: the outbox holds one of
        # the first kind since the transport last took it.
        self.notify: Wake | None = None
        self.notify_lazy: Wake | None = None
        self.urgent = False
        self.error: NodeError | None = None


class LocalNode:
    """All ports of one process (or, in tests, of one simulated node)."""

    def __init__(self, node_id: NodeId | None = None) -> None:
        self.id = node_id if node_id is not None else new_node_id()
        self._lock = threading.RLock()
        self._owner = 0  # thread id holding the lock in an operation, else 0
        self._ports: dict[PortId, Port] = {}
        self._links: dict[NodeId, _Link] = {}
        self._failed_nodes: dict[NodeId, NodeError] = {}
        self._work: deque[tuple[Port, _Event]] = deque()
        self._wakes: list[Wake] = []
        self._deferred_closes: list[Port] = []
        self._settle_waiters: list[Wake] = []
        # Ports gone while frames may still come for them (they failed, or just
        # left a proxy): a frame for one of these is a late arrival, not a forgery
        # (see _receive and _expect_late_frames).
        self._late_ids: set[PortId] = set()
        self._late_ids_old: set[PortId] = set()
        self.on_unknown_node: Callable[[NodeId], None] | None = None
        # Event loops (opaque tokens here) that offered to read connections while
        # they run, with how many times each did; told of a withdrawal: listeners.
        self._homes_lock = threading.Lock()
        self._home_offers: dict[object, int] = {}
        self._home_listeners: list[Callable[[object], None]] = []

    def __repr__(self) -> str:
        return f"<LocalNode {node_name(self.id)}>"

    # ----------------------------------------------------------------- reading homes
    # A transport may move the reading of a connection to the loop its messages
    # wake (see note_hop); it moves it only to a loop that offered, and the loop
    # must withdraw, on its own thread, before it stops.  The node only keeps the
    # book: it never touches a loop.

    def offer_home(self, loop: object) -> None:
        """``loop`` may read connections from now until :meth:`withdraw_home`."""
        with self._homes_lock:
            self._home_offers[loop] = self._home_offers.get(loop, 0) + 1

    def withdraw_home(self, loop: object) -> None:
        """Take back one offer of ``loop`` (call on its thread); the last one makes
        every connection it reads give reading back before this returns."""
        with self._homes_lock:
            count = self._home_offers.get(loop, 0)
            if count > 1:
                self._home_offers[loop] = count - 1
                return
            self._home_offers.pop(loop, None)
            listeners = list(self._home_listeners)
        for listener in listeners:
            listener(loop)

    def home_offered(self, loop: object) -> bool:
        return loop in self._home_offers

    def listen_homes(self, listener: Callable[[object], None], *, stop: bool = False) -> None:
        """Call ``listener(loop)`` when a loop withdraws its last offer (or stop)."""
        with self._homes_lock:
            if stop:
                if listener in self._home_listeners:
                    self._home_listeners.remove(listener)
            else:
                self._home_listeners.append(listener)

    # ----------------------------------------------------------------- locking
    def _enter(self) -> None:
        self._lock.acquire()
        self._owner = threading.get_ident()

    def _leave(self) -> None:
        """Finish queued work, release the lock, then run the collected wake-ups."""
        try:
            if self._work:
                self._pump()
            while self._deferred_closes:
                port = self._deferred_closes.pop()
                self._close(port)
                self._pump()
            if self._settle_waiters and not self._in_flight():
                self._wakes += self._settle_waiters
                self._settle_waiters = []
            wakes: list[Wake] | tuple[()] = self._wakes
            if wakes:
                self._wakes = []
            else:
                wakes = ()  # not the live list: another thread may append to it
        finally:
            self._owner = 0
            self._lock.release()
        for wake in wakes:
            wake()

    def in_operation(self) -> bool:
        """True when the calling thread is inside one of this node's operations."""
        return self._owner == threading.get_ident()

    def when_free(self, callback: Wake) -> None:
        """Run ``callback`` now, or -- called from inside an operation (a finalizer
        that runs there, say) -- once that operation has released the node."""
        if self.in_operation():
            self._wakes.append(callback)
        else:
            callback()

    # ----------------------------------------------------------------- ports
    def new_pair(self) -> tuple[Port, Port]:
        a, b = Port(self), Port(self)
        a.peer, b.peer = b, a
        return a, b

    def bootstrap_port(self, port_id: PortId, peer: Address) -> Port:
        """A port already peered with a remote port (both sides agree on the ids).

        This is how two nodes get their first stream: an invitation names both ids.
        """
        self._enter()
        try:
            port = Port(self, port_id)
            failure = self._failed_nodes.get(peer[0])
            if failure is not None:
                port.state, port.error = PortState.FAILED, failure
                return port
            port.peer = self._resolve(peer)
            self._register(port)
            return port
        finally:
            self._leave()

    def _in_flight(self) -> bool:
        moving = (PortState.SENDING, PortState.PROXYING)
        return any(port.state in moving for port in self._ports.values())

    def when_settled(self, callback: Wake) -> None:
        """Call ``callback`` once no port of this node is being moved or proxied.

        A process must wait for this before it exits, or messages still travelling
        through its proxies are lost.
        """
        self._enter()
        try:
            self._settle_waiters.append(callback)
        finally:
            self._leave()

    def moving_ports(self) -> list[str]:
        """Ports still being moved or proxied, for diagnostics."""
        with self._lock:
            moving = (PortState.SENDING, PortState.PROXYING)
            return [
                f"{port_name(p.id)} {p.state.value} target={p.target!r} peer={p.peer!r}"
                for p in self._ports.values()
                if p.state in moving
            ]

    def port_count(self) -> int:
        """Ports registered for cross-node routing (diagnostics and tests)."""
        return len(self._ports)

    def _register(self, port: Port) -> None:
        if not port.registered:
            port.registered = True
            self._ports[port.id] = port

    def _deregister(self, port: Port) -> None:
        if port.registered:
            port.registered = False
            self._ports.pop(port.id, None)

    def _transition(self, port: Port, event: str) -> None:
        new = _TRANSITIONS.get((port.state, event))
        if new is None:
            raise IllegalTransition(
                f"port {port_name(port.id)}: event {event!r} is not allowed in state "
                f"{port.state.value!r}"
            )
        port.state = new

    # ----------------------------------------------------------------- user operations
    def send(self, port: Port, payload: Payload) -> None:
        self._enter()
        try:
            if port.state is not _PEERED or port.closed_local:
                self._drop_payload(payload)
                return
            if (
                not payload.resources
                and type(payload) is not SplicedPayload
                and self._queue_plain(port, payload.data)
            ):
                return
            self._send_peer(port, _Event(MESSAGE, payload=payload))
        finally:
            self._leave()

    def send_data(self, port: Port, data: bytes) -> None:
        """``send(port, Payload(data))`` for an encoding that carries no resource:
        the common case of a stream needs no payload object."""
        self._enter()
        try:
            if port.state is not _PEERED or port.closed_local:
                return  # nothing to drop: no resources
            if not self._queue_plain(port, data):
                self._send_peer(port, _Event(MESSAGE, payload=Payload(data, [])))
        finally:
            self._leave()

    def _queue_plain(self, port: Port, data: Data) -> bool:
        """Queue a message with no resources for a peer on a connected node; False
        (nothing done) if the peer is elsewhere."""
        peer = port.peer
        if type(peer) is not tuple:
            return False
        link = self._links.get(peer[0])
        if link is None or link.state is not _ACTIVE:
            return False
        # The common case -- plain data to a peer on a connected node -- queued at
        # once: the steps _send_peer, _route_for and _emit take for it (a node with
        # an active link has not failed).  Measured, a sixth of the sender's cost
        # per streamed message.  (A large value sent by reference takes _emit's
        # way, which frames it.)
        seq = port.next_local_seq
        port.next_local_seq = seq + 1
        outbox = link.outbox
        if outbox:
            last = outbox[-1][0]
            if (
                type(last) is MessageRun
                and last.target == peer[1]
                and last.extend(seq, data, link.max_run)
            ):
                # Merged into the run the transport has not taken yet (see
                # MessageRun); a long burst is still streamed.
                if not len(last.datas) % _BATCH_FRAMES and link.notify is not None:
                    self._wakes.append(link.notify)
                return True
        self._enqueue(link, MessageRun(peer[1], seq, data), [], lazy=False)
        return True

    def send_and_close(self, port: Port, payload: Payload) -> None:
        """Send a last message and close, as one event (one frame to a remote peer)."""
        self._enter()
        try:
            if port.state is _PEERED and not port.closed_local:
                port.handler = None
                queued, port.queue = port.queue, deque()
                for old in queued:
                    self._drop_payload(old)
                port.closed_local = True
                self._send_peer(port, _Event(MESSAGE, payload=payload, close=True))
            else:
                self._drop_payload(payload)
                self._close(port)
        finally:
            self._leave()

    def close(self, port: Port) -> None:
        """Close a port.  Safe to call from a finalizer, even inside an operation."""
        if self.in_operation():
            self._deferred_closes.append(port)
            return
        self._enter()
        try:
            self._close(port)
        finally:
            self._leave()

    def _close(self, port: Port) -> None:
        port.handler = None
        queued, port.queue = port.queue, deque()
        for payload in queued:
            self._drop_payload(payload)
        # Messages that arrived early (out of order) will never be read either:
        # close what they carry now; the events stay, for their sequence numbers.
        for _seq, _n, event in port.early if port.state is PortState.PEERED else ():
            if event.payload is not None:
                self._drop_payload(event.payload)
                event.payload = None
        if port.state is PortState.PEERED and not port.closed_local:
            port.closed_local = True
            self._send_peer(port, _Event(MESSAGE, close=True))
        elif port.state in (PortState.DONE, PortState.FAILED):
            self._deregister(port)

    def fail(self, port: Port, error: NodeError) -> None:
        self._enter()
        try:
            self._fail(port, error, notify_peer=True)
        finally:
            self._leave()

    def set_handler(self, port: Port, handler: PortHandler) -> None:
        """Attach a handler, replaying what queued while there was none."""
        self._enter()
        try:
            port.handler = handler
            while port.queue and port.handler is handler:
                handler.port_message(port, port.queue.popleft(), self._wakes)
            if port.state is PortState.DONE:
                handler.port_closed(port, self._wakes)
            elif port.state is PortState.FAILED:
                assert port.error is not None
                handler.port_failed(port, port.error, self._wakes)
        finally:
            self._leave()

    def remove_handler(self, port: Port) -> None:
        self._enter()
        port.handler = None
        self._leave()

    def bridge(self, a: Port, b: Port) -> None:
        """Join a's peer with b's peer; a and b become proxies and then retire."""
        self._enter()
        try:
            self._bridge(a, b)
        finally:
            self._leave()

    # ----------------------------------------------------------------- delivery
    def _send_peer(self, port: Port, event: _Event) -> None:
        event.seq = port.next_local_seq
        port.next_local_seq += 1
        assert port.peer is not None
        self._route_for(port, port.peer, event)

    def _forward(self, port: Port, event: _Event) -> None:
        event.seq = port.fwd_seq
        port.fwd_seq += 1
        assert port.target is not None
        self._route_for(port, port.target, event)

    def _route_for(self, port: Port, dest: Port | Address, event: _Event) -> None:
        """Route ``port``'s event; if ``dest`` is on a node lost to us, fail ``port``.

        Dropping the event quietly would leave ``port`` waiting for an answer that
        cannot come (a proxy for its peer's acknowledgement, say) or its messages
        lost without a word.
        """
        if not isinstance(dest, Port):
            failure = self._failed_nodes.get(dest[0])
            if failure is not None:
                self._drop_event(event)
                self._fail(port, failure, notify_peer=True)
                return
        self._route(dest, event)

    def _route(self, dest: Port | Address, event: _Event) -> None:
        if isinstance(dest, Port):
            self._work.append((dest, event))
        else:
            self._emit(dest, event)

    def _pump(self) -> None:
        work = self._work
        while work:
            port, event = work.popleft()
            self._on_event(port, event)

    def _on_event(self, port: Port, event: _Event) -> None:
        kind = event.kind
        if kind == FAIL_PORT:
            assert event.error is not None
            self._fail(port, event.error, notify_peer=False)
        elif kind == ACK_PORT:
            self._on_ack_port(port)
        elif event.seq < port.next_peer_seq:
            self._drop_event(event)  # the ports and descriptors it carried close
            self._fail(port, NodeError("duplicate sequence number"), notify_peer=True)
        elif event.seq > port.next_peer_seq:
            if port.state not in (PortState.DONE, PortState.FAILED):
                heapq.heappush(port.early, (event.seq, next(_tiebreak), event))
            else:
                self._drop_event(event)
        else:
            self._in_order(port, event)
            early = port.early
            while early and early[0][0] == port.next_peer_seq:
                self._in_order(port, heapq.heappop(early)[2])

    def _in_order(self, port: Port, event: _Event) -> None:
        port.next_peer_seq += 1
        state = port.state
        if state is PortState.PEERED:
            self._peered_event(port, event)
        elif state is PortState.SENDING:
            port.held.append(event)
        elif state is PortState.PROXYING:
            if event.kind == ACK_CHANGE_PEER:
                self._transition(port, "ack_change_peer")
                self._retire(port)
            else:
                self._forward(port, event)
        elif state is PortState.DONE and port.target is not None:
            self._fail(port, NodeError("received event after proxy end"), notify_peer=False)
            self._drop_event(event)
        else:
            self._drop_event(event)

    def _peered_event(self, port: Port, event: _Event) -> None:
        if event.kind == MESSAGE:
            if event.payload is not None:
                if port.closed_local:
                    self._drop_payload(event.payload)
                elif port.handler is not None:
                    port.handler.port_message(port, event.payload, self._wakes)
                else:
                    port.queue.append(event.payload)
            if event.close:
                self._on_close(port)
        elif event.kind == CHANGE_PEER:
            new_peer = event.new_peer
            assert new_peer is not None
            failure = None if isinstance(new_peer, Port) else self._failed_nodes.get(new_peer[0])
            if failure is not None:
                # Told to talk to a node lost to us: fail, and tell the old peer (the
                # proxy that sent this) instead of acknowledging; it passes the
                # failure on to the new peer's side, which we cannot reach.
                self._fail(port, failure, notify_peer=True)
                return
            self._send_peer(port, _Event(ACK_CHANGE_PEER))
            if port.state is PortState.FAILED:  # the old peer was out of reach
                return
            # Until our acknowledgement reaches it, the proxy we leave may fail (the
            # node it forwards to dies) and tell us so -- perhaps after this port
            # has ended, talking to its peer's new place.  That notice is a late
            # frame, not a forged id.
            self._expect_late_frames(port.id)
            port.next_local_seq -= event.delta
            port.peer = self._resolve(new_peer)
            if not isinstance(port.peer, Port):
                self._register(port)
        else:
            self._fail(
                port, NodeError("unexpected acknowledgement of peer change"), notify_peer=True
            )

    def _on_close(self, port: Port) -> None:
        if port.early:
            self._fail(port, NodeError("received event after port closed"), notify_peer=True)
            return
        self._transition(port, "closed")
        if not port.closed_local:
            port.closed_local = True
            self._send_peer(port, _Event(MESSAGE, close=True, lazy=True))
            if port.handler is not None:
                port.handler.port_closed(port, self._wakes)
        self._deregister(port)

    def _resolve(self, peer: Port | Address) -> Port | Address:
        if isinstance(peer, Port) or peer[0] != self.id:
            return peer
        local = self._ports.get(peer[1])
        return local if local is not None else peer

    def _retire(self, port: Port) -> None:
        for _seq, _n, event in port.early:
            self._drop_event(event)
        port.early.clear()
        self._deregister(port)

    # ----------------------------------------------------------------- failure
    def _fail(self, port: Port, error: NodeError, *, notify_peer: bool) -> None:
        if port.state in (PortState.DONE, PortState.FAILED):
            return
        was, port.state, port.error = port.state, PortState.FAILED, error
        if was in (PortState.SENDING, PortState.PROXYING) and port.target is not None:
            self._route(port.target, _Event(FAIL_PORT, error=self._failure_for(port.target, error)))
        if (notify_peer or was in (PortState.SENDING, PortState.PROXYING)) and (
            port.peer is not None
        ):
            self._route(port.peer, _Event(FAIL_PORT, error=self._failure_for(port.peer, error)))
        for _seq, _n, event in port.early:
            self._drop_event(event)
        port.early.clear()
        for held in port.held:
            self._drop_event(held)
        port.held.clear()
        if port.handler is not None:
            port.handler.port_failed(port, error, self._wakes)
        if port.registered:
            self._expect_late_frames(port.id)
        self._deregister(port)

    def _expect_late_frames(self, port_id: PortId) -> None:
        """Keep the id of a port that late frames may still reach once it is gone:
        it failed and its peer may not know yet, or the proxy it just left may
        yet report a failure.  A frame for such an id is dropped, not taken for
        a forgery.

        Two generations bound the memory: an id is kept for at least
        ``_LATE_GENERATION`` ids kept after it (failures and peer changes), far
        longer than frames stay in flight.
        """
        if len(self._late_ids) >= _LATE_GENERATION:
            self._late_ids_old, self._late_ids = self._late_ids, set()
        self._late_ids.add(port_id)

    def _failure_for(self, dest: Port | Address, error: NodeError) -> NodeError:
        """What a port's neighbour is told when the port fails.

        A neighbour in this node hears the real reason (say, which process died
        and how); one on another node gets a failure notice blaming this node,
        which is all a frame carries.
        """
        return error if isinstance(dest, Port) else _remote_failure(self.id)

    # ----------------------------------------------------------------- bridging
    def _bridge(self, a: Port, b: Port) -> None:
        for p in (a, b):
            if p.handler is not None or p.state in (PortState.SENDING, PortState.PROXYING):
                raise IllegalTransition(f"port {port_name(p.id)} cannot be bridged now")
        if a.peer is b:
            err = NodeError("circular bridge")
            self._fail(a, err, notify_peer=False)
            self._fail(b, err, notify_peer=False)
            return
        if a.state is not PortState.PEERED or b.state is not PortState.PEERED:
            self._bridge_dead(a, b) if a.state is not PortState.PEERED else self._bridge_dead(b, a)
            return
        ra, rb = a.next_local_seq, b.next_local_seq
        a.next_local_seq += 1
        b.next_local_seq += 1
        self._transition(a, "bridge")
        self._transition(b, "bridge")
        a.target, a.fwd_seq = b.peer, rb + 1
        b.target, b.fwd_seq = a.peer, ra + 1
        for port in (a, b):
            while port.queue:
                self._forward(port, _Event(MESSAGE, payload=port.queue.popleft()))
        for port, reserved in ((a, ra), (b, rb)):
            assert port.target is not None
            assert port.peer is not None
            change = _Event(
                CHANGE_PEER, new_peer=port.target, delta=port.next_peer_seq - port.fwd_seq + 1
            )
            change.seq = reserved
            self._register(port)
            self._route_for(port, port.peer, change)

    def _bridge_dead(self, dead: Port, live: Port) -> None:
        """Bridge where ``dead`` no longer has a peer: pass on its data, then its end."""
        if dead.state is PortState.FAILED:
            assert dead.error is not None
            self._fail(live, dead.error, notify_peer=True)
            return
        while dead.queue:
            payload = dead.queue.popleft()
            if live.state is PortState.PEERED:
                self._send_peer(live, _Event(MESSAGE, payload=payload))
            else:
                self._drop_payload(payload)
        self._deregister(dead)
        self._close(live)

    # ----------------------------------------------------------------- migration (sender side)
    def _send_away(self, port: Port, dest: NodeId) -> PortRecord:
        """Start moving ``port`` to node ``dest``; return the record to put in the frame."""
        new_id = new_port_id()
        port.handler = None
        if port.state is PortState.FAILED:
            assert port.error is not None
            return PortRecord(new_id, 1, self.id, port.id, self.id, ZERO_ID)
        if port.state is PortState.DONE:
            self._give_closed_peer(port)
        assert port.peer is not None
        peer_addr = self._address_of(port.peer)
        port.reserved_seq = port.next_local_seq
        port.next_local_seq += 1
        self._transition(port, "send_away")
        port.target = (dest, PortId(new_id))
        self._register(port)
        return PortRecord(
            new_id, port.reserved_seq + 1, self.id, port.id, peer_addr[0], peer_addr[1]
        )

    def _give_closed_peer(self, port: Port) -> None:
        """A closed port that moves takes its close along: a stand-in peer closes again."""
        stand_in = Port(self)
        stand_in.peer = port
        # Continue both numberings: the port may already have spent numbers (echoing
        # its peer's close, say), and the stand-in must expect exactly the next one.
        stand_in.next_local_seq = port.next_peer_seq
        stand_in.next_peer_seq = port.next_local_seq
        port.peer = stand_in
        port.state = PortState.PEERED
        port.closed_local = False
        self._deferred_closes.append(stand_in)

    def _address_of(self, peer: Port | Address) -> Address:
        if isinstance(peer, Port):
            self._register(peer)
            return (self.id, peer.id)
        return peer

    def _on_ack_port(self, port: Port) -> None:
        if port.state is not PortState.SENDING:
            self._fail(port, NodeError("invalid state for proxy"), notify_peer=True)
            return
        self._transition(port, "ack_port")
        port.fwd_seq = 1
        while port.queue:
            self._forward(port, _Event(MESSAGE, payload=port.queue.popleft()))
        held, port.held = port.held, []
        for event in held:
            if event.kind == ACK_CHANGE_PEER:
                self._transition(port, "ack_change_peer")
                self._retire(port)
                return
            self._forward(port, event)
        assert port.target is not None
        assert port.peer is not None
        change = _Event(
            CHANGE_PEER, new_peer=port.target, delta=port.next_peer_seq - port.fwd_seq + 1
        )
        change.seq = port.reserved_seq
        self._route_for(port, port.peer, change)

    # ----------------------------------------------------------------- remote nodes
    def _link(self, node_id: NodeId) -> _Link:
        link = self._links.get(node_id)
        if link is None:
            link = self._links[node_id] = _Link(node_id)
            failed = self._failed_nodes.get(node_id)
            if failed is not None:
                link.state, link.error = LinkState.FAILED, failed
            elif self.on_unknown_node is not None:
                callback = self.on_unknown_node
                self._wakes.append(lambda: callback(node_id))
        return link

    def connect(
        self,
        node_id: NodeId,
        notify: Wake,
        notify_lazy: Wake | None = None,
        *,
        max_frame: int | None = None,
    ) -> None:
        """A transport now carries frames to ``node_id``; ``notify`` says "drain me".

        ``notify_lazy`` says "drain me when convenient": only housekeeping frames
        wait (acknowledgements, peer changes, close echoes), which nobody awaits, so
        the transport may hold them briefly and send them with the next frame that
        does matter -- in a request/reply exchange, the next request.
        ``max_frame``: the link's frame limit, which merged messages stay within.
        """
        self._enter()
        try:
            link = self._link(node_id)
            if link.state is LinkState.FAILED:
                raise NodeError("cannot connect a failed node", node=node_name(node_id))
            link.state, link.notify, link.notify_lazy = LinkState.ACTIVE, notify, notify_lazy
            if max_frame is not None:
                link.max_run = min(RUN_BYTES, max_frame)
            if link.outbox:
                link.urgent = True
                self._wakes.append(notify)
        finally:
            self._leave()

    def has_outbox(self, node_id: NodeId) -> bool:
        """Whether frames wait for ``node_id`` (a racy hint, read without the lock)."""
        link = self._links.get(node_id)
        return link is not None and bool(link.outbox)

    def take_outbox(self, node_id: NodeId) -> list[tuple[FrameData, list[OwnedFd]]]:
        """Frames waiting for ``node_id`` (each: encoded frame, descriptors to pass).

        A frame is bytes, or three pieces to send in order (see ``encode_spliced``).
        """
        with self._lock:
            link = self._links.get(node_id)
            if link is None or not link.outbox:
                return []
            out, link.outbox = link.outbox, []
            link.urgent = False
            # Runs close here: what is sent from now on starts new ones.
            taken: list[tuple[FrameData, list[OwnedFd]]] = []
            for data, fds in out:
                taken.append((data.frame() if isinstance(data, MessageRun) else data, fds))
            return taken

    def disconnect(self, node_id: NodeId) -> None:
        self.fail_node(node_id, "remote node disconnected")

    def fail_node(self, node_id: NodeId, reason: str, cause: BaseException | None = None) -> None:
        """The node is gone: fail every port routed through it, now and later."""
        self._enter()
        try:
            error = NodeError(reason, node=node_name(node_id), cause=cause)
            self._failed_nodes[node_id] = error
            link = self._link(node_id)
            link.state, link.error = LinkState.FAILED, error
            link.notify = link.notify_lazy = None
            outbox, link.outbox = link.outbox, []
            for _data, fds in outbox:
                for fd in fds:
                    fd.close()
            failed = [p for p in self._ports.values() if _routes_through(p, node_id)]
            for port in failed:
                self._fail(port, error, notify_peer=False)
            # A port here may have taken a failed one as its peer before that one
            # heard where it moved (both ends moving at once), or a proxy here may
            # forward to one: each talks to a dead stream and fails too -- and
            # tells whoever it proxies for.
            while failed:
                gone = {id(p) for p in failed}
                failed = [
                    p
                    for p in self._ports.values()
                    if p.state is not PortState.FAILED
                    and any(isinstance(d, Port) and id(d) in gone for d in (p.peer, p.target))
                ]
                for port in failed:
                    self._fail(port, error, notify_peer=False)
        finally:
            self._leave()

    def shutdown(self, reason: str = "mesh is shutting down") -> None:
        """Fail every registered port (the process is going away)."""
        self._enter()
        try:
            error = NodeError(reason)
            for port in list(self._ports.values()):
                self._fail(port, error, notify_peer=True)
        finally:
            self._leave()

    def _emit(self, dest: Address, event: _Event) -> None:
        node_id, port_id = dest
        link = self._link(node_id)
        if link.state is LinkState.FAILED:
            self._drop_event(event)
            return
        payload = event.payload
        if type(payload) is SplicedPayload and not payload.resources:  # a large value, not copied
            self._enqueue(
                link, encode_spliced(port_id, event.seq, event.close, payload), [], lazy=False
            )
            return
        fds: list[OwnedFd] = []
        frame = self._to_frame(port_id, event, node_id, fds)
        self._enqueue(
            link, encode_frame(frame), fds, lazy=event.lazy or event.kind in _HOUSEKEEPING
        )

    def _enqueue(
        self, link: _Link, data: FrameData | MessageRun, fds: list[OwnedFd], *, lazy: bool
    ) -> None:
        """Queue a frame for the transport and, when needed, tell it."""
        was_empty = not link.outbox
        link.outbox.append((data, fds))
        if link.notify is None:
            return
        if lazy:
            if was_empty:
                self._wakes.append(link.notify_lazy or link.notify)
        elif not link.urgent:
            link.urgent = True
            self._wakes.append(link.notify)
        elif not len(link.outbox) % _BATCH_FRAMES:
            # A sender holding frames back to write them together (see the
            # transport) hears again every so often, so a long burst is streamed.
            self._wakes.append(link.notify)

    def _to_frame(self, target: PortId, event: _Event, dest: NodeId, fds: list[OwnedFd]) -> Frame:
        kind = event.kind
        if kind == MESSAGE:
            payload = event.payload
            if payload is None:
                return MessageFrame(target, event.seq, event.close, None)
            records: list[PortRecord | FdRecord] = []
            for res in payload.resources:
                if isinstance(res, Port):
                    records.append(self._send_away(res, dest))
                else:
                    fds.append(res)
                    records.append(FdRecord())
            return message_frame(target, event.seq, event.close, encoding_of(payload), records)
        if kind == CHANGE_PEER:
            assert event.new_peer is not None
            node, port = self._address_of(event.new_peer)
            return ChangePeerFrame(target, event.seq, node, port, event.delta)
        if kind == ACK_CHANGE_PEER:
            return AckChangePeerFrame(target, event.seq)
        if kind == ACK_PORT:
            return AckPortFrame(target)
        if kind == PEER_GONE:
            return PeerGoneFrame(target)
        return FailPortFrame(target, self.id)

    # ----------------------------------------------------------------- incoming frames
    def receive(self, source: NodeId, data: bytes, fds: list[OwnedFd]) -> None:
        """Feed one frame from ``source``.  Raises ProtocolError for a malformed one."""
        self.receive_many(source, [(data, fds)])

    def receive_many(
        self,
        source: NodeId,
        frames: list[tuple[ReadFrame, list[OwnedFd]]],
        inbound: Inbound | None = None,
    ) -> None:
        """Feed frames from ``source`` under one lock; stops at the first bad one.

        ``inbound`` (a connection's) limits the ports per message and charges each
        payload to the connection; without it (in-memory tests) nothing is limited.
        """
        self._enter()
        try:
            for index, (data, fds) in enumerate(frames):
                try:
                    self._receive(source, data, fds, inbound)
                except ProtocolError:
                    for _data, rest in frames[index + 1 :]:
                        _close_fds(rest)
                    raise
                if self._work:
                    self._pump()
        finally:
            self._leave()

    def _receive(
        self, source: NodeId, data: ReadFrame, fds: list[OwnedFd], inbound: Inbound | None
    ) -> None:
        large: SplicedPayload | None = None
        frame: Frame
        if type(data) is tuple:  # a LargeMessage: decoded where it was read, in pieces
            frame, large = data
            if inbound is not None:
                large.charge = Charge(inbound, len(large.head) + len(large.body))
        else:
            try:
                frame = decode_frame(cast(FrameBytes, data))
            except PayloadError as exc:
                _close_fds(fds)
                raise ProtocolError(f"malformed frame from {node_name(source)}: {exc}") from exc
        target = PortId(frame.target)
        if type(frame) is PeerGoneFrame:
            _close_fds(fds)
            self._on_peer_gone(source, target)
            return
        port = self._ports.get(target)
        if port is None:
            _close_fds(fds)
            if target in self._late_ids or target in self._late_ids_old:
                log.debug("dropping a late frame for port %s, gone here", port_name(target))
                if type(frame) is not FailPortFrame:
                    # Whoever sent it may not know: tell its node.
                    self._emit((source, target), _Event(PEER_GONE))
                return
            # Port ids are random 128-bit numbers that a node learns only by being
            # handed the port: an id this node never gave out means the peer forged
            # or corrupted it.  (Ports that closed or moved away in order get no
            # frames afterwards -- the close and move handshakes guarantee that.)
            raise ProtocolError(
                f"frame from {node_name(source)} is addressed to port {port_name(target)}, "
                "which this node never handed out; a peer may only use ports it was given"
            )
        if type(frame) is MessageRunFrame:
            self._receive_run(source, port, frame, fds, inbound)
            return
        if (
            type(frame) is MessageFrame
            and frame.seq == port.next_peer_seq
            and port.state is _PEERED
            and not frame.resources
            and not fds
            and not port.early
            and not port.closed_local
        ):
            # The common case -- the next message in order for a live port, carrying
            # no endpoint or descriptor, perhaps with the close (a reply) or only
            # the close -- handled without the event queue.  The same steps as
            # _from_frame, _on_event, _in_order and _peered_event take for it;
            # measured, a third of the node's cost per streamed message.
            port.next_peer_seq += 1
            body = frame.data
            payload: Payload | None = None
            if large is not None:
                payload = large
            elif body is not None:
                payload = (
                    InboundPayload(body, [], inbound) if inbound is not None else Payload(body, [])
                )
            if payload is not None:
                if port.handler is not None:
                    port.handler.port_message(port, payload, self._wakes)
                else:
                    port.queue.append(payload)
            if frame.close:
                self._on_close(port)
            return
        if large is not None:  # (a MessageFrame holding no resource)
            assert type(frame) is MessageFrame
            event = _Event(MESSAGE, frame.seq, payload=large, close=frame.close)
            self._work.append((port, event))
            return
        self._work.append((port, self._from_frame(source, frame, fds, inbound)))

    def _receive_run(
        self,
        source: NodeId,
        port: Port,
        frame: MessageRunFrame,
        fds: list[OwnedFd],
        inbound: Inbound | None,
    ) -> None:
        """A run of messages (see MessageRun), taken as that many message frames."""
        datas = frame.datas
        if fds or not datas:
            _close_fds(fds)
            raise ProtocolError(
                f"run of messages from {node_name(source)} holds {len(datas)} messages "
                f"and {len(fds)} descriptors; a run holds one message or more and no "
                "descriptor"
            )
        seq = frame.seq
        take_run: TakeRun | None = getattr(port.handler, "port_run", None)
        if (
            take_run is not None
            and seq == port.next_peer_seq
            and port.state is _PEERED
            and not port.early
            and not port.closed_local
        ):
            # The whole run in order, to a handler that takes it in one call (a
            # channel queues it as one item: see RunPayload).
            port.next_peer_seq = seq + len(datas)
            run = InboundRunPayload(datas, inbound) if inbound is not None else RunPayload(datas)
            take_run(port, run, self._wakes)
            return
        # Otherwise -- a handler that takes messages one at a time, a run that
        # arrived early, a port on the move -- each message takes the general path,
        # in order, as a frame of its own would.
        for offset, body in enumerate(datas):
            single = message_frame(frame.target, seq + offset, False, body)
            self._work.append((port, self._from_frame(source, single, [], inbound)))

    def _on_peer_gone(self, source: NodeId, gone: PortId) -> None:
        address = (source, gone)
        error = NodeError(f"the peer port {port_name(gone)} had failed", node=node_name(source))
        for port in list(self._ports.values()):
            if address in (port.peer, port.target):
                self._fail(port, error, notify_peer=False)

    def _from_frame(
        self, source: NodeId, frame: Frame, fds: list[OwnedFd], inbound: Inbound | None
    ) -> _Event:
        if isinstance(frame, MessageFrame):
            payload = self._payload_from(source, frame, fds, inbound)
            return _Event(MESSAGE, frame.seq, payload=payload, close=frame.close)
        _close_fds(fds)
        if isinstance(frame, ChangePeerFrame):
            peer = (NodeId(frame.node), PortId(frame.port))
            return _Event(CHANGE_PEER, frame.seq, new_peer=peer, delta=frame.delta)
        if isinstance(frame, AckChangePeerFrame):
            return _Event(ACK_CHANGE_PEER, frame.seq)
        if isinstance(frame, AckPortFrame):
            return _Event(ACK_PORT)
        assert isinstance(frame, FailPortFrame)  # PeerGoneFrame never gets here
        return _Event(FAIL_PORT, error=_remote_failure(NodeId(frame.blame)))

    def _payload_from(
        self, source: NodeId, frame: MessageFrame, fds: list[OwnedFd], inbound: Inbound | None
    ) -> Payload | None:
        wanted = sum(isinstance(r, FdRecord) for r in frame.resources)
        if wanted != len(fds):
            _close_fds(fds)
            raise ProtocolError(
                f"frame from {node_name(source)} names {wanted} descriptors but carried {len(fds)}"
            )
        if inbound is not None and len(frame.resources) - wanted > inbound.max_ports:
            _close_fds(fds)
            raise ProtocolError(
                f"message from {node_name(source)} carries {len(frame.resources) - wanted} "
                f"ports, above the limit of {inbound.max_ports} per message"
            )
        if frame.data is None:
            if frame.resources:
                raise ProtocolError(f"frame from {node_name(source)} has resources but no data")
            return None
        fd_iter = iter(fds)
        resources: list[Any] = []
        try:
            for r in frame.resources:
                if isinstance(r, FdRecord):
                    resources.append(next(fd_iter))
                else:
                    resources.append(self._port_from_record(r, source))
        except ProtocolError:
            for res in resources:  # what was already taken in goes nowhere
                if isinstance(res, Port):
                    self._close(res)
                else:
                    res.close()
            _close_fds(list(fd_iter))
            raise
        if inbound is not None:
            return inbound.payload(frame.data, resources)
        return Payload(frame.data, resources)

    def _port_from_record(self, record: PortRecord, source: NodeId) -> Port:
        port = Port(self, PortId(record.port))
        peer_node = NodeId(record.peer_node)
        failure = self._failed_nodes.get(peer_node)
        peer_port = PortId(record.peer_port)
        if peer_node == self.id and peer_port != ZERO_ID and peer_port not in self._ports:
            if peer_port in self._late_ids or peer_port in self._late_ids_old:
                failure = NodeError("its peer port here had failed")
            else:
                raise ProtocolError(
                    f"frame from {node_name(source)} moves a port whose peer would be "
                    f"{port_name(peer_port)} here, which this node never handed out"
                )
        if record.peer_port == ZERO_ID or failure is not None:
            port.state = PortState.FAILED
            port.error = failure or _remote_failure(peer_node)
            # Frames for it may still come (the old node failing its proxy, say):
            # late ones, not forgeries.
            self._expect_late_frames(port.id)
            if record.peer_port != ZERO_ID:
                # It was live where it came from: the old node's proxy waits for an
                # acknowledgement that will not come, and its peer must learn that
                # the stream ended.  Tell the proxy it failed; it passes that on.
                self._route(
                    (NodeId(record.old_node), PortId(record.old_port)),
                    _Event(FAIL_PORT, error=port.error),
                )
            return port
        port.next_local_seq = record.next_local_seq
        port.peer = self._resolve((peer_node, PortId(record.peer_port)))
        self._register(port)
        # The acknowledgement lets the old node's proxy retire and, when the peer is
        # on a third node, tell that peer to talk to us directly -- which must not
        # wait (the middle node may go away once the move looks done).  When the
        # peer is on the old node itself (a reply port, typically), nothing but the
        # proxy's bookkeeping waits for it, so it may travel with the next frame.
        lazy = record.old_node == record.peer_node
        self._route((NodeId(record.old_node), PortId(record.old_port)), _Event(ACK_PORT, lazy=lazy))
        return port

    # ----------------------------------------------------------------- disposal
    def _drop_event(self, event: _Event) -> None:
        if event.payload is not None:
            self._drop_payload(event.payload)

    def _drop_payload(self, payload: Payload) -> None:
        for res in payload.take_resources():
            if isinstance(res, Port):
                if res.node is self:
                    self._close(res)
                else:  # pragma: no cover - a port is only ever carried by its own node
                    res.close()
            else:
                res.close()


def _routes_through(port: Port, node_id: NodeId, depth: int = 0) -> bool:
    """Whether ``port`` talks to ``node_id``: its peer or target is there, or it
    talks through a local proxy (a port that moved on) whose target is there."""
    for dest in (port.peer, port.target):
        if dest is None:
            continue
        if not isinstance(dest, Port):
            if dest[0] == node_id:
                return True
        elif (
            depth < 8
            and dest.state is not PortState.PEERED
            and dest.target is not None
            and _routes_through(dest, node_id, depth + 1)
        ):
            return True
    return False


# ----------------------------------------------------------------- wake hops
# A wake that must cross to another thread's event loop (a receiver parked there)
# costs that loop a wake-up from its selector: ~25 µs of a round trip on two CPUs.
# Whoever delivers frames may watch where such wakes go (an opaque token per loop,
# named by the waker) and move its reading there: see Connection in _transport.
_hop_watch: Final = threading.local()


# The target a waker names when it wakes a plain thread (blocked outside any loop).
THREAD_HOP: Final = object()


def note_hop(target: object) -> None:
    """A wake is being handed to ``target``: another thread's event loop, or
    THREAD_HOP for a plain thread."""
    hops: list[object] | None = getattr(_hop_watch, "hops", None)
    if hops is not None:
        hops.append(target)


def watch_hops(hops: list[object] | None) -> None:
    """Collect this thread's hops into ``hops`` until called again with None."""
    _hop_watch.hops = hops


# ----------------------------------------------------------------- owed spins
# A connection read on an event loop, having just written from it, schedules a
# spin on that loop for the answer (see Connection in _transport).  A coroutine on
# the same loop that is about to park on a channel may run that spin itself first:
# when the answer comes within it, the coroutine goes on without parking, sparing
# the loop two turns (the spin's, then the coroutine's) and the waiter's future.
# The table is keyed by thread: a loop runs on one.  It is empty unless some loop
# owes a spin, so a receiver with nothing owed pays only a test of its truth.


class OwedSpin(Protocol):
    def spin_in_place(self) -> None:
        """Run the spin now if it is still due and the loop has nothing else to do."""


owed_spins: Final[dict[int, OwedSpin]] = {}


def owe_spin(spin: OwedSpin) -> None:
    """A spin is due on this thread's loop (call on that thread)."""
    owed_spins[threading.get_ident()] = spin


def drop_owed_spin(spin: OwedSpin) -> None:
    """The loop took its turn for ``spin``: forget it, unless another took its place."""
    ident = threading.get_ident()
    if owed_spins.get(ident) is spin:
        del owed_spins[ident]


def spin_before_park() -> bool:
    """A coroutine is about to park: run the spin its thread owes, if any.

    Returns whether one was owed (the caller looks for its message again).
    """
    spin = owed_spins.pop(threading.get_ident(), None)
    if spin is None:
        return False
    spin.spin_in_place()
    return True


def _remote_failure(blame: NodeId) -> NodeError:
    return NodeError(f"port failed on remote node due to node {node_name(blame)}")


def _close_fds(fds: list[OwnedFd]) -> None:
    for fd in fds:
        fd.close()


_process_node: LocalNode | None = None
_process_node_lock = threading.Lock()


def install_process_node(node: LocalNode) -> None:
    """Make ``node`` this process's node (a child does this before anything else)."""
    global _process_node  # noqa: PLW0603 - see local_node
    with _process_node_lock:
        if _process_node is not None and _process_node is not node:
            raise RuntimeError("this process already has a node")
        _process_node = node


def local_node() -> LocalNode:
    """This process's node (created on first use)."""
    global _process_node  # noqa: PLW0603 - one node per process, by design
    node = _process_node
    if node is None:
        with _process_node_lock:
            if _process_node is None:
                _process_node = LocalNode()
            node = _process_node
    return node
