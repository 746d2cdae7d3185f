"""One-value channels: ``OneshotSender`` and ``OneshotReceiver``.

In memory the value is handed over by reference.  Once an end is promoted, the
value travels as a single message followed by close.  Outcomes differ from mpsc
on purpose: a failure after the value arrived but before it was read *drops* the
value (the receiver sees the failure), while a plain close keeps it; a second
message is a protocol violation that fails the channel.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Generator
from time import monotonic
from typing import Any, Final, Generic, NoReturn, TypeVar, cast

from .._errors import ChannelClosed, ChannelErrorKind, ChannelFailed, NodeError, PayloadError
from .._node import Port, local_node, owed_spins, spin_before_park
from .._wire import Payload, codec_for
from ._reply import CallMarker, ReplyMux, ReplySlot
from ._waiter import AsyncWaiter, ThreadWaiter, Waiter

T = TypeVar("T")


class _St(enum.Enum):
    WAITING = "waiting"  # no value yet, sender alive
    VALUE = "value"  # a value (or its encoded form) is here
    CLOSED = "closed"  # sender gone without sending
    FAILED = "failed"
    TAKEN = "taken"  # the receiver has the value


class _Once:
    __slots__ = (
        "__weakref__",
        "call_id",
        "error",
        "lock",
        "mux",
        "port",
        "receiver_alive",
        "remote",
        "slot",
        "state",
        "tp",
        "value",
        "waiter",
    )

    def __init__(self, tp: Any) -> None:
        self.lock = threading.RLock()
        self.state = _St.WAITING
        self.value: Any = None
        self.error: ChannelFailed | None = None
        self.receiver_alive = True
        self.remote: Port | None = None  # sender side: where the value goes
        self.port: Port | None = None  # receiver side: where the value comes from
        self.waiter: Waiter | None = None
        self.tp = tp
        # A call's answer that comes back on its request's stream (see _reply):
        # sender side, the slot it answers into; receiver side, the calls table
        # it waits in, and its id there.
        self.slot: ReplySlot | None = None
        self.mux: ReplyMux | None = None
        self.call_id = 0

    def _settle(self, state: _St, value: Any = None, error: ChannelFailed | None = None) -> Any:
        with self.lock:
            self.state, self.value, self.error = state, value, error
            waiter, self.waiter = self.waiter, None
        return waiter

    # Settled by a ReplyMux (under the node lock; wake-ups deferred).
    def settle_reply(self, payload: Payload | None, wakes: list[Any]) -> None:
        """The answer's encoding, or None: the reply sender was dropped."""
        with self.lock:
            live = self.state is _St.WAITING and self.receiver_alive
            if live:
                self.state, self.value = (
                    (_St.VALUE, payload) if payload is not None else (_St.CLOSED, None)
                )
                waiter, self.waiter = self.waiter, None
        if not live:
            if payload is not None:
                payload.discard()
        elif waiter is not None:
            wakes.append(waiter.wake)

    def settle_failed(self, error: ChannelFailed, wakes: list[Any]) -> None:
        with self.lock:
            live = self.state is _St.WAITING
            if live:
                self.state, self.error = _St.FAILED, error
                waiter, self.waiter = self.waiter, None
        if live and waiter is not None:
            wakes.append(waiter.wake)

    def join_port(self, port: Port, wakes: list[Any]) -> None:
        """The answer will come on ``port`` instead (the call was re-homed)."""
        with self.lock:
            live = self.state is _St.WAITING and self.receiver_alive
            if live:
                self.port = port
        if live:
            wakes.append(lambda: port.set_handler(self))
        else:
            wakes.append(port.close)

    # PortHandler for the receiving side.
    def port_message(self, port: Port, payload: Payload, wakes: list[Any]) -> None:
        if self.state is not _St.WAITING:
            payload.discard()
            self._fail_later(port, wakes)
            return
        waiter = self._settle(_St.VALUE, payload)
        if waiter is not None:
            wakes.append(waiter.wake)

    def _fail_later(self, port: Port, wakes: list[Any]) -> None:
        if isinstance(self.value, Payload):  # the first value is dropped with the channel
            self.value.discard()
        error = NodeError("unexpected oneshot message")
        wakes.append(lambda: port.fail(error))
        waiter = self._settle(_St.FAILED, None, ChannelFailed(ChannelErrorKind.CORRUPTION, error))
        if waiter is not None:
            wakes.append(waiter.wake)

    def port_closed(self, port: Port, wakes: list[Any]) -> None:
        if self.state is _St.WAITING:
            waiter = self._settle(_St.CLOSED)
            if waiter is not None:
                wakes.append(waiter.wake)

    def port_failed(self, port: Port, error: NodeError, wakes: list[Any]) -> None:
        if self.state in (_St.WAITING, _St.VALUE):
            if isinstance(self.value, Payload):
                self.value.discard()
            failure = ChannelFailed(ChannelErrorKind.NODE_FAILURE, error)
            waiter = self._settle(_St.FAILED, None, failure)
            if waiter is not None:
                wakes.append(waiter.wake)


