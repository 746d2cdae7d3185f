"""What inspecting a process shows: its node, its links, and what it offers.

Used for the parent (``wm.inspect(mesh)``) and, on request, inside each child, so
that one inspection reaches every process of the mesh.
"""

from __future__ import annotations

import os
import threading
import time

from .._ids import node_name
from .._inspection import InspectRequest, roots
from ._runtime import Runtime

_STARTED = time.monotonic()


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (None when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class ProcessView:
    """This process, as an inspection shows it."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        self.runtime = runtime
        self.name = name

    def __inspect__(self, req: InspectRequest) -> None:
        resp = req.respond()
        pid = os.getpid()
        resp.field("name", self.name).field("pid", pid)
        resp.field("uptime_s", round(time.monotonic() - _STARTED, 3))
        resp.field("threads", threading.active_count())
        resp.field("rss_kib", rss_kib(pid))
        resp.child("node", self._node)
        resp.child("connections", self._connections)
        for key, obj in roots():
            resp.child(key, obj)

    def _node(self, req: InspectRequest) -> None:
        node = self.runtime.node
        resp = req.respond().field("id", node_name(node.id))
        resp.field("routed_ports", node.port_count())
        # Ports still being moved or proxied: non-zero only while a move settles.
        resp.field("moving_ports", len(node.moving_ports()))

    def _connections(self, req: InspectRequest) -> None:
        resp = req.respond()
        for peer, conn in list(self.runtime.connections.items()):
            state = {
                "closed": conn.closed,
                "queued_segments": conn.queued_segments,
                "read_on": conn.read_on,  # a thread's name: see Connection.adopt
                # Spins for an answer begun, those that found it, and those run in
                # place by a coroutine about to park (Connection._spin_now).
                "spins": conn.spins,
                "spin_reads": conn.spin_reads,
                "spins_in_place": conn.spins_in_place,
            }
            resp.child(node_name(peer), state)
