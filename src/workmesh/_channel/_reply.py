"""Answers to calls that cross a process, sent back along the request's own stream.

``Sender.call`` to a channel whose receiver is in another process does not move
a reply port per call (see ``docs/adr/0006-reply-streams.md``).  A port's two
ends can both send, and a sender's port otherwise only ever sends; so the answer
travels back on the port pair the request took, tagged with a call id:

* the caller's side keeps, per sender port, a :class:`ReplyMux`: the calls
  waiting for an answer, by id.  It is the handler of the sender's port.
* the request goes out as its plain encoding behind a *call head* (the mark, the
  index the reply sender would have had in the message's resources, and the id).
  It moves no port, so a round trip is one frame each way.
* the receiving channel turns the head, when the message arrives, into a
  :class:`ReplySlot` resource at that index; decoding makes it the ``Rpc``'s
  ``OneshotSender``.  Completing it sends ``(id, value)`` back; closing or
  dropping it sends ``(id, closed)``, so a handler that drops the ``Rpc`` still
  ends the caller's wait with ``ChannelClosed``.  The port ending (the callee's
  process lost) fails every waiting call, as a port per call would.

An answer whose slot must leave the stream it came on -- the ``Rpc`` forwarded to
another process, or its receiver moved away (a hot restart) while the call is in
progress or queued -- is *re-homed*: a fresh oneshot port pair is made, one end
sent back to the caller on the stream (``REHOME``, joining the waiting call), the
other taking the slot's place.  That path costs what a reply port per call cost
before; the common one, answered where it arrives, does not pay it.

A receiver that closes while slots it handed out are still open keeps their
port open (ignoring new requests, answering them closed) until the last one is
answered, so closing a channel never loses an answer already being worked on.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import TYPE_CHECKING, Any, Final

from .._errors import ChannelErrorKind, ChannelFailed, NodeError
from .._node import Port, local_node
from .._wire import Payload, SplicedPayload

if TYPE_CHECKING:
    from ._oneshot import _Once

log = logging.getLogger(__name__)

# The heads.  A fixext1 of code 127 is never the start of an encoded workmesh
# value (the mpsc ATTACH marker is 127/0), so none can be mistaken for a value.
CALL: Final = b"\xd4\x7f\x02"  # then <u32 reply index><u64 call id>, then the request
REPLY: Final = b"\xd4\x7f\x03"  # then <u64 call id>, then the answer's encoding
CLOSED: Final = b"\xd4\x7f\x04"  # then <u64 call id>: the reply sender was dropped
REHOME: Final = b"\xd4\x7f\x05"  # then <u64 call id>; carries the call's new reply port

_CALL_HEAD: Final = struct.Struct("<IQ")
CALL_SIZE: Final = len(CALL) + _CALL_HEAD.size
_ID: Final = struct.Struct("<Q")
_REPLY_SIZE: Final = len(REPLY) + _ID.size
_MARK_BYTE: Final = CALL[0]


def is_call(data: Any) -> bool:
    """Whether a message's encoding starts with a call head (cheap: one byte first)."""
    return bool(data) and data[0] == _MARK_BYTE and bytes(data[:3]) == CALL


def leading(payload: Payload) -> Any:
    """Where a payload's encoding starts: a spliced payload's head (a control head
    is never split across its pieces), else the encoding itself."""
    if type(payload) is SplicedPayload:
        return payload.head
    return payload.data


def _drop_head(payload: Payload, data: Any, size: int) -> None:
    """Take a control head of ``size`` bytes off the front of ``payload``'s encoding
    (``data`` is :func:`leading`'s answer for it), copying nothing large."""
    if type(payload) is SplicedPayload:
        payload.head = data[size:]
    else:
        payload.data = memoryview(data)[size:]


def call_head(index: int, call_id: int) -> bytes:
    return CALL + _CALL_HEAD.pack(index, call_id)


# --------------------------------------------------------------------------------------
# The callee's side


class SlotHome:
    """The reply slots one receiving port handed out and that are not answered yet."""

    __slots__ = ("closing", "live", "lock", "port")

    def __init__(self, port: Port) -> None:
        self.port = port
        # Re-entrant, as are the channels' locks: a finalizer (a dropped Rpc) may
        # run on a thread that holds it, when an allocation here starts a collection.
        self.lock = threading.RLock()
        self.live: set[ReplySlot] = set()
        self.closing = False  # the receiver closed: close the port after the last answer

    def done(self, slot: ReplySlot) -> None:
        with self.lock:
            self.live.discard(slot)
            close = self.closing and not self.live
        if close:
            self.port.close()

    def close_when_answered(self) -> bool:
        """Close the port now (False) or once the live slots are answered (True)."""
        with self.lock:
            if not self.live:
                return False
            self.closing = True
        return True

    def snapshot(self) -> list[ReplySlot]:
        with self.lock:
            return list(self.live)