_PENDING: Final = object()


class OneshotSender(Generic[T]):
    """Sends exactly one value."""

    __slots__ = ("__weakref__", "_core", "_sent")

    def __init__(self, core: _Once) -> None:
        self._core: _Once | None = core
        self._sent = False

    def send(self, value: T) -> None:
        core = self._core
        if self._sent:
            raise RuntimeError("OneshotSender.send called twice: a oneshot carries one value")
        if core is None:
            raise RuntimeError("this OneshotSender is closed (or was sent inside a message)")
        if core.remote is not None:
            port = core.remote
            payload = codec_for(core.tp).encode(value)
            self._sent, self._core = True, None
            port.send_and_close(payload)
            return
        slot = core.slot
        if slot is not None:
            payload = codec_for(core.tp).encode(value)
            self._sent, self._core = True, None
            slot.send(payload)
            return
        self._sent, self._core = True, None
        late_port: Port | None
        with core.lock:
            if not core.receiver_alive or core.remote is not None:
                late_port = core.remote
            else:
                late_port = None
                core.state, core.value = _St.VALUE, value
                waiter, core.waiter = core.waiter, None
                if waiter is not None:
                    waiter.wake()
                return
        if late_port is not None:  # the receiver moved away while we were deciding
            late_port.send_and_close(codec_for(core.tp).encode(value))

    def is_closed(self) -> bool:
        core = self._core
        if core is None:
            return True
        if core.remote is not None:
            return core.remote.is_closed()
        if core.slot is not None:
            return core.slot.is_closed()
        return not core.receiver_alive

    def close(self) -> None:
        core, self._core = self._core, None
        if core is None:
            return
        if core.remote is not None:
            core.remote.close()
            return
        if core.slot is not None:
            core.slot.close()
            return
        remote: Port | None
        with core.lock:
            if core.state is _St.WAITING and core.remote is None:
                core.state = _St.CLOSED
                waiter, core.waiter = core.waiter, None
            else:
                waiter = None
            remote = core.remote
        if waiter is not None:
            waiter.wake()
        if remote is not None:
            remote.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<OneshotSender {'used' if self._core is None else 'ready'}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("OneshotSender is not picklable; send it inside a workmesh message")


class OneshotReceiver(Generic[T]):
    """Receives the one value: ``await rx`` or ``rx.recv_blocking()``."""

    __slots__ = ("__weakref__", "_core")

    def __init__(self, core: _Once) -> None:
        self._core: _Once | None = core

    def _outcome(self) -> Any:
        core = self._core
        if core is None:
            raise RuntimeError("this OneshotReceiver was used up (or sent inside a message)")
        with core.lock:
            state, value, error = core.state, core.value, core.error
            if state is _St.WAITING:
                return _PENDING
            if state is _St.VALUE:
                core.state, core.value = _St.TAKEN, None
        if state is _St.VALUE:
            self._close_port()
            if isinstance(value, Payload):
                return self._decode(value)
            return value
        if state is _St.FAILED:
            assert error is not None
            raise error
        raise ChannelClosed()

    def _decode(self, payload: Payload) -> Any:
        core = self._core
        assert core is not None
        try:
            return codec_for(core.tp).decode(payload)
        except PayloadError as exc:
            raise ChannelFailed(ChannelErrorKind.CORRUPTION, exc) from exc

    def _close_port(self) -> None:
        core = self._core
        if core is not None and core.port is not None:
            core.port.close()

    def _park(self, waiter: Waiter) -> bool:
        core = self._core
        assert core is not None
        with core.lock:
            if core.state is not _St.WAITING:
                return False
            core.waiter = waiter
            return True

    async def recv(self) -> T:
        while True:
            value = self._outcome()
            if value is not _PENDING:
                return cast(T, value)
            if owed_spins and spin_before_park():
                continue  # the loop's spin for an answer ran here: look again
            waiter = AsyncWaiter()
            if self._park(waiter):
                await waiter.fut

    def __await__(self) -> Generator[Any, None, T]:
        return self.recv().__await__()

    def recv_blocking(self, timeout: float | None = None) -> T:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            value = self._outcome()
            if value is not _PENDING:
                return cast(T, value)
            waiter = ThreadWaiter()
            if self._park(waiter):
                remaining = None if deadline is None else deadline - monotonic()
                if not waiter.wait(remaining):
                    raise TimeoutError(f"no value within {timeout} s")

    def close(self) -> None:
        core, self._core = self._core, None
        if core is None:
            return
        if core.state is _St.TAKEN:
            # The value was taken here (only this end takes it), and its port
            # closed then: nothing is held any more.  The lock, the value and the
            # port are passed over -- the common end of a call's reply receiver.
            core.receiver_alive = False
            if core.mux is not None:
                core.mux.forget(core.call_id)
            return
        with core.lock:
            core.receiver_alive = False
            value, core.value = core.value, None
            port = core.port
        if isinstance(value, Payload):
            value.discard()
        if port is not None:
            port.close()
        if core.mux is not None:
            core.mux.forget(core.call_id)

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<OneshotReceiver {'used' if self._core is None else 'open'}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("OneshotReceiver is not picklable; send it inside a workmesh message")


