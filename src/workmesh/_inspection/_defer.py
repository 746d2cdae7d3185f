"""Deferral: answering part of an inspection later, on another thread or process.

``req.defer()`` leaves a placeholder (``PWait``) in the tree and returns a
:class:`Deferred`.  The Deferred is a msgspec Struct of plain data -- the rest of
the path, the depth, the sensitivity, the update value, the number format -- plus
the sending end of a reply oneshot.  Kept in-process it is just an object; put
inside a message to another process, the workmesh codec moves the oneshot end
into a port, exactly like any other endpoint.

Whoever holds it answers once, with ``deferred.inspect(obj)`` (or ``respond``,
``value``, ``ignore``, ``update``).  That builds the subtree right there, under the
same rules as the original request, and sends the *part tree* back.  The subtree
may itself contain placeholders -- the answering side deferred again, say to a
worker in a third process -- whose receiving ends travel inside the reply; the
resolver (:mod:`._initiate`) simply keeps waiting on them too.

If the Deferred is dropped unanswered, the oneshot closes and the placeholder ends
up ``unresolved``; if the channel fails, ``channel error: <text>``.

This layer sits below the channels and cannot import them, so the channel package
hands over its oneshot factory at import time through
:func:`set_reply_channel_factory`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from .._errors import PayloadError
from ._params import NumberFormat, Params, format_flags
from ._request import InspectRequest, InspectResponse, inspect_object
from ._result import InspectErrorKind, Sensitivity
from ._tree import Part, PEntry, PFailed, PIgnored, PUnevaluated, PWait, leaf
from ._update import error_chain_text


class ReplySender(Protocol):
    def send(self, value: Any) -> None: ...


class ReplyChannelFactory(Protocol):
    """``factory(tp) -> (sender, receiver)``: a oneshot for values of type ``tp``.

    The receiver must support ``await receiver.recv()`` (raising
    ``ChannelClosed`` when the sender is dropped) and ``close()``.
    """

    def __call__(self, tp: Any, /) -> tuple[Any, Any]: ...


_factory: ReplyChannelFactory | None = None


def set_reply_channel_factory(factory: ReplyChannelFactory) -> None:
    """Install the oneshot factory deferral replies travel on (``workmesh.oneshot``)."""
    global _factory  # noqa: PLW0603 - one process-wide wiring point, set at import
    _factory = factory


def _reply_channel() -> tuple[Any, Any]:
    if _factory is None:
        raise RuntimeError(
            "deferring an inspection needs workmesh's oneshot channel, which is "
            "installed when workmesh._channel is imported (import workmesh first)"
        )
    return _factory(Part)


def defer_request(params: Params, slot: PEntry) -> Deferred:
    sender, receiver = _reply_channel()
    slot.node = PWait(receiver)
    return Deferred(
        path=params.path,
        depth=params.depth,
        sensitivity=params.sensitivity,
        update_value=params.update,
        number_format=params.number_format,
        below_target=params.below_target,
        reply=sender,
    )


def defer_update(new_value: str, number_format: NumberFormat, slot: PEntry) -> DeferredUpdate:
    sender, receiver = _reply_channel()
    slot.node = PWait(receiver)
    return DeferredUpdate(new_value=new_value, number_format=number_format, reply=sender)


def _send(reply: ReplySender, part: Part) -> None:
    try:
        reply.send(part)
    except PayloadError as exc:
        # Encoding is all-or-nothing and leaves the sender usable: say why instead.
        reply.send(PFailed(InspectErrorKind.INTERNAL, f"reply could not be encoded: {exc}"))


class Deferred(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An inspection request to be answered later, possibly elsewhere.

    Send it to another thread, or inside a message to another process (it is
    encodable by the workmesh codec), then answer it once with :meth:`inspect`,
    :meth:`respond`, :meth:`value`, :meth:`ignore` or :meth:`update`.  Dropping it
    unanswered leaves the part ``unresolved``.
    """

    path: str = ""
    depth: int = 0
    sensitivity: Sensitivity = Sensitivity.SENSITIVE
    update_value: str | None = None  # the new value, when this is (part of) an update
    number_format: NumberFormat = NumberFormat.DEFAULT
    below_target: bool = False
    # The sending end of a workmesh oneshot of parts; typed Any because this layer
    # cannot import the channels.  None once answered.
    reply: Any = None

    def inspect(self, obj: object) -> None:
        """Answer by inspecting ``obj`` (an inspectable, a function, a value, ...)."""
        self._answer(lambda req: inspect_object(obj, req))

    def respond(self, build: Callable[[InspectResponse], object]) -> None:
        """Answer as a directory: ``build(resp)`` adds the children."""
        self._answer(lambda req: inspect_object(lambda r: build(r.respond()), req))

    def value(self, value: object) -> None:
        """Answer as a leaf."""
        self._answer(lambda req: inspect_object(value, req))

    def ignore(self) -> None:
        """Leave this part out of the result."""
        _send(self._take_reply(), PIgnored())

    def update(self) -> DeferredUpdate | None:
        """The pending update if this Deferred is the update of exactly one leaf, else None.

        Returns None (and leaves the Deferred unanswered) for a plain inspection.
        """
        if self.update_value is None or self.path or self.below_target:
            return None
        reply = self._take_reply()
        return DeferredUpdate(
            new_value=self.update_value, number_format=self.number_format, reply=reply
        )

    def close(self) -> None:
        """Give up: the part becomes ``unresolved`` (as when the Deferred is dropped)."""
        reply, self.reply = self.reply, None
        close = getattr(reply, "close", None)
        if close is not None:
            close()

    def _answer(self, run: Callable[[InspectRequest], None]) -> None:
        reply = self._take_reply()
        slot = PEntry("", Sensitivity.UNSPECIFIED, PUnevaluated())
        params = Params(
            path=self.path,
            depth=self.depth,
            sensitivity=self.sensitivity,
            update=self.update_value,
            number_format=self.number_format,
            below_target=self.below_target,
        )
        run(InspectRequest(params, slot))
        _send(reply, slot.node)

    def _take_reply(self) -> ReplySender:
        reply, self.reply = self.reply, None
        if reply is None:
            raise RuntimeError("this Deferred was already answered (a Deferred is answered once)")
        return reply  # type: ignore[no-any-return]  # the oneshot sender, typed Any on the wire


class DeferredUpdate(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An update to be finished later: :meth:`succeed` or :meth:`fail` once."""

    new_value: str
    number_format: NumberFormat = NumberFormat.DEFAULT
    reply: Any = None

    def succeed(self, value: object) -> None:
        """The update was applied; ``value`` is the new value."""
        _send(self._take_reply(), leaf(value, format_flags(self.number_format, value)))

    def fail(self, error: BaseException | str) -> None:
        """The update was refused (``update error: <error text>``)."""
        _send(self._take_reply(), PFailed(InspectErrorKind.UPDATE, error_chain_text(error)))

    def _take_reply(self) -> ReplySender:
        reply, self.reply = self.reply, None
        if reply is None:
            raise RuntimeError("this DeferredUpdate was already answered")
        return reply  # type: ignore[no-any-return]  # the oneshot sender, typed Any on the wire


__all__ = [
    "Deferred",
    "DeferredUpdate",
    "ReplyChannelFactory",
    "defer_request",
    "defer_update",
    "set_reply_channel_factory",
]
