"""Test kit (layer L8): several nodes in one process, joined in memory.

:class:`MemoryNetwork` plays the transport for any number of
:class:`~workmesh._node.LocalNode` instances.  Frames go through the real
encoding, so tests exercise the same bytes a socket would carry; descriptors are
handed over as :class:`~workmesh.OwnedFd` objects.  Delivery is explicit
(:meth:`MemoryNetwork.pump`) or automatic (``auto=True``), and the network counts
frames per (source, destination) so tests can check who talked to whom.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ._errors import NodeError
from ._ids import NodeId, new_port_id
from ._node import LocalNode, Port, ProtocolError
from ._wire import frame_bytes


class MemoryNetwork:
    """Nodes joined by in-memory links."""

    def __init__(self, *, auto: bool = False) -> None:
        self.nodes: dict[NodeId, LocalNode] = {}
        self.frames: Counter[tuple[NodeId, NodeId]] = Counter()
        self.protocol_errors: list[ProtocolError] = []
        self.auto = auto
        self._pumping = False

    def add_node(self) -> LocalNode:
        node = LocalNode()
        for other in self.nodes.values():
            self._join(node, other)
            self._join(other, node)
        self.nodes[node.id] = node
        return node

    def _join(self, src: LocalNode, dst: LocalNode) -> None:
        src.connect(dst.id, self._notifier())

    def _notifier(self) -> Callable[[], None]:
        def notify() -> None:
            if self.auto:
                self.pump()

        return notify

    def pair(self, a: LocalNode, b: LocalNode) -> tuple[Port, Port]:
        """A port on ``a`` peered with a port on ``b``."""
        ida, idb = new_port_id(), new_port_id()
        return a.bootstrap_port(ida, (b.id, idb)), b.bootstrap_port(idb, (a.id, ida))

    def pump(self, limit: int = 100_000) -> int:
        """Deliver frames until every outbox is empty; returns how many were delivered."""
        if self._pumping:
            return 0
        self._pumping = True
        delivered = 0
        try:
            while delivered < limit:
                moved = self._pump_once()
                if not moved:
                    break
                delivered += moved
        finally:
            self._pumping = False
        return delivered

    def _pump_once(self) -> int:
        moved = 0
        for src in list(self.nodes.values()):
            for dst in list(self.nodes.values()):
                if src is dst:
                    continue
                for data, fds in src.take_outbox(dst.id):
                    self.frames[src.id, dst.id] += 1
                    moved += 1
                    try:
                        dst.receive(src.id, frame_bytes(data), fds)
                    except ProtocolError as exc:
                        self.protocol_errors.append(exc)
                        self.cut(src, dst, exc)
        return moved

    def deliver_one(self, src: LocalNode, dst: LocalNode) -> bool:
        """Deliver the oldest frame waiting on the link src -> dst, if any.

        Links stay FIFO, as a socket is; which link goes next is the caller's choice,
        so tests can interleave links in any order.
        """
        outbox = src._link(dst.id).outbox
        if not outbox:
            return False
        data, fds = outbox.pop(0)
        self.frames[src.id, dst.id] += 1
        try:
            dst.receive(src.id, frame_bytes(data), fds)
        except ProtocolError as exc:
            self.protocol_errors.append(exc)
            self.cut(src, dst, exc)
        return True

    def cut(self, a: LocalNode, b: LocalNode, cause: BaseException | None = None) -> None:
        """Break the link between two nodes, as a failed connection would."""
        a.fail_node(b.id, "remote node disconnected", cause)
        b.fail_node(a.id, "remote node disconnected", cause)

    def kill(self, node: LocalNode) -> None:
        """The node's process dies: every other node loses it."""
        del self.nodes[node.id]
        for other in self.nodes.values():
            other.fail_node(node.id, "remote node disconnected", NodeError("process died"))


__all__ = ["MemoryNetwork"]