class ReplySlot:
    """Where one call's answer goes: the port the request arrived on, and its id.

    A payload resource until decoded, then the core of the ``Rpc``'s
    ``OneshotSender``.  Thread-safe: its sends are made under its lock, so a
    re-home (on another thread) never crosses a send.
    """

    __slots__ = ("__weakref__", "call_id", "home", "lock", "moved", "state")

    OPEN: Final = 0
    DONE: Final = 1
    MOVED: Final = 2

    def __init__(self, home: SlotHome, call_id: int) -> None:
        self.home = home
        self.call_id = call_id
        self.lock = threading.Lock()
        self.state = ReplySlot.OPEN
        self.moved: Port | None = None

    def send(self, payload: Payload) -> None:
        """Send the encoded answer."""
        with self.lock:
            state, self.state = self.state, ReplySlot.DONE
            if state == ReplySlot.OPEN:
                head = REPLY + _ID.pack(self.call_id)
                if type(payload) is SplicedPayload:
                    payload.head = head + payload.head  # the value stays where it is
                    reply: Payload = payload
                else:
                    reply = Payload(head + payload.data, payload.resources)
                self.home.port.send(reply)
            elif state == ReplySlot.MOVED:
                assert self.moved is not None
                self.moved.send_and_close(payload)
                self.moved = None
            else:
                payload.discard()
                return
        if state == ReplySlot.OPEN:
            self.home.done(self)

    def close(self) -> None:
        """No answer will come (the ``Rpc`` was dropped): the caller sees ChannelClosed."""
        node = self.home.port.node
        if node.in_operation():  # dropped by a finalizer inside a node operation
            node.when_free(self.close)
            return
        with self.lock:
            state, self.state = self.state, ReplySlot.DONE
            if state == ReplySlot.OPEN:
                self.home.port.send(Payload(CLOSED + _ID.pack(self.call_id)))
            elif state == ReplySlot.MOVED:
                assert self.moved is not None
                self.moved.close()
                self.moved = None
            else:
                return
        if state == ReplySlot.OPEN:
            self.home.done(self)

    def is_closed(self) -> bool:
        with self.lock:
            if self.state == ReplySlot.MOVED:
                assert self.moved is not None
                return self.moved.is_closed()
            return self.state == ReplySlot.DONE or self.home.port.is_closed()

    def _rehome(self, keep: bool) -> Port | None:
        """Give the caller a port of its own for this answer, and return ours:
        kept as this slot's way out (``keep``), or handed to the caller."""
        with self.lock:
            if self.state != ReplySlot.OPEN:
                return None
            ours, theirs = local_node().new_pair()
            self.home.port.send(Payload(REHOME + _ID.pack(self.call_id), [theirs]))
            if keep:
                self.state, self.moved = ReplySlot.MOVED, ours
            else:
                self.state = ReplySlot.DONE
        self.home.done(self)
        return ours

    def rehome(self) -> None:
        """Keep this slot working after its stream moves away (the receiver moved)."""
        self._rehome(keep=True)

    def to_port(self) -> Port:
        """This slot as a reply port that can travel (the ``Rpc`` is sent on)."""
        port = self._rehome(keep=False)
        if port is not None:
            return port
        with self.lock:
            moved, self.moved = self.moved, None
            if self.state == ReplySlot.MOVED and moved is not None:
                self.state = ReplySlot.DONE
                return moved
        # Already answered, closed or moved: a port whose far end is already closed,
        # so the new holder sees a used-up sender.
        a, b = local_node().new_pair()
        b.close()
        return a

    def __del__(self) -> None:
        if self.state == ReplySlot.OPEN:
            self.close()

    def __repr__(self) -> str:
        return f"<ReplySlot {self.call_id} {('open', 'done', 'moved')[self.state]}>"


def open_call(home: SlotHome, payload: Payload) -> bool:
    """Turn a call head into its reply slot (in place).  False if the head is malformed;
    the payload is then left as it came, to fail decoding as corrupt."""
    data = leading(payload)
    if len(data) < CALL_SIZE:
        return False
    index, call_id = _CALL_HEAD.unpack_from(data, len(CALL))
    if index != len(payload.resources):
        return False
    slot = ReplySlot(home, call_id)
    with home.lock:
        home.live.add(slot)
    _drop_head(payload, data, CALL_SIZE)
    payload.resources.append(slot)
    return True


def travelling(payload: Payload) -> Payload:
    """``payload`` with every reply slot it holds replaced by a port that can travel."""
    resources = payload.resources
    for i, res in enumerate(resources):
        if type(res) is ReplySlot:
            resources[i] = res.to_port()
    return payload


