"""Multi-producer, single-consumer channels: ``Sender`` and ``Receiver``.

A channel starts as an in-memory queue shared by its ends: ``send`` appends the
object itself (no copy, no encoding) and wakes the receiver.  When an end is
encoded into a message it is *promoted* to ports, one way:

* encoding a ``Sender`` gives a fresh port pair; the far end is attached to the
  receiver (directly when the receiver is here, through an ATTACH control message
  when the receiver has moved away), so every serialized sender is its own ordered
  stream into the receiver;
* encoding a ``Receiver`` re-sends what it had buffered through a new port, then
  attaches the ports it was listening to, and from then on the local senders
  encode their messages and send them through that port.

Receiver sources are the local senders plus the attached ports.  The channel is
closed when no source is left and nothing is queued.  A failed port surfaces as
:class:`~workmesh.ChannelFailed` only if it was the last source and nothing is
queued; otherwise the failure is logged and the channel ends, later, as closed.

Locks.  Each channel has a re-entrant lock.  The node calls the channel's handler
with the node lock held and the handler takes the channel lock; so code that holds
the channel lock never calls into the node, except while converting a receiver,
after every handler of that channel has been removed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from time import monotonic as _monotonic
from typing import Any, Final, Generic, NoReturn, TypeVar, cast

from .._errors import (
    ChannelClosed,
    ChannelEmpty,
    ChannelErrorKind,
    ChannelFailed,
    NodeError,
    PayloadError,
)
from .._node import Port, local_node, owed_spins, spin_before_park
from .._wire import Codec, Payload, RunPayload, SplicedPayload, codec_for
from ._calls import call as _call
from ._calls import call_failable as _call_failable
from ._reply import Drain, ReplyMux, SlotHome, is_call, leading, open_call, travelling
from ._waiter import AsyncWaiter, ThreadWaiter, Waiter

log = logging.getLogger(__name__)

T = TypeVar("T")

# A control message on an mpsc port: "attach the port I carry as another sender".
# A fixext1 of code 127 is never the start of an encoded workmesh value.
ATTACH: Final = b"\xd4\x7f\x00"
_MARK: Final = ATTACH[0]  # the first byte of every control head (see also _reply)


class _FromPort:
    __slots__ = ("payload", "port")

    def __init__(self, port: Port, payload: Payload) -> None:
        self.port = port
        self.payload = payload


class _FromRun:
    """A run of messages from a port (see RunPayload), queued as one item.  It
    stays at the head of the queue until its last message is taken, so a receive
    cancelled while parked loses nothing here either."""

    __slots__ = ("datas", "next", "port", "run")

    def __init__(self, port: Port, run: RunPayload) -> None:
        self.port = port
        self.run = run  # holds the run's charge to its connection while queued
        self.datas = run.datas
        self.next = 0

    def take(self, items: deque[Any]) -> _FromPort:
        """The next message as an item of its own (call under the core's lock)."""
        data = self.datas[self.next]
        self.next += 1
        if self.next == len(self.datas):
            items.popleft()
        return _FromPort(self.port, Payload(data, []))

    def rest(self) -> list[Payload]:
        return [Payload(data, []) for data in self.datas[self.next :]]


class _PortEnd:
    __slots__ = ("error", "port")

    def __init__(self, port: Port, error: ChannelFailed | None) -> None:
        self.port = port
        self.error = error


class _Attach:
    __slots__ = ("port",)

    def __init__(self, port: Port) -> None:
        self.port = port


class _Core:
    """The state one channel's ends share."""

    __slots__ = (
        "__weakref__",
        "_codec",
        "codec_type",
        "corrupt",
        "homes",
        "items",
        "lock",
        "ports",
        "receiver_alive",
        "remote",
        "replies",
        "senders",
        "waiter",
    )

    def __init__(self, tp: Any) -> None:
        self.lock = threading.RLock()
        self.items: deque[Any] = deque()
        self.senders = 0
        self.ports: set[Port] = set()
        # Ports whose message failed to decode, and the error their end must report.
        self.corrupt: dict[Port, ChannelFailed] = {}
        self.receiver_alive = True
        self.remote: Port | None = None
        self.waiter: Waiter | None = None
        self.codec_type = tp
        self._codec: Codec | None = None
        # Calls (see _reply): the answers owed on each receiving port, and, when
        # this channel's senders call a receiver elsewhere, the calls they await.
        self.homes: dict[Port, SlotHome] = {}
        self.replies: ReplyMux | None = None

    @property
    def codec(self) -> Codec:
        codec = self._codec
        if codec is None:
            codec = self._codec = codec_for(self.codec_type)
        return codec

    def retype(self, tp: Any) -> None:
        self.codec_type, self._codec = tp, None

    def take_waiter(self) -> Waiter | None:
        waiter, self.waiter = self.waiter, None
        return waiter

    # PortHandler: runs under the node lock; records and defers the wake-up.
    def port_message(self, port: Port, payload: Payload, wakes: list[Any]) -> None:
        resources = payload.resources
        if (
            resources
            and len(resources) == 1
            and isinstance(resources[0], Port)
            and type(payload) is not SplicedPayload  # (never a marker)
            and payload.data == ATTACH
        ):
            item: Any = _Attach(resources[0])
        else:
            # Anything else, a forged marker included, is decoded as data (and a
            # marker that is not a value of the channel's type reads as corruption).
            if is_call(leading(payload)):
                self._open_call(port, payload)
            item = _FromPort(port, payload)
        with self.lock:
            self.items.append(item)
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            wakes.append(waiter.wake)

    def _open_call(self, port: Port, payload: Payload) -> None:
        """A call: its head becomes the reply slot its answer will go through."""
        with self.lock:
            home = self.homes.get(port)
            if home is None:
                home = self.homes[port] = SlotHome(port)
        open_call(home, payload)  # a malformed head stays, to read as corruption

    def port_run(self, port: Port, run: RunPayload, wakes: list[Any]) -> None:
        """A run of messages, queued whole (none carries a resource, so none is an
        attach marker).  A run holding a call is taken message by message."""
        for data in run.datas:
            if data[0] == _MARK:
                for payload in run.payloads():
                    self.port_message(port, payload, wakes)
                return
        item = _FromRun(port, run)
        with self.lock:
            self.items.append(item)
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            wakes.append(waiter.wake)

    def port_closed(self, port: Port, wakes: list[Any]) -> None:
        self._port_end(port, None, wakes)

    def port_failed(self, port: Port, error: NodeError, wakes: list[Any]) -> None:
        kind = (
            ChannelErrorKind.CORRUPTION if port in self.corrupt else ChannelErrorKind.NODE_FAILURE
        )
        self._port_end(port, ChannelFailed(kind, error), wakes)

    def _port_end(self, port: Port, error: ChannelFailed | None, wakes: list[Any]) -> None:
        with self.lock:
            self.items.append(_PortEnd(port, error))
            waiter = self.take_waiter()
        if waiter is not None:
            wakes.append(waiter.wake)


_EMPTY: Final = object()


class _SpinOwed:
    """Not a queued item: what recv() takes when it is to run an owed spin first."""


_SPIN_OWED: Final = _SpinOwed()
_CONTROL: Final = frozenset({_FromPort, _FromRun, _PortEnd, _Attach, _SpinOwed})


class Sender(Generic[T]):
    """The sending end of a channel; clone it for more producers.  Never blocks."""

    __slots__ = ("__weakref__", "_core")

    def __init__(self, core: _Core) -> None:
        self._core: _Core | None = core

    def _live_core(self) -> _Core:
        core = self._core
        if core is None:
            raise RuntimeError("this Sender is closed (or was sent inside a message)")
        return core

    def send(self, msg: T) -> None:
        """Queue ``msg`` for the receiver; dropped if the receiver is gone."""
        core = self._core
        if core is None:
            core = self._live_core()  # raises
        remote = core.remote
        if remote is not None:
            # To another process (the common case of a stream): the steps of
            # Port.send and the codec property, inline -- two calls fewer per message.
            codec = core._codec
            if codec is None:
                codec = core.codec
            data = codec.encode_plain(msg)
            if data is not None:
                remote.node.send_data(remote, data)
            else:
                remote.node.send(remote, codec.encode(msg))
            return
        if core.remote is None:
            waiter = None
            with core.lock:
                local = core.remote is None
                if local and core.receiver_alive:
                    core.items.append(msg)
                    waiter, core.waiter = core.waiter, None
            if local:
                if waiter is not None:
                    waiter.wake()
                return
        remote = core.remote
        assert remote is not None
        remote.send(core.codec.encode(msg))

    def clone(self) -> Sender[T]:
        core = self._live_core()
        with core.lock:
            core.senders += 1
        return Sender(core)

    def close(self) -> None:
        core, self._core = self._core, None
        if core is not None:
            _release_sender(core)

    def is_closed(self) -> bool:
        """True when messages can no longer arrive (receiver gone, or its port failed)."""
        core = self._core
        if core is None:
            return True
        if core.remote is not None:
            return core.remote.is_closed()
        return not core.receiver_alive

    def bridge(self, receiver: Receiver[T]) -> None:
        """Forward everything sent to ``receiver``'s channel into this sender's channel."""
        _bridge(self, receiver)

    async def call(self, make: Any, input: Any, *, reply_type: Any = None) -> Any:
        """Send ``make(rpc)`` and await the answer (``reply_type``: how to decode it)."""
        return await _call(self, make, input, reply_type=reply_type)

    async def call_failable(self, make: Any, input: Any, *, reply_type: Any = None) -> Any:
        """As ``call``, with a FailableRpc: a failure raises the caller's RemoteError."""
        return await _call_failable(self, make, input, reply_type=reply_type)

    def __enter__(self) -> Sender[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._core is None else ("port" if self._core.remote else "local")
        return f"<Sender {state}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("Sender is not picklable; send it inside a workmesh message")


def _release_sender(core: _Core) -> None:
    with core.lock:
        core.senders -= 1
        last = core.senders == 0
        remote = core.remote if last else None
        waiter = core.take_waiter() if last and remote is None else None
    if waiter is not None:
        waiter.wake()
    if remote is not None:
        replies = core.replies
        # Calls still waiting keep the port open for their answers; it closes
        # after the last one (see _reply.ReplyMux).
        if replies is None or not replies.defer_close():
            remote.close()


class Receiver(Generic[T]):
    """The receiving end of a channel.  ``await recv()``, or iterate."""

    __slots__ = ("__weakref__", "_core", "_terminated")

    def __init__(self, core: _Core) -> None:
        self._core: _Core | None = core
        self._terminated = False

    def _live_core(self) -> _Core:
        core = self._core
        if core is None:
            raise RuntimeError("this Receiver is closed (or was sent inside a message)")
        return core

    # ----------------------------------------------------------------- receiving
    def _take(self, core: _Core, make_waiter: Callable[[], Waiter] | None) -> tuple[Any, Any]:
        """Under one lock: the next queued item, or register a waiter and return _EMPTY.

        Raises ChannelClosed when nothing is queued and no source is left.  The item
        stays queued until taken here, so a receive cancelled while parked loses
        nothing.
        """
        with core.lock:
            items = core.items
            if items:
                if type(items[0]) is _FromRun:
                    return items[0].take(items), None
                return items.popleft(), None
            if core.senders == 0 and not core.ports:
                self._terminated = True
                raise ChannelClosed()
            if make_waiter is None:
                return _EMPTY, None
            waiter = make_waiter()
            core.waiter = waiter
            return _EMPTY, waiter

    def _dispatch(self, core: _Core, item: Any) -> Any:
        """Turn a control item into a value, or handle it and return _EMPTY."""
        cls = type(item)
        if cls is _FromPort:
            if item.port in core.corrupt:  # the rest of a corrupt stream is dropped
                item.payload.discard()
                return _EMPTY
            return self._decode(core, item)
        if cls is _PortEnd:
            self._on_port_end(core, item)
        else:  # _Attach: another sender's port joins this receiver
            with core.lock:
                core.ports.add(item.port)
            item.port.set_handler(core)
        return _EMPTY

    def _decode(self, core: _Core, item: _FromPort) -> Any:
        try:
            return core.codec.decode(item.payload)
        except PayloadError as exc:
            return self._corrupt(core, item, exc)

    @staticmethod
    def _corrupt(core: _Core, item: _FromPort, exc: PayloadError) -> Any:
        """A message that would not decode: its port's stream is corrupt from here."""
        log.warning("message corruption on %r: %s", item.port, exc)
        error = NodeError("failed to parse message", cause=exc)
        with core.lock:
            core.corrupt[item.port] = ChannelFailed(ChannelErrorKind.CORRUPTION, exc)
        # Failing the port tells the sending side too; if the port already ended,
        # its queued end item will carry the corruption instead.
        item.port.fail(error)
        return _EMPTY

    def _on_port_end(self, core: _Core, item: _PortEnd) -> None:
        with core.lock:
            core.ports.discard(item.port)
            core.homes.pop(item.port, None)  # its calls' slots keep what they need
            error = core.corrupt.pop(item.port, None) or item.error
            last = not core.items and core.senders == 0 and not core.ports
        if error is None:
            return
        if last:
            self._terminated = True
            raise error
        log.info("a sender of the channel failed, others remain: %s", error)

    def _ready(self, core: _Core, item: Any) -> Any:
        """A taken item as a value, or _EMPTY when it was control to act on."""
        cls = type(item)
        if cls is _FromPort and not core.corrupt:
            # The common remote case, decoded here: _dispatch and _decode's steps
            # for it, one call each fewer per message received.
            try:
                return core.codec.decode(item.payload)
            except PayloadError as exc:
                return self._corrupt(core, item, exc)
        if cls not in _CONTROL:
            return item
        return self._dispatch(core, item)

    def try_recv(self) -> T:
        """A queued message, or raise ChannelEmpty / ChannelClosed / ChannelFailed."""
        core = self._live_core()
        while True:
            item, _ = self._take(core, None)
            if item is _EMPTY:
                raise ChannelEmpty()
            value = self._ready(core, item)
            if value is not _EMPTY:
                return cast(T, value)

    async def recv(self) -> T:
        core = self._core
        if core is None:
            core = self._live_core()  # raises
        spun = False
        while True:
            # The steps of _take and _ready, inline: a message sent within this
            # process comes back as it is, with no call but the lock's.  Measured
            # (instructions per round trip between two tasks on one loop, pure
            # build): 51.4k -> 45.9k.
            with core.lock:
                items = core.items
                if items:
                    item = items[0]
                    if type(item) is _FromRun:
                        item = item.take(items)
                    else:
                        items.popleft()
                    waiter = None
                elif core.senders == 0 and not core.ports:
                    self._terminated = True
                    raise ChannelClosed()
                elif owed_spins and not spun:
                    # Before parking, the spin this thread's loop owes (once: the
                    # table may hold other threads' spins).
                    spun = True
                    item = _SPIN_OWED
                    waiter = None
                else:
                    waiter = core.waiter = AsyncWaiter()
            if waiter is None:
                if type(item) not in _CONTROL:
                    return item  # type: ignore[no-any-return]
                if item is _SPIN_OWED:
                    spin_before_park()
                    continue
                value = self._ready(core, item)
                if value is not _EMPTY:
                    return cast(T, value)
                continue
            try:
                await waiter.fut
            except BaseException:
                self._unpark(core, waiter)
                raise

    def recv_blocking(self, timeout: float | None = None) -> T:
        """Block this thread for a message; raises TimeoutError after ``timeout`` s."""
        core = self._live_core()
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            item, waiter = self._take(core, ThreadWaiter)
            if waiter is None:
                value = self._ready(core, item)
                if value is not _EMPTY:
                    return cast(T, value)
                continue
            remaining = None if deadline is None else deadline - _monotonic()
            if not waiter.wait(remaining):
                self._unpark(core, waiter)
                raise TimeoutError(f"no message within {timeout} s")

    @staticmethod
    def _unpark(core: _Core, waiter: Waiter) -> None:
        with core.lock:
            if core.waiter is waiter:
                core.waiter = None

    def __aiter__(self) -> AsyncIterator[T]:
        return _Messages(self)

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield self.recv_blocking()
            except ChannelClosed:
                return
            except ChannelFailed as exc:
                log.info("channel iteration ended by failure: %s", exc)
                return

    # ----------------------------------------------------------------- the rest
    def sender(self) -> Sender[T]:
        """A new sender for this channel (re-opens it after it was closed)."""
        core = self._live_core()
        with core.lock:
            core.senders += 1
        self._terminated = False
        return Sender(core)

    def is_terminated(self) -> bool:
        core = self._core
        if core is None or self._terminated:
            return True
        with core.lock:
            return core.senders == 0 and not core.ports and not core.items

    def bridge(self, sender: Sender[T]) -> None:
        _bridge(sender, self)

    def close(self) -> None:
        core, self._core = self._core, None
        if core is None:
            return
        with core.lock:
            core.receiver_alive = False
            homes, core.homes = core.homes, {}
        if not homes:
            _close_receiving(core, homes)
            return
        node = local_node()
        if node.in_operation():  # a finalizer inside a node operation: not in there
            node.when_free(lambda: _close_receiving(core, homes))
        else:
            _close_receiving(core, homes)

    def __enter__(self) -> Receiver[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Receiver {'closed' if self._core is None else 'open'}>"

    def __reduce__(self) -> NoReturn:
        raise TypeError("Receiver is not picklable; send it inside a workmesh message")


class _Messages(Generic[T]):
    """``async for`` over a :class:`Receiver`: each step takes the next message, and
    the iteration ends when the channel closes or fails.

    A class rather than an async generator, which mypyc cannot compile.
    """

    __slots__ = ("_receiver",)

    def __init__(self, receiver: Receiver[T]) -> None:
        self._receiver = receiver

    def __aiter__(self) -> _Messages[T]:
        return self

    async def __anext__(self) -> T:
        receiver = self._receiver
        while True:
            try:
                # What is queued already is taken without a recv() coroutine each,
                # and a message from a port decoded here: the steps of _take and
                # _ready, inline (about a fifth of a streamed message's cost on the
                # receiving side).  Only an empty queue waits, in recv().
                core = receiver._live_core()
                with core.lock:
                    items = core.items
                    if not items:
                        item = _EMPTY
                    elif type(items[0]) is _FromRun:
                        # A message of a run, decoded from its encoding: no item
                        # or payload object of its own (see RunPayload).
                        run = items[0]
                        data = run.datas[run.next]
                        run.next += 1
                        if run.next == len(run.datas):
                            items.popleft()
                        item = run
                    else:
                        item = items.popleft()
                if item is _EMPTY:
                    return await receiver.recv()
                if type(item) is _FromRun:
                    if core.corrupt:
                        value = receiver._ready(core, _FromPort(item.port, Payload(data, [])))
                    else:
                        codec = core._codec
                        if codec is None:
                            codec = core.codec
                        try:
                            value = codec.decode_data(data)
                        except PayloadError as exc:
                            value = receiver._corrupt(
                                core, _FromPort(item.port, Payload(data, [])), exc
                            )
                elif type(item) is _FromPort and not core.corrupt:
                    codec = core._codec
                    if codec is None:
                        codec = core.codec
                    try:
                        value = codec.decode(item.payload)
                    except PayloadError as exc:
                        value = receiver._corrupt(core, item, exc)
                else:
                    value = receiver._ready(core, item)
                if value is not _EMPTY:
                    return cast(T, value)
            except ChannelClosed:
                raise StopAsyncIteration from None
            except ChannelFailed as exc:
                log.info("channel iteration ended by failure: %s", exc)
                raise StopAsyncIteration from None


def _close_receiving(core: _Core, homes: dict[Port, SlotHome]) -> None:
    """A closed receiver's queue dropped and its ports closed -- except a port that
    calls came on (``homes``) while answers to them are still being worked on:
    that one stays open for them, refusing new requests (see _reply.Drain)."""
    if homes:
        with core.lock:
            ports = list(core.ports)
        for port in ports:
            port.remove_handler()  # nothing may reach the dropped queue from here on
    with core.lock:
        items, core.items = core.items, deque()
        ports_left, core.ports = core.ports, set()
    _discard_items(items)
    for port in ports_left:
        home = homes.get(port)
        if home is not None:
            port.set_handler(Drain(home))
            if home.close_when_answered():
                continue
        port.close()


def _discard_items(items: deque[Any]) -> None:
    for item in items:
        if isinstance(item, _FromPort):
            item.payload.discard()
        elif isinstance(item, _Attach):
            item.port.close()


def channel(tp: Any = object) -> tuple[Sender[Any], Receiver[Any]]:
    """A new multi-producer, single-consumer channel carrying ``tp`` values."""
    core = _Core(tp)
    core.senders = 1
    return Sender(core), Receiver(core)


mpsc_channel = channel


# --------------------------------------------------------------------------------------
# Promotion: endpoints to ports and back.


def sender_to_port(sender: Sender[Any]) -> Port:
    """Move a sender into a port (the sender object is used up)."""
    core = sender._live_core()
    sender._core = None
    node = local_node()
    with core.lock:
        remote = core.remote
        sole = core.senders == 1
        replies = core.replies
        if remote is not None and sole and (replies is None or replies.detach()):
            core.senders = 0
            moving = True
        else:
            moving = False
    if moving:
        assert remote is not None
        if replies is not None:
            remote.remove_handler()  # no call waits: the port moves on without its table
        return remote
    with core.lock:
        if remote is None and core.receiver_alive:
            a, b = node.new_pair()
            core.ports.add(b)
            core.senders -= 1
        else:
            a, b = node.new_pair()
    if remote is None and core.receiver_alive:
        b.set_handler(core)
    elif remote is not None:
        remote.send(Payload(ATTACH, [b]))
        _release_sender(core)
    else:
        b.close()
        _release_sender(core)
    return a


def receiver_to_port(receiver: Receiver[Any]) -> Port:
    """Move a receiver into a port; local senders then send through that port."""
    core = receiver._live_core()
    with core.lock:
        ports = list(core.ports)
    for port in ports:
        port.remove_handler()  # from here on the node never calls into this channel
    with core.lock:
        if len(ports) == 1 and not core.items and core.senders == 0:
            receiver._core = None
            core.ports.clear()
            core.receiver_alive = False
            homes, core.homes = core.homes, {}
            _rehome_all(homes)
            return ports[0]
        try:
            buffered: list[Payload | None] = []
            for item in core.items:
                if type(item) is _FromRun:
                    buffered += item.rest()
                else:
                    buffered.append(_as_payload(core, item))
        except PayloadError:
            # Nothing has moved yet: give the receiver its ports back and let the
            # caller see why its message cannot be sent.
            for port in ports:
                port.set_handler(core)
            raise
        receiver._core = None
        send, recv = local_node().new_pair()
        core.items.clear()
        for payload in buffered:
            if payload is not None:
                send.send(payload)
        core.ports.clear()
        core.remote = send
        no_senders = core.senders == 0
        homes, core.homes = core.homes, {}
    _rehome_all(homes)
    for port in ports:
        send.send(Payload(ATTACH, [port]))
    if no_senders:
        send.close()
    return recv


def check_receiver(receiver: Receiver[Any]) -> None:
    """Raise PayloadError now if moving ``receiver`` would fail (see _wire.Codec.encode)."""
    core = receiver._live_core()
    with core.lock:
        local = [item for item in core.items if type(item) not in _CONTROL]
    for item in local:
        core.codec.encode(item)


def _rehome_all(homes: dict[Port, SlotHome]) -> None:
    """Before the ports move: calls being answered here get ports of their own."""
    for home in homes.values():
        for slot in home.snapshot():
            slot.rehome()


def _as_payload(core: _Core, item: Any) -> Payload | None:
    if isinstance(item, _FromPort):
        return travelling(item.payload)  # a call's reply slot cannot travel as it is
    if isinstance(item, _Attach):
        return Payload(ATTACH, [item.port])
    if isinstance(item, _PortEnd):
        return None
    return core.codec.encode(item)


def sender_from_port(port: Port, tp: Any = object) -> Sender[Any]:
    core = _Core(tp)
    core.remote = port
    core.senders = 1
    core.receiver_alive = False
    return Sender(core)


def receiver_from_port(port: Port, tp: Any = object) -> Receiver[Any]:
    core = _Core(tp)
    core.ports.add(port)
    port.set_handler(core)
    return Receiver(core)


def retype(endpoint: Sender[Any] | Receiver[Any], tp: Any) -> Any:
    core = endpoint._core
    if core is not None:
        core.retype(tp)
    return endpoint


def _bridge(sender: Sender[Any], receiver: Receiver[Any]) -> None:
    # Moving the receiver can fail (a buffered message that cannot be encoded) and
    # then leaves it as it was; moving the sender cannot fail, so it goes second.
    b = receiver_to_port(receiver)
    a = sender_to_port(sender)
    b.bridge(a)
