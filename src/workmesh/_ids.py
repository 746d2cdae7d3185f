"""Identifiers for nodes and ports (layer L0).

A node is one process's share of the mesh; a port is one end of a message stream.
Both are named by 128 random bits.  A port id is a capability: knowing it is what
lets a remote node address the port, so ids must be unguessable and are drawn from
the operating system's CSPRNG.  Tests that want readable ids can opt into sequential
ones with ``WORKMESH_UNSAFE_DEBUG_IDS=1``; never do that in a real deployment.

Ids are plain 16-byte ``bytes`` (big-endian): hashable, cheap to compare, and they
go on the wire as they are.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import NewType

NodeId = NewType("NodeId", bytes)
PortId = NewType("PortId", bytes)

ID_LEN = 16
ZERO_ID = bytes(ID_LEN)

_debug_counter = itertools.count(1) if os.environ.get("WORKMESH_UNSAFE_DEBUG_IDS") else None

# Random bytes are drawn from the OS a page at a time (one getrandom call per 256
# ids instead of one per id; measured, a call of the process makes three ids).  A
# forked child must never reuse its parent's unused bytes: the pool is emptied in
# the child at fork.


class _Pool:
    SIZE = 4096

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data = b""
        self.pos = 0

    def take(self) -> bytes:
        with self.lock:
            pos = self.pos
            if pos + ID_LEN > len(self.data):
                self.data, pos = os.urandom(self.SIZE), 0
            self.pos = pos + ID_LEN
            return self.data[pos : pos + ID_LEN]

    def after_fork(self) -> None:
        self.lock = threading.Lock()  # another thread may have held it at the fork
        self.data, self.pos = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.after_fork)


def _random_id() -> bytes:
    if _debug_counter is not None:
        return next(_debug_counter).to_bytes(ID_LEN, "big")
    return _pool.take()


def new_node_id() -> NodeId:
    return NodeId(_random_id())


def new_port_id() -> PortId:
    return PortId(_random_id())


def node_name(node: bytes) -> str:
    """The display form of a node id, ``N-`` and the first 16 hex digits."""
    return "N-" + node.hex()[:16]


def port_name(port: bytes) -> str:
    """The display form of a port id, ``P-`` and the first 16 hex digits."""
    return "P-" + port.hex()[:16]
