"""Starting an inspection or an update, and waiting for its deferred parts.

:class:`Inspection` runs in three steps:

1. *build* -- synchronously, on the caller's thread: the root request is answered
   by the object, and children are evaluated as the path, depth and sensitivity
   allow.  Parts deferred elsewhere leave ``PWait`` placeholders.
2. *resolve* -- asynchronously: one task per placeholder awaits its reply; each
   reply is put in place, and any placeholders inside it get tasks of their own,
   until none are left or the time budget runs out.  Whatever has arrived by then
   is kept; the rest stays ``unresolved``.
3. *results* -- the part tree becomes an immutable :class:`InspectNode`, and the
   walk down the requested path selects the subtree that was asked for.

:func:`inspect` and :func:`update` are the three steps in one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from .._errors import ChannelClosed, RecvError
from ._defer import Deferred
from ._params import MAX_DEPTH, Params
from ._request import InspectRequest, inspect_object
from ._result import (
    AnyInspectNode,
    InspectDir,
    InspectError,
    InspectErrorKind,
    InspectFailed,
    InspectNode,
    InspectValue,
    Sensitivity,
)
from ._tree import (
    Part,
    PEntry,
    PFailed,
    PUnevaluated,
    PWait,
    as_part,
    descend,
    path_segments,
    pending_slots,
    to_result,
)


class Inspection:
    """An inspection in progress: built at construction, then resolved, then read.

    ``depth=None`` is unlimited (capped at 4096 levels); ``depth=0`` gives the
    target's immediate children, with sub-directories unevaluated; ``depth=n``
    goes ``n`` levels further.  ``update`` turns the inspection into an update of
    the leaf at ``path``.
    """

    def __init__(
        self,
        obj: object,
        path: str = "",
        *,
        depth: int | None = None,
        sensitivity: Sensitivity = Sensitivity.SENSITIVE,
        update: str | None = None,
    ) -> None:
        if depth is not None and depth < 0:
            raise ValueError(f"depth must be None or at least 0, got {depth}")
        # The root request is one level above the target's children, hence the +1.
        levels = MAX_DEPTH if depth is None else min(depth + 1, MAX_DEPTH)
        self._skip = len(path_segments(path))
        self._root = PEntry("", Sensitivity.UNSPECIFIED, PUnevaluated())
        params = Params(path, levels, Sensitivity(sensitivity), update)
        inspect_object(obj, InspectRequest(params, self._root))

    # The api names the budget `timeout=`; it bounds only the wait for deferred parts.
    async def resolve(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait for deferred parts, at most ``timeout`` seconds; True if all arrived.

        May be called again to keep waiting.  Cancelling it loses nothing that
        already arrived.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiting: dict[asyncio.Task[Part], PEntry] = {}

        def watch(slot: PEntry) -> None:
            for pending in pending_slots(slot):
                assert isinstance(pending.node, PWait)
                waiting[asyncio.ensure_future(_receive(pending.node.reply))] = pending

        watch(self._root)
        try:
            while waiting:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                done, _ = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    slot = waiting.pop(task)
                    slot.node = task.result()
                    watch(slot)  # the reply may hold placeholders of its own
        finally:
            for task in list(waiting):
                if task.done() and not task.cancelled():
                    # Arrived just as the budget ran out: keep it (its own placeholders
                    # are left for a later resolve()).
                    waiting.pop(task).node = task.result()
                else:
                    task.cancel()
            if waiting:
                # Cancelled receives keep their receivers (and any late reply) intact.
                await asyncio.wait(waiting)
        return not waiting and not pending_slots(self._root)

    def results(self) -> AnyInspectNode:
        """The tree at the requested path, as it stands now."""
        return descend(to_result(self._root.node), self._skip)

    def close(self) -> None:
        """Stop listening for parts still pending (their senders see the close)."""
        for slot in pending_slots(self._root):
            assert isinstance(slot.node, PWait)
            close = getattr(slot.node.reply, "close", None)
            if close is not None:
                close()
            slot.node = PFailed(InspectErrorKind.UNRESOLVED)


async def _receive(receiver: Any) -> Part:
    recv = getattr(receiver, "recv", None)
    if recv is None:
        # Only a peer's reply can put something else here; it must not break the wait.
        kind = type(receiver).__qualname__
        return PFailed(InspectErrorKind.CHANNEL, f"malformed inspect reply: {kind} placeholder")
    try:
        value = await recv()
    except ChannelClosed:
        return PFailed(InspectErrorKind.UNRESOLVED)
    except RecvError as exc:
        return PFailed(InspectErrorKind.CHANNEL, str(exc))
    return as_part(value)


async def inspect(
    obj: object,
    path: str = "",
    depth: int | None = None,
    timeout: float | None = 1.0,  # noqa: ASYNC109 - the api's name for the time budget
    *,
    sensitivity: Sensitivity = Sensitivity.SENSITIVE,
) -> AnyInspectNode:
    """Inspect ``obj`` at ``path``; parts deferred elsewhere get ``timeout`` seconds.

    ``path`` is ``/``-separated (leading and repeated slashes are ignored).  A
    missing name gives an ``InspectFailed`` "not found" node; a path continuing
    below a leaf gives "not a directory".  Only nodes up to ``sensitivity`` are
    included (by default everything).  Parts not answered in time show as
    unresolved.
    """
    inspection = Inspection(obj, path, depth=depth, sensitivity=sensitivity)
    try:
        await inspection.resolve(timeout)
        return inspection.results()
    finally:
        inspection.close()


async def update(
    obj: object,
    path: str,
    value: str,
    *,
    timeout: float | None = 1.0,  # noqa: ASYNC109 - as for inspect()
    sensitivity: Sensitivity = Sensitivity.SENSITIVE,
) -> InspectValue:
    """Set the leaf at ``path`` to ``value`` (text, parsed by the leaf); returns its new value.

    Raises :class:`InspectError`: ``IMMUTABLE`` for a leaf that cannot change,
    ``NOT_A_DIRECTORY`` for a path continuing below a leaf, ``NOT_FOUND``,
    ``UPDATE`` when the leaf rejected the value, ``UNRESOLVED`` when the path ends
    on a directory or no answer came within ``timeout``.
    """
    # Depth 0: the target's children are not evaluated (an update needs none).
    inspection = Inspection(obj, path, depth=0, sensitivity=sensitivity, update=value)
    try:
        await inspection.resolve(timeout)
        node = inspection.results()
    finally:
        inspection.close()
    if isinstance(node, InspectValue):
        return node
    if isinstance(node, InspectFailed):
        raise InspectError(node.error, node.detail)
    raise InspectError(InspectErrorKind.UNRESOLVED, _what(node))


def _what(node: InspectNode) -> str:
    return "the path names a directory" if isinstance(node, InspectDir) else ""


class _Sender(Protocol):
    def send(self, message: Any, /) -> None: ...


class Forward:
    """Inspectable that defers the request and sends it on: ``sender.send(make(deferred))``.

    The standard way to hand inspection to a worker or a child process, e.g.
    ``resp.child("worker", Forward(rpc_sender, lambda d: Inspect(deferred=d)))``.
    """

    __slots__ = ("_make", "_sender")

    def __init__(self, sender: _Sender, make: Callable[[Deferred], object]) -> None:
        self._sender = sender
        self._make = make

    def __inspect__(self, req: InspectRequest) -> None:
        self._sender.send(self._make(req.defer()))


__all__ = ["Forward", "Inspection", "inspect", "update"]