def oneshot(tp: Any = object) -> tuple[OneshotSender[Any], OneshotReceiver[Any]]:
    core = _Once(tp)
    return OneshotSender(core), OneshotReceiver(core)


# --------------------------------------------------------------------------------------
# Promotion


def oneshot_sender_to_port(sender: OneshotSender[Any]) -> Port:
    """``sender`` as a port that can travel (used up)."""
    taken = take_oneshot_sender(sender)
    assert isinstance(taken, Port)  # only a call being built is taken as a marker
    return taken


def take_oneshot_sender(sender: OneshotSender[Any]) -> Port | CallMarker:
    """Move ``sender``'s resource out of it to travel in a message: a port, or for the
    reply sender of a call being built, a marker taken out before sending."""
    core = sender._core
    if core is None or sender._sent:
        raise RuntimeError("this OneshotSender was used up")
    sender._core = None
    if core.remote is not None:
        return core.remote
    if core.slot is not None:  # an answer owed to another process: sent on
        return core.slot.to_port()
    if core.mux is not None:  # a call being built: see _calls.call
        return CallMarker(core)  # taken out of the message before it is sent
    a, b = local_node().new_pair()
    with core.lock:
        attach = core.receiver_alive and core.remote is None and core.state is _St.WAITING
        if attach:
            core.port = b
    if attach:
        b.set_handler(core)
    else:
        b.close()
    return a


def check_oneshot_receiver(receiver: OneshotReceiver[Any]) -> None:
    """Raise PayloadError now if moving ``receiver`` would fail (its value won't encode)."""
    core = receiver._core
    if core is None:
        raise RuntimeError("this OneshotReceiver was used up")
    with core.lock:
        state, value = core.state, core.value
    if state is _St.VALUE and not isinstance(value, Payload):
        codec_for(core.tp).encode(value)


def oneshot_receiver_to_port(receiver: OneshotReceiver[Any]) -> Port:
    core = receiver._core
    if core is None:
        raise RuntimeError("this OneshotReceiver was used up")
    with core.lock:
        value = core.value
        if core.state is _St.VALUE and not isinstance(value, Payload):
            # Encode before anything moves: if it fails, the receiver keeps its value.
            core.value = codec_for(core.tp).encode(value)
    receiver._core = None
    if core.port is not None:
        core.port.remove_handler()
    with core.lock:
        state, value, port = core.state, core.value, core.port
        if port is not None and state is _St.WAITING:
            return port
        send, recv = local_node().new_pair()
        if state is _St.WAITING:
            core.remote = send  # the local sender will send through the port
            return recv
        core.receiver_alive = False
    if state is _St.VALUE:
        assert isinstance(value, Payload)  # encoded above, before anything moved
        send.send_and_close(value)
    elif state is _St.FAILED:
        assert core.error is not None
        cause = core.error.__cause__
        send.fail(cause if isinstance(cause, NodeError) else NodeError(str(core.error)))
    else:
        send.close()
    if port is not None:
        port.close()
    return recv


def oneshot_sender_from_port(port: Port | ReplySlot, tp: Any = object) -> OneshotSender[Any]:
    core = _Once(tp)
    if isinstance(port, ReplySlot):  # the answer to a call, owed on the stream it came by
        core.slot = port
    else:
        core.remote = port
    core.receiver_alive = False
    return OneshotSender(core)


def oneshot_receiver_from_port(port: Port, tp: Any = object) -> OneshotReceiver[Any]:
    core = _Once(tp)
    core.port = port
    port.set_handler(core)
    return OneshotReceiver(core)


def retype_oneshot(endpoint: OneshotSender[Any] | OneshotReceiver[Any], tp: Any) -> Any:
    core = endpoint._core
    if core is not None:
        core.tp = tp
    return endpoint
