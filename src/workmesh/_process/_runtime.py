"""This process's share of the mesh: its node, its I/O loop and its connections.

One runtime per process, shared by every :class:`~workmesh.Mesh` in it (and used
by a child for its link to the parent).  It is started by the first user and
stopped by the last, so no I/O thread outlives the meshes that needed it.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Callable

from .._ids import NodeId, node_name
from .._node import LocalNode, local_node
from .._transport import Connection, IoLoop

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.io = IoLoop()
        self.connections: dict[NodeId, Connection] = {}
        self._lock = threading.Lock()

    def attach(
        self,
        peer: NodeId,
        sock: socket.socket,
        *,
        expect_hello: bytes = b"",
        send_hello: bytes = b"",
        on_eof: Callable[[Connection], None] | None = None,
    ) -> Connection | None:
        """Start a connection to ``peer``; None if there already is one (sock is closed)."""
        with self._lock:
            existing = self.connections.get(peer)
            if existing is not None and not existing.closed:
                sock.close()
                return None
            conn = Connection(
                self.io,
                self.node,
                peer,
                sock,
                expect_hello=expect_hello,
                send_hello=send_hello,
                on_closed=self._closed,
                on_eof=on_eof,
            )
            self.connections[peer] = conn
        self.io.call_sync(conn.start)
        return conn

    def _closed(self, conn: Connection, error: BaseException | None) -> None:
        with self._lock:
            if self.connections.get(conn.peer) is conn:
                del self.connections[conn.peer]
        if error is None:
            log.debug("connection to %s ended", node_name(conn.peer))

    def drain(self, timeout: float) -> None:
        """Write out everything queued on every connection (before the process exits)."""
        for conn in list(self.connections.values()):
            self.io.call_sync(functools.partial(conn.drain_blocking, timeout), timeout + 1)

    def close(self) -> None:
        for conn in list(self.connections.values()):
            self.io.call_sync(functools.partial(conn.close, None))
        self.io.stop()


_runtime: Runtime | None = None
_users = 0
_runtime_lock = threading.Lock()


def acquire_runtime() -> Runtime:
    global _runtime, _users  # noqa: PLW0603 - one runtime per process, by design
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(local_node())
        _users += 1
        return _runtime


def release_runtime() -> None:
    global _runtime, _users  # noqa: PLW0603 - see acquire_runtime
    with _runtime_lock:
        _users -= 1
        if _users > 0 or _runtime is None:
            return
        runtime, _runtime = _runtime, None
    runtime.close()