class Drain:
    """The handler of a closed receiver's port kept open for answers in progress:
    requests that still arrive are dropped (calls among them answered closed)."""

    __slots__ = ("home",)

    def __init__(self, home: SlotHome) -> None:
        self.home = home

    def port_message(self, port: Port, payload: Payload, wakes: list[Any]) -> None:
        if is_call(leading(payload)) and open_call(self.home, payload):
            slot = payload.resources.pop()
            wakes.append(slot.close)
        wakes.append(payload.discard)

    def port_closed(self, port: Port, wakes: list[Any]) -> None:
        pass

    def port_failed(self, port: Port, error: NodeError, wakes: list[Any]) -> None:
        pass


# --------------------------------------------------------------------------------------
# The caller's side


class ReplyMux:
    """The calls a sender's port is waiting on, and the handler of that port."""

    __slots__ = ("close_when_idle", "ended", "error", "lock", "next_id", "pending", "port")

    def __init__(self, port: Port) -> None:
        self.port = port
        self.lock = threading.RLock()  # re-entrant: see SlotHome
        self.pending: dict[int, _Once] = {}
        self.next_id = 1
        self.ended = False
        self.error: ChannelFailed | None = None
        self.close_when_idle = False

    def add(self, once: _Once) -> int | None:
        """Register a call; None when the port has ended (the caller settles it)."""
        with self.lock:
            if self.ended:
                return None
            call_id = self.next_id
            self.next_id = call_id + 1
            self.pending[call_id] = once
        return call_id

    def forget(self, call_id: int) -> None:
        """The caller stopped waiting (cancelled, or the call could not be sent)."""
        if call_id not in self.pending:
            # Answered already (the answer took it out, and saw to closing the
            # port when idle); ids are never reused, so no lock is needed to know.
            return
        with self.lock:
            self.pending.pop(call_id, None)
            close = self.close_when_idle and not self.pending
        if close:
            self.port.close()

    def defer_close(self) -> bool:
        """The last sender let go: close the port now (False) or after the answers."""
        with self.lock:
            if not self.pending:
                return False
            self.close_when_idle = True
        return True

    def detach(self) -> bool:
        """Before the port moves away with its sender: True if nothing is waiting."""
        with self.lock:
            if self.pending:
                return False
            self.ended = True
        return True

    # PortHandler: runs under the node lock; settles a waiting call.
    def port_message(self, port: Port, payload: Payload, wakes: list[Any]) -> None:
        # A large answer in pieces -- by reference from this process, or read in
        # them from another -- keeps them (the reply head is in front of the
        # value's own head): no joined copy here.
        data = leading(payload)
        head = bytes(data[:3]) if len(data) >= _REPLY_SIZE else b""
        if head not in (REPLY, CLOSED, REHOME):
            error = NodeError(
                "a sender's port got a message that is not an answer to a call "
                f"(it starts {bytes(data[:3])!r}; expected a reply, close or re-home head)"
            )
            wakes.append(payload.discard)
            wakes.append(lambda: port.fail(error))
            return
        (call_id,) = _ID.unpack_from(data, 3)
        with self.lock:
            once = self.pending.pop(call_id, None)
            close = self.close_when_idle and not self.pending
        if close:
            wakes.append(port.close)
        if once is None:  # the caller stopped waiting
            wakes.append(payload.discard)
            return
        if head == REPLY:
            _drop_head(payload, data, _REPLY_SIZE)
            once.settle_reply(payload, wakes)
        elif head == CLOSED:
            once.settle_reply(None, wakes)
        else:
            resources = payload.take_resources()
            if len(resources) != 1 or not isinstance(resources[0], Port):
                for res in resources:
                    wakes.append(res.close)
                error = NodeError(f"a re-home of call {call_id} carried no port")
                once.settle_failed(ChannelFailed(ChannelErrorKind.CORRUPTION, error), wakes)
                return
            once.join_port(resources[0], wakes)

    def port_closed(self, port: Port, wakes: list[Any]) -> None:
        self._end(None, wakes)

    def port_failed(self, port: Port, error: NodeError, wakes: list[Any]) -> None:
        self._end(ChannelFailed(ChannelErrorKind.NODE_FAILURE, error), wakes)

    def _end(self, error: ChannelFailed | None, wakes: list[Any]) -> None:
        with self.lock:
            self.ended = True
            self.error = error
            pending, self.pending = self.pending, {}
        for once in pending.values():
            if error is None:
                once.settle_reply(None, wakes)
            else:
                once.settle_failed(error, wakes)

    def settle_unsent(self, once: _Once) -> None:
        """Settle a call made after the port ended, as that end would have."""
        wakes: list[Any] = []
        if self.error is None:
            once.settle_reply(None, wakes)
        else:
            once.settle_failed(self.error, wakes)
        for wake in wakes:
            wake()


class CallMarker:
    """What a call's reply sender encodes to while the call is being built: taken
    out of the message again before it is sent (see ``_calls.call``)."""

    __slots__ = ("once",)

    def __init__(self, once: _Once) -> None:
        self.once = once

    def close(self) -> None:  # the message was not sent after all
        once = self.once
        mux = once.mux
        if mux is not None:
            mux.forget(once.call_id)
