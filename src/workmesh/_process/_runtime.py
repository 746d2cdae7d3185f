"""This process's share of the mesh: its node, its I/O loop and its connections.

One runtime per process, shared by every :class:`~workmesh.Mesh` in it (and used
by a child for its link to the parent).  It is started by the first user and
stopped by the last, so no I/O thread outlives the meshes that needed it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
from collections.abc import Callable

from .._errors import NodeError
from .._frames import Limits
from .._ids import NodeId, node_name
from .._node import LocalNode, local_node
from .._transport import Connection, IoLoop

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.io = IoLoop()
        self.connections: dict[NodeId, Connection] = {}
        self._homed: set[Connection] = set()  # connections read on a home loop
        self._lock = threading.Lock()

    def attach(
        self,
        peer: NodeId,
        sock: socket.socket,
        *,
        expect_hello: bytes = b"",
        send_hello: bytes = b"",
        limits: Limits | None = None,
        on_eof: Callable[[Connection], None] | None = None,
        on_cut: Callable[[Connection, BaseException], None] | None = None,
    ) -> Connection | None:
        """Start a connection to ``peer``; None if there already is one (sock is closed).

        ``limits`` bound what the peer may send on it (the defaults when None).
        ``on_eof`` is called, on the I/O thread, after an orderly end of stream (the
        connection then leaves failing the peer's node to it); ``on_cut`` after the
        connection was cut for an error, once the peer's node has been failed.
        """

        def closed(conn: Connection, error: BaseException | None) -> None:
            self._closed(conn, error)
            if error is not None and on_cut is not None:
                on_cut(conn, error)

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
                limits=limits,
                on_closed=closed,
                on_eof=on_eof,
            )
            self.connections[peer] = conn
        try:
            self.io.call_sync(conn.start)
        except NodeError as exc:
            # The peer's node failed before this link could carry a frame: a second
            # link the leader brokered for a peer that was cut off meanwhile, say.
            self.io.call_sync(functools.partial(self._discard, conn))
            log.debug("not connecting to %s: %s", node_name(peer), exc)
            return None
        return conn

    def adopt(self, conn: Connection | None) -> None:
        """Read ``conn`` on the running loop (see :meth:`Connection.adopt`).

        The loop's owner calls :meth:`leave_homes` on it before the loop stops.
        """
        if conn is None:
            return
        conn.adopt()
        with self._lock:
            self._homed.add(conn)

    def leave_homes(self, peers: set[NodeId] | None = None) -> None:
        """Hand the running loop's connections (to ``peers``, or all) back to the I/O thread."""
        loop = asyncio.get_running_loop()
        with self._lock:
            leaving = [
                conn
                for conn in self._homed
                if (conn.base is loop or conn.home is loop)
                and (peers is None or conn.peer in peers)
            ]
            self._homed.difference_update(leaving)
        for conn in leaving:
            conn.leave_home()

    def _discard(self, conn: Connection) -> None:
        """Undo a connection whose start was refused (loop thread): nothing went over it."""
        with self._lock:
            if self.connections.get(conn.peer) is conn:
                del self.connections[conn.peer]
        conn.closed = True
        fd = conn.sock.fileno()
        if fd >= 0:
            assert self.io.loop is not None
            self.io.loop.remove_reader(fd)
        conn.sock.close()

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
