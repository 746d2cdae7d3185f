"""The wire codec (layer L1): payloads, resources and node frames, without any I/O.

Payloads.  A value that leaves its process is encoded with msgspec's msgpack
codec for a declared type.  Things that cannot be copied as bytes -- channel
endpoints, file descriptors -- are *resources*: inside the payload they become a
msgpack Ext that holds an index into a side list, and the side list travels
beside the bytes (ports are migrated, fds go by SCM_RIGHTS).  Two further values
are encoded inline as Ext: an embedded :class:`Message` (a type-erased payload
with its own slice of the side list) and :class:`~workmesh.RemoteError`.

This layer does not know the endpoint classes (they live above it); the channel
layer registers a :class:`ResourceKind` for each.  Encoding is two-phase: the
first pass only *collects* resource objects, and they are converted (moved out of
their owners) only once the whole value has encoded, so a failed ``send`` leaves
every endpoint in the message untouched.

Frames.  The node protocol's frames are tagged, frozen, array-like Structs
(defined in :mod:`workmesh._frames`), encoded here and framed on a byte stream
behind an 8-byte header (length, descriptor count, where a large body starts).
:class:`FrameDecoder` splits a stream incrementally and enforces a size limit.
"""

from __future__ import annotations

import re
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import UnionType
from typing import Any, Final, Protocol, TypeVar, Union, cast, get_args, get_origin

import msgspec

from ._errors import PayloadError, RemoteError
from ._fd import OwnedFd

# The node's frame types, the link limits and the run bounds are msgspec Structs
# and constants kept in _frames: mypyc, which compiles this module in the compiled
# build, does not pass on a Struct's class keywords (tag=, array_like=).
from ._frames import (
    DEFAULT_MAX_FDS,
    DEFAULT_MAX_FRAME,
    RUN_HEAD,
    RUN_ITEM,
    FdRecord,
    Frame,
    Limits,
    MessageFrame,
    MessageRunFrame,
    PortRecord,
)

T = TypeVar("T")

# Ext codes.  1-15 are resources (index into the side list); 16+ are inline values.
EXT_FD: Final = 1
EXT_MESSAGE: Final = 16
EXT_REMOTE_ERROR: Final = 17
EXT_RAW: Final = 15  # a resource re-sent as it is (e.g. inside a Message not yet parsed)


class Resource(Protocol):
    """What a side list holds: something that can be closed if it is never used."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """How one Python class travels as a resource.

    ``take(obj)`` moves the underlying resource out of ``obj`` (after which ``obj``
    is unusable); ``make(resource, declared)`` builds an object from a received
    resource, typed by ``declared`` (``None`` for an untyped position);
    ``retype(obj, declared)`` adjusts an object built untyped to a declared type;
    ``check(obj)``, if given, raises PayloadError when ``take`` would fail, so that a
    message is checked whole before any of its resources move.
    """

    code: int
    cls: type[Any]
    take: Callable[[Any], Resource]
    make: Callable[[Any, Any], object]
    retype: Callable[[Any, Any], object]
    check: Callable[[Any], None] | None = None  # raises PayloadError if take would fail


_kinds_by_cls: Final[dict[type[Any], ResourceKind]] = {}
_kinds_by_code: Final[dict[int, ResourceKind]] = {}


def register_resource_kind(kind: ResourceKind) -> None:
    if not 1 <= kind.code < EXT_RAW:
        raise ValueError(f"resource ext code must be in 1..{EXT_RAW - 1}, got {kind.code}")
    known = _kinds_by_code.get(kind.code)
    if known is not None and known.cls is not kind.cls:
        raise ValueError(f"ext code {kind.code} already used by {known.cls.__qualname__}")
    _kinds_by_cls[kind.cls] = kind
    _kinds_by_code[kind.code] = kind


def _kind_for(obj: object) -> ResourceKind | None:
    kind = _kinds_by_cls.get(type(obj))
    if kind is None:
        for base in type(obj).__mro__[1:]:
            kind = _kinds_by_cls.get(base)
            if kind is not None:
                break
    return kind


# A payload's encoding: bytes made here, or a view into the frame it arrived in.
Data = bytes | memoryview


class Payload:
    """An encoded value: msgpack bytes plus the resources it refers to, in order.

    A payload owns its resources until they are decoded; ``discard()`` closes the
    ones nobody took (ports are closed, descriptors closed), so dropping a message
    never leaks what it carried.
    """

    __slots__ = ("data", "resources")

    def __init__(self, data: Data, resources: list[Any] | None = None) -> None:
        self.data = data
        self.resources: list[Any] = resources if resources is not None else []

    def take_resources(self) -> list[Any]:
        resources, self.resources = self.resources, []
        return resources

    def discard(self) -> None:
        for res in self.take_resources():
            res.close()

    def __repr__(self) -> str:
        return f"Payload({len(encoding_of(self))} bytes, {len(self.resources)} resources)"


# A top-level ``bytes`` value this large is encoded by reference: its msgpack
# header is made here and the caller's (immutable) object itself is written to
# the socket, with no copy in this process.  A stream of large messages to a
# slower peer queues them until the socket takes them; copies would be fresh
# memory each -- measured on a 64 KiB stream, the page faults of those copies
# were most of the sender's cost.  Below this size a copy costs less than the
# extra pieces.
BY_REFERENCE: Final = 16 * 1024


_BIN8: Final = struct.Struct(">BB")
_BIN16: Final = struct.Struct(">BH")
_BIN32: Final = struct.Struct(">BI")


def _bin_header(size: int) -> bytes:
    """msgpack's header of a bin of ``size`` bytes, as msgspec makes it."""
    if size > 0xFFFF:
        return _BIN32.pack(0xC6, size)
    if size > 0xFF:
        return _BIN16.pack(0xC5, size)
    return _BIN8.pack(0xC4, size)


class SplicedPayload(Payload):
    """An encoding in two pieces, ``head`` then ``body``, with the large ``body``
    left where it is: a large ``bytes`` value by reference (``head`` is its msgpack
    header, the default), or a large encoding behind a control head (a call's,
    ``head`` given).  ``data`` joins them for the rare paths that need the encoding
    in one piece (a peer in this process, a port on the move); a frame for a
    remote peer is written from the pieces (:func:`encode_spliced`).

    A frame written from the pieces arrives in them too: the receiving side
    copies ``body`` once out of the bytes read, and a receiver that decodes it as
    ``bytes`` gets that copy itself (see :meth:`Codec.decode`).

    It is made without resources.  One gains a resource only where it is
    received in this process (a call's reply slot); a node sends such a payload
    as a whole frame, never in pieces.
    """

    __slots__ = ("body", "charge", "head")

    def __init__(self, body: bytes, head: bytes | None = None) -> None:
        self.head = _bin_header(len(body)) if head is None else head
        self.body = body
        self.resources = []
        # What a payload received in pieces (see LargeMessage) owes its connection.
        self.charge: Charge | None = None

    @property
    def data(self) -> bytes:  # type: ignore[override]  # computed from the pieces stored
        return _joined(self.head, self.body)


def encoding_of(payload: Payload) -> Data:
    """``payload.data``, for compiled code: there an attribute read skips the
    property a :class:`SplicedPayload` computes it with (mypyc reads the base
    class's slot, which a spliced payload never sets)."""
    if type(payload) is SplicedPayload:
        return _joined(payload.head, payload.body)
    return payload.data


def _joined(head: bytes, body: bytes) -> bytes:
    # A received call's request is left with an empty head once its call head is
    # taken off: the encoding is then the body itself.  (Compiled code joins
    # bytes by copying even when one side is empty.)
    return head + body if head else body


class Inbound:
    """One connection's share of this process: its limits and the bytes it has queued.

    Every payload that arrives over the connection is charged here when it is
    decoded from its frame and given back when the payload object goes away
    (received, forwarded or dropped -- reference counting makes that exact, on
    whichever thread it happens).  Only the connection's reader charges; givers
    append to a deque, which is safe from any thread without a lock.
    """

    __slots__ = ("_given", "_received", "_released", "max_pending", "max_ports")

    def __init__(self, limits: Limits) -> None:
        self.max_ports = limits.max_ports
        self.max_pending = limits.max_pending_bytes
        self._received = 0
        self._released = 0
        self._given: deque[int] = deque()

    def payload(self, data: Data, resources: list[Any]) -> Payload:
        return InboundPayload(data, resources, self)

    def pending(self) -> int:
        """Bytes charged and not yet given back (call on the reader's thread)."""
        given = self._given
        while given:
            self._released += given.popleft()
        return self._received - self._released


class Charge:
    """A share of a connection's :class:`Inbound`, charged while it lives: what a
    payload that cannot be an :class:`InboundPayload` (a spliced one) holds."""

    __slots__ = ("_inbound", "_size")

    def __init__(self, inbound: Inbound, size: int) -> None:
        self._inbound = inbound
        self._size = size
        inbound._received += size

    def __del__(self) -> None:
        self._inbound._given.append(self._size)


class InboundPayload(Payload):
    """A payload charged to its connection's :class:`Inbound` while it lives.

    Made by :meth:`Inbound.payload`, or directly by a per-message fast path.
    """

    __slots__ = ("_inbound", "_size")

    def __init__(self, data: Data, resources: list[Any], inbound: Inbound) -> None:
        # Payload.__init__'s work, inline: one of these is made per message received.
        self.data = data
        self.resources = resources
        self._inbound = inbound
        self._size = size = len(data)
        inbound._received += size

    def __del__(self) -> None:
        self._inbound._given.append(self._size)


class RunPayload:
    """The messages of a run (see MessageRun) that arrived in order: their
    encodings, in sequence, none carrying a resource.

    A handler that takes a run whole (``port_run``) keeps it as one object
    rather than a payload per message: the cost of a message is then little more
    than its decoding, and a receiver that lags holds one object per run for the
    garbage collector to walk, not several per message.
    """

    __slots__ = ("datas",)

    def __init__(self, datas: list[bytes]) -> None:
        self.datas = datas

    def payloads(self) -> list[Payload]:
        """The run as a payload per message, for a handler that needs them apart."""
        return [Payload(data, []) for data in self.datas]


class InboundRunPayload(RunPayload):
    """A run charged to its connection's :class:`Inbound` while it lives (its
    messages' bytes are given back together, when the run is released)."""

    __slots__ = ("_inbound", "_size")

    def __init__(self, datas: list[bytes], inbound: Inbound) -> None:
        self.datas = datas
        self._inbound = inbound
        self._size = size = sum(map(len, datas))
        inbound._received += size

    def payloads(self) -> list[Payload]:
        return [InboundPayload(data, [], self._inbound) for data in self.datas]

    def __del__(self) -> None:
        self._inbound._given.append(self._size)


class _RawResource:
    """Marks a resource that is already in its travelling form (a port, an fd),
    held by ``owner`` (an encoded Message's payload) until it is sent."""

    __slots__ = ("owner", "resource")

    def __init__(self, resource: Any, owner: Payload) -> None:
        self.resource = resource
        self.owner = owner


class _EncodeCtx:
    __slots__ = ("objs", "seen")

    def __init__(self) -> None:
        self.objs: list[object] = []
        self.seen: set[int] = set()

    def add(self, obj: object) -> int:
        if id(obj) in self.seen:
            raise PayloadError(
                f"the same {type(obj).__name__} appears twice in one message; "
                "a resource can be sent only once",
                expected="each endpoint or fd at most once",
                got=f"{type(obj).__name__} repeated",
            )
        self.seen.add(id(obj))
        self.objs.append(obj)
        return len(self.objs) - 1


class _DecodeCtx:
    __slots__ = ("made", "resources", "taken")

    def __init__(self, resources: list[Any]) -> None:
        self.resources = resources
        self.taken = [False] * len(resources)
        self.made: list[object] = []

    def take(self, index: int, want_fd: bool | None = None) -> Any:
        """Resource ``index``; ``want_fd``: it must be a descriptor (True), a port
        (False), or either (None).  Checked before it counts as taken, so a refused
        reference leaves the resource to the clean-up of untaken ones."""
        if not 0 <= index < len(self.resources):
            raise ValueError(
                f"resource reference {index} is out of range "
                f"(the message carries {len(self.resources)})"
            )
        if self.taken[index]:
            raise ValueError(f"resource {index} is referenced twice")
        res = self.resources[index]
        if want_fd is not None and isinstance(res, OwnedFd) is not want_fd:
            want, got = ("a descriptor", "a port") if want_fd else ("a port", "a descriptor")
            raise ValueError(f"resource {index} is {got} where {want} was expected")
        self.taken[index] = True
        return res


# Outside any decode the hooks see a context with no resources: a reference in a
# payload that carries none is then reported as out of range, like any other.
_NO_RESOURCES: Final = _DecodeCtx([])


class _State(threading.local):
    enc: _EncodeCtx | None = None
    dec: _DecodeCtx = _NO_RESOURCES


# Final, as are the frame codecs below: the compiled build then reads them with
# no lookup in the module's namespace (a few hundred instructions a call).
_state: Final = _State()


def _index_bytes(index: int) -> bytes:
    return index.to_bytes(4, "little")


def _enc_hook(obj: Any) -> Any:
    ctx = _state.enc
    if ctx is None:  # pragma: no cover - hooks run only inside Codec.encode
        raise TypeError("workmesh resources can only be encoded by a workmesh codec")
    kind = _kind_for(obj)
    if kind is not None or isinstance(obj, OwnedFd):
        code = kind.code if kind is not None else EXT_FD
        return msgspec.msgpack.Ext(code, _index_bytes(ctx.add(obj)))
    if isinstance(obj, _RawResource):
        return msgspec.msgpack.Ext(EXT_RAW, _index_bytes(ctx.add(obj)))
    if isinstance(obj, Message):
        return obj._encode_nested(ctx)
    if isinstance(obj, BaseException):
        err = obj if isinstance(obj, RemoteError) else RemoteError.from_exception(obj)
        return msgspec.msgpack.Ext(EXT_REMOTE_ERROR, _plain_encoder.encode(err.to_wire()))
    raise NotImplementedError(f"Encoding objects of type {type(obj).__qualname__} is unsupported")


def _ext_hook(code: int, data: memoryview) -> Any:
    ctx = _state.dec
    if code == EXT_REMOTE_ERROR:
        return RemoteError.from_wire(_plain_decoder.decode(data))
    if code == EXT_MESSAGE:
        start, count, inner = _nested_decoder.decode(data)
        nested = Payload(inner, [])
        ctx.made.append(nested)  # closed with the rest should the decode fail
        for i in range(start, start + count):
            nested.resources.append(_travelling(ctx.take(i)))
        return Message._from_payload(nested)
    if code == EXT_RAW:
        # Only ever a marker inside this process's encoder: never on the wire.
        raise ValueError("a raw resource reference cannot arrive in a message")
    index = int.from_bytes(data, "little")
    if code == EXT_FD:
        fd = ctx.take(index, want_fd=True)
        ctx.made.append(fd)
        return fd
    kind = _kinds_by_code.get(code)
    if kind is None:
        raise ValueError(f"unknown resource kind {code} in message")
    port = ctx.take(index, want_fd=False)
    try:
        obj = kind.make(port, None)
    except BaseException:
        port.close()
        raise
    ctx.made.append(obj)
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or repr(tp)


def _dec_hook(tp: Any, obj: Any) -> Any:
    origin = get_origin(tp) or tp
    if isinstance(origin, type) and isinstance(obj, origin):
        kind = _kinds_by_cls.get(origin)
        return kind.retype(obj, tp) if kind is not None else obj
    if origin is Message:
        # A value sent as itself where the receiver declared a type-erased Message:
        # keep it (decoded untyped) for the receiver to parse later.
        return Message(obj)
    raise TypeError(f"Expected `{_type_name(origin)}`, got `{_describe(obj)}`")


def _describe(obj: Any) -> str:
    if isinstance(obj, msgspec.msgpack.Ext):
        kind = _kinds_by_code.get(obj.code)
        return kind.cls.__qualname__ if kind is not None else f"ext {obj.code}"
    if isinstance(obj, OwnedFd):
        return "OwnedFd"
    return {dict: "object", list: "array", type(None): "null"}.get(type(obj), type(obj).__name__)


_plain_encoder: Final = msgspec.msgpack.Encoder()
_plain_decoder: Final = msgspec.msgpack.Decoder()
_nested_decoder: Final = msgspec.msgpack.Decoder(tuple[int, int, bytes])


class Codec:
    """Encoder and decoder for one declared type, built once and reused."""

    __slots__ = ("_bin_as_bytes", "_decoder", "_encoder", "_hooked", "type")

    def __init__(self, tp: Any) -> None:
        self.type = tp
        self._bin_as_bytes = _bin_decodes_as_bytes(tp)
        self._encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
        self._hooked: set[type] = set()  # types whose values have needed _enc_hook
        try:
            self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(
                Any if tp is object else tp, dec_hook=_dec_hook, ext_hook=_ext_hook
            )
        except (TypeError, ValueError) as exc:
            raise PayloadError(
                f"type {_type_name(tp)} cannot cross a process boundary: {exc}",
                expected="a type msgspec can decode (Struct, dataclass, enum, builtins, ...)",
                got=_type_name(tp),
            ) from exc

    def encode_plain(self, value: Any) -> bytes | None:
        """``value``'s encoding when it needs no hook and is not sent by reference
        (the common case of a stream); None when :meth:`encode` must do it.

        Most values hold no endpoint, descriptor or error, and then need no hook:
        encoded without the hook's per-message context (a thread-local swap and a
        collector), 0.54 -> 0.27 us for a small Struct.  A plain encoder fails only
        with TypeError on what it cannot encode, before anything has moved; the type
        then takes the full path from here on.  Any other error is left to the
        full path, which raises it worded as usual.
        """
        cls = type(value)
        if cls is Message or cls in self._hooked or (cls is bytes and len(value) >= BY_REFERENCE):
            return None
        try:
            return _plain_encoder.encode(value)
        except TypeError:
            self._hooked.add(cls)
        except (ValueError, OverflowError, NotImplementedError, msgspec.EncodeError):
            pass
        return None

    def encode(self, value: Any) -> Payload:
        if type(value) is Message:
            # Type-erased at the top: its own encoding is the message (so a generic
            # sender can feed a typed receiver).
            return value.payload()
        if type(value) is bytes and len(value) >= BY_REFERENCE:
            return SplicedPayload(value)  # msgpack's encoding of it, without the copy
        data = self.encode_plain(value)
        if data is not None:
            return Payload(data, [])
        outer, _state.enc = _state.enc, _EncodeCtx()
        ctx = _state.enc
        try:
            data = self._encoder.encode(value)
        except PayloadError:
            raise
        except (
            TypeError,
            ValueError,
            OverflowError,
            NotImplementedError,
            msgspec.EncodeError,
        ) as exc:
            raise PayloadError(
                f"cannot encode {type(value).__qualname__} as {_type_name(self.type)}: {exc}",
                expected=_type_name(self.type),
                got=type(value).__qualname__,
            ) from exc
        finally:
            _state.enc = outer
        if not ctx.objs:
            return Payload(data, [])
        for obj in ctx.objs:
            kind = _kind_for(obj)
            if kind is not None and kind.check is not None:
                kind.check(obj)
        return Payload(data, [_take(obj) for obj in ctx.objs])

    def decode_data(self, data: Data) -> Any:
        """Decode an encoding that carries no resource (a message of a run)."""
        if _state.dec is _NO_RESOURCES and self.type is not Message:
            try:
                return self._decoder.decode(data)
            except (msgspec.DecodeError, ValueError, TypeError) as exc:
                raise _decode_error(exc, self.type) from exc
        return self.decode(Payload(data, []))

    def decode(self, payload: Payload) -> Any:
        if self.type is Message:
            if type(payload) is SplicedPayload and not payload.resources:
                # Kept in its pieces, not joined.  It is received now: it no longer
                # counts against its connection, however long the Message is kept.
                payload.charge = None
                return Message._from_payload(payload)
            resources = [_travelling(res) for res in payload.take_resources()]
            return Message._from_payload(Payload(encoding_of(payload), resources))
        if not payload.resources and _state.dec is _NO_RESOURCES:
            # Most messages carry no endpoint or fd: no context to set up or check
            # (about a third of the cost of receiving a small message).
            if (
                type(payload) is SplicedPayload
                and self._bin_as_bytes
                and payload.head == _bin_header(len(payload.body))
            ):
                # A large bytes value in its pieces: the value is the body, already
                # a bytes object of its own -- decoding would copy it once more.
                return payload.body
            try:
                return self._decoder.decode(encoding_of(payload))
            except (msgspec.DecodeError, ValueError, TypeError) as exc:
                raise _decode_error(exc, self.type) from exc
        resources = payload.take_resources()
        ctx = _DecodeCtx(resources)
        outer, _state.dec = _state.dec, ctx
        try:
            value = self._decoder.decode(encoding_of(payload))
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            _close_all(ctx.made)
            _close_all(res for res, taken in zip(resources, ctx.taken, strict=True) if not taken)
            raise _decode_error(exc, self.type) from exc
        finally:
            _state.dec = outer
        if not all(ctx.taken):
            # Resources nobody refers to (say, fields this version does not know)
            # must not leak.
            _close_all(res for res, taken in zip(resources, ctx.taken, strict=True) if not taken)
        return value


def _bin_decodes_as_bytes(tp: Any) -> bool:
    """Whether decoding a msgpack bin as ``tp`` gives exactly its bytes: no other
    type for it to become and no constraint to check (``Annotated`` bytes has one)."""
    if tp is bytes or tp is object or tp is Any:
        return True
    return get_origin(tp) in (Union, UnionType) and bytes in get_args(tp)


def _travelling(resource: Any) -> Any:
    """A received resource in a form that can be sent on: a call's reply slot (a
    resource of the channel layer, see ``_channel._reply``) becomes a port."""
    to_port = getattr(resource, "to_port", None)
    return to_port() if to_port is not None else resource


def _take(obj: object) -> Resource:
    if isinstance(obj, _RawResource):
        obj.owner.resources = []  # they travel now: the Message no longer owns them
        return cast(Resource, obj.resource)
    if isinstance(obj, OwnedFd):
        return OwnedFd(obj.detach())
    kind = _kind_for(obj)
    assert kind is not None
    return kind.take(obj)


def _close_all(objs: Any) -> None:
    for obj in objs:
        if isinstance(obj, Payload):
            obj.discard()
            continue
        close = getattr(obj, "close", None)
        if close is not None:
            close()


_EXPECTED_GOT = re.compile(r"Expected `(?P<expected>[^`]*)`, got `(?P<got>[^`]*)`")


def _decode_error(exc: BaseException, tp: Any) -> PayloadError:
    text = str(exc)
    path = None
    if " - at `" in text:
        text, _, rest = text.partition(" - at `")
        path = rest.rstrip("`")
    where = f" - at `{path}`" if path else ""
    parts = _EXPECTED_GOT.search(text)
    return PayloadError(
        f"cannot decode message as {_type_name(tp)}: {text}{where}",
        expected=parts["expected"] if parts else _type_name(tp),
        got=parts["got"] if parts else text,
        path=path,
    )


_codecs: dict[Any, Codec] = {}
_codecs_lock = threading.Lock()


def codec_for(tp: Any) -> Codec:
    """The shared codec of a type (built on first use)."""
    codec = _codecs.get(tp)
    if codec is None:
        with _codecs_lock:
            codec = _codecs.get(tp)
            if codec is None:
                codec = _codecs[tp] = Codec(tp)
    return codec


class Message:
    """A type-erased message: a value, or its encoded form, to be typed later.

    Within one process a Message keeps the original object (no encoding);
    ``parse(T)`` returns it as is when it already is a ``T``.  Otherwise -- or
    after it crossed a process -- ``parse`` decodes it as ``T``.  A message that
    carries resources can be parsed once (the resources move into the result).
    """

    __slots__ = ("_payload", "_value")

    _NOTHING: Final = object()

    def __init__(self, value: Any) -> None:
        self._value: Any = value
        self._payload: Payload | None = None

    @classmethod
    def _from_payload(cls, payload: Payload) -> Message:
        msg = cls(Message._NOTHING)  # (not cls.__new__: the compiled class has none)
        msg._payload = payload
        return msg

    def parse(self, tp: type[T]) -> T:
        if self._value is not Message._NOTHING:
            value = self._value
            if tp is object or tp is Any or (isinstance(tp, type) and type(value) is tp):
                return cast(T, value)
            self._payload = codec_for(object).encode(value)
            self._value = Message._NOTHING
        payload = self._payload
        assert payload is not None
        if not payload.resources and type(payload) is not SplicedPayload and payload.data == b"":
            raise PayloadError("this Message carried resources and was already parsed")
        if payload.resources:
            # Resources move into the parsed value, so this form cannot be parsed again.
            self._payload = Payload(b"")
        return cast(T, codec_for(tp).decode(payload))

    def payload(self) -> Payload:
        """Encode (if needed) and give up the encoded form."""
        if self._value is not Message._NOTHING:
            self._payload = codec_for(object).encode(self._value)
            self._value = Message._NOTHING
        payload, self._payload = self._payload, Payload(b"")
        assert payload is not None
        return payload

    def __del__(self) -> None:
        # Dropped without being parsed or sent: close the endpoints and descriptors
        # it carried, as a dropped message does.
        payload = self._payload
        if payload is not None and payload.resources:
            payload.discard()

    def _encode_nested(self, ctx: _EncodeCtx) -> msgspec.msgpack.Ext:
        # The nested value's resource references are numbered from 0 within its own
        # slice of the side list, so it can be decoded later on its own.
        start = len(ctx.objs)
        if self._value is not Message._NOTHING:
            inner = _EncodeCtx()
            outer, _state.enc = _state.enc, inner
            try:
                data: Data = codec_for(object)._encoder.encode(self._value)
            finally:
                _state.enc = outer
            for obj in inner.objs:
                ctx.add(obj)
        else:
            assert self._payload is not None
            data = encoding_of(self._payload)
            for res in self._payload.resources:
                ctx.add(_RawResource(res, self._payload))
        count = len(ctx.objs) - start
        return msgspec.msgpack.Ext(EXT_MESSAGE, _plain_encoder.encode((start, count, data)))

    def __repr__(self) -> str:
        if self._value is not Message._NOTHING:
            return f"Message({self._value!r})"
        return f"Message(<encoded {self._payload!r}>)"


def message_frame(
    target: bytes,
    seq: int,
    close: bool,
    data: Data | None,
    resources: list[PortRecord | FdRecord] | None = None,
) -> MessageFrame:
    """A message frame to encode; ``data`` may be bytes (the encoder takes any bytes-like)."""
    records = resources if resources is not None else []
    return MessageFrame(target, seq, close, cast("memoryview | None", data), records)


_frame_encoder: Final = msgspec.msgpack.Encoder()
_frame_decoder: Final[msgspec.msgpack.Decoder[Frame]] = msgspec.msgpack.Decoder(Frame)


# The encoder's own method: no Python frame of ours per frame encoded.
encode_frame: Callable[[Frame], bytes] = _frame_encoder.encode


# What a node queues for a link: an encoded frame, or a message frame in three
# pieces -- before, the caller's bytes, after -- so a large value is not copied
# (see BY_REFERENCE).  ``frame_bytes`` joins the pieces.
FrameData = bytes | tuple[bytes, bytes, bytes]

_NO_DATA_NO_RESOURCES: Final = b"\xc4\x00\x90"  # an empty bin, then an empty array


def encode_spliced(target: bytes, seq: int, close: bool, payload: SplicedPayload) -> FrameData:
    """The message frame carrying ``payload``, its body left in place (three pieces)."""
    return _spliced_frame(target, seq, close, payload.head, payload.body)


def _spliced_frame(target: bytes, seq: int, close: bool, head: bytes, body: bytes) -> FrameData:
    """A message frame with no resources whose data is ``head + body``, as three
    pieces: everything up to ``body``, ``body`` itself (not copied), the rest."""
    empty = encode_frame(message_frame(target, seq, close, b""))
    assert empty.endswith(_NO_DATA_NO_RESOURCES)
    size = len(head) + len(body)
    return (empty[:-3] + _bin_header(size) + head, body, b"\x90")


class MessageRun:
    """Messages to one port that wait together in a link's outbox, merged.

    A node sending plain messages faster than the transport takes them appends
    each one to the run at the end of the outbox (when it continues that run's
    sequence) instead of encoding a frame per message.  The transport gets the
    run as one frame (:meth:`frame`): a :class:`MessageRunFrame`, or a plain
    message frame if it holds one message.  Frames on a link keep their order,
    and a run stands for consecutive frames, so nothing changes for the
    receiver except how many frames it decodes.  Measured on a small one-way
    stream to a child: the sender's loop 1.6 -> 1.1 us per message, the child's
    2.5 -> 1.5 us (a frame's own costs -- copy, decode, port lookup -- are paid
    once per run).
    """

    __slots__ = ("datas", "next_seq", "seq", "size", "target")

    def __init__(self, target: bytes, seq: int, data: Data) -> None:
        self.target = target
        self.seq = seq
        self.next_seq = seq + 1
        self.datas: list[Data] = [data]
        self.size = RUN_HEAD + RUN_ITEM + len(data)

    def extend(self, seq: int, data: Data, limit: int) -> bool:
        """Append message ``seq`` if it continues the run and the frame stays within
        ``limit`` bytes; False (nothing done) otherwise."""
        size = self.size + RUN_ITEM + len(data)
        if seq != self.next_seq or size > limit:
            return False
        self.datas.append(data)
        self.size = size
        self.next_seq = seq + 1
        return True

    def frame(self) -> FrameData:
        datas = self.datas
        if len(datas) == 1:
            data = datas[0]
            if type(data) is bytes and len(data) >= BY_REFERENCE:
                # A large message alone in its run (a run holds at most RUN_BYTES)
                # is written from the sender's own bytes, as a large bytes value is.
                return _spliced_frame(self.target, self.seq, False, b"", data)
            return encode_frame(message_frame(self.target, self.seq, False, data))
        return encode_frame(MessageRunFrame(self.target, self.seq, cast("list[bytes]", datas)))


def frame_bytes(data: FrameData | MessageRun) -> bytes:
    """A queued frame in one piece."""
    if isinstance(data, MessageRun):
        data = data.frame()
    return b"".join(data) if isinstance(data, tuple) else data


def decode_frame(data: bytes | bytearray | memoryview) -> Frame:
    """Decode one frame; malformed bytes raise PayloadError saying what and where."""
    try:
        return _frame_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _decode_error(exc, Frame) from exc


# --------------------------------------------------------------------------------------
# Stream framing
#
# On a byte stream every frame is preceded by an 8-byte header: the frame's length
# (u32 LE), how many descriptors belong to it (u16 LE) and where a message's
# large body starts (u16 LE; 0: the frame is not in pieces).  The descriptors
# themselves ride as SCM_RIGHTS ancillary data on the send that carries the
# frame's first byte, so they have always arrived by the time the frame is whole.
#
# The split is set for a frame written in pieces (FrameData's tuple): the offset
# of its middle piece.  A message's data then ends with that body -- a large
# bytes value, or the encoding behind a call's head -- and the reader copies the
# body out of the bytes read as an object of its own (see LargeMessage), the one
# copy a receiver of a large bytes value then pays.

PREFIX: Final = struct.Struct("<IHH")
PREFIX_LEN: Final = PREFIX.size


def frame_prefix(length: int, nfds: int = 0, split: int = 0) -> bytes:
    return PREFIX.pack(length, nfds, split if split <= 0xFFFF else 0)


class FrameTooLarge(PayloadError):
    pass


# A frame read whole is taken apart (see LargeMessage) from this size: below it,
# the work of taking it apart costs more than the copy it saves.  Measured per
# frame, reading and decoding a bytes value (cached data, this machine): pure
# 16 KiB 4.7 us against 3.8 copied whole, 32 KiB 5.3 against 4.9, 64 KiB 6.6
# against 7.4; compiled 4.0 against 3.5, 4.8 against 5.4, 6.8 against 7.9.  A
# frame finished in its own buffer is always taken apart: that buffer is then
# reused, which saves more (see SPARE_MAX).
TAKE_APART_FROM: Final = 48 * 1024

# A message frame read whole, with a split in its header, taken apart where it
# was read: the frame's fields (its data None) and its data as a spliced payload,
# whose body is one copy out of the bytes read -- the only copy a receiver of a
# bytes value pays.  A tuple: one of these is made per large message received,
# and in the pure build a class of our own costs a Python call more.
LargeMessage = tuple[MessageFrame, SplicedPayload]


def _take_apart(view: memoryview, split: int) -> FrameBytes | LargeMessage:
    """A whole frame of the bytes read (of DIRECT_READ bytes or more), ``split``
    given: a :data:`LargeMessage` when it is a message frame with no resource and
    the split falls in its data, else the frame's bytes (a copy), for the node to
    decode and judge."""
    # A message frame ends with its data's bytes, then its (empty) resources.
    size = len(view)
    if view[-1] != _EMPTY_ARRAY or view[0] != _MESSAGE_FRAME_HEAD or view[1] != _MESSAGE_TAG:
        return bytes(view)
    try:
        frame = _frame_decoder.decode(view)
    except msgspec.DecodeError:
        return bytes(view)
    if not isinstance(frame, MessageFrame) or frame.data is None or frame.resources:
        return bytes(view)
    start = size - 1 - len(frame.data)  # where the data starts in the frame
    if not start <= split <= size - 1:
        return bytes(view)
    fields = MessageFrame(frame.target, frame.seq, frame.close, None)
    return (fields, SplicedPayload(bytes(view[split : size - 1]), bytes(view[start:split])))


_EMPTY_ARRAY: Final = 0x90
_MESSAGE_FRAME_HEAD: Final = 0x96  # an array of a message frame's six fields
_MESSAGE_TAG: Final = 1  # MessageFrame's tag (the first of them)


# A frame at least this large that a read ends inside is finished in a buffer of
# its own, which the transport reads the rest straight into (:meth:`FrameDecoder.room`):
# no copy through the read buffer and no re-buffering of the reads that follow
# (measured on a 64 KiB stream: 1-2 us of the receiving loop's ~15 per message).
# Up to DIRECT_READ_MAX only, so a header alone cannot make this side allocate
# much more than a peer has sent.
DIRECT_READ: Final = 32 * 1024
DIRECT_READ_MAX: Final = 16 * 1024 * 1024
# A large frame written in pieces and finished in its own buffer is taken apart
# there too (see LargeMessage), which leaves the buffer unused: one of up to this
# size is kept for the next frame of its size -- a stream of equal messages then
# allocates and zeroes none (measured on a 64 KiB stream's child: the fresh
# buffer was 3.5 % of its CPU).  Up to the size of a connection's read buffer,
# so what an idle connection holds at most doubles.
SPARE_MAX: Final = 256 * 1024

FrameBytes = bytes | bytearray  # a whole frame, as the decoder returns it
ReadFrame = FrameBytes | LargeMessage  # what the decoder returns for a frame


def _copy_into(buffer: bytearray, at: int, data: memoryview) -> None:
    """Copy ``data`` into ``buffer`` at ``at``, once.

    Through a view of the buffer: assigning a memoryview to a bytearray's slice
    copies it into a temporary bytearray first (CPython), which was 4 % of the
    receiving process's CPU in a 64 KiB stream.
    """
    with memoryview(buffer) as into:
        into[at : at + len(data)] = data


class FrameDecoder:
    """Splits a byte stream of framed frames, incrementally (sans-I/O).

    ``feed(data)`` returns the complete frames found so far as ``(frame, nfds)``; a
    partial frame waits for more data.  A length above ``max_frame`` or a descriptor
    count above ``max_fds`` raises :class:`FrameTooLarge` before anything of that
    frame is buffered: the stream is then unusable and must be cut.  While a large
    frame is incomplete, :meth:`room` offers the buffer its rest belongs in; a
    reader that fills part of it reports that with :meth:`filled`.
    """

    __slots__ = (
        "_big",
        "_big_fds",
        "_big_fill",
        "_big_split",
        "_buf",
        "_spare",
        "failed",
        "max_fds",
        "max_frame",
    )

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_fds: int = DEFAULT_MAX_FDS) -> None:
        self._buf = bytearray()
        self._big: bytearray | None = None  # a large frame being completed in place
        self._big_fill = 0
        self._big_fds = 0
        self._big_split = 0
        # The buffer of the last large frame taken apart (nothing refers to it):
        # the next one of its size is read into it, not into a fresh, zeroed one.
        self._spare: bytearray | None = None
        self.max_frame = max_frame
        self.max_fds = max_fds
        # Set when a bad header follows good frames in one read: those frames are
        # returned (a peer's last good words -- say, "ready" -- still count), and
        # the error is raised by the next feed.  Callers check it after delivering.
        self.failed: FrameTooLarge | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held here (0: the stream is between frames)."""
        big = PREFIX_LEN + self._big_fill if self._big is not None else 0
        return len(self._buf) + big

    def room(self) -> memoryview | None:
        """The unfilled rest of a large frame, to read straight into; None if none."""
        big = self._big
        return None if big is None else memoryview(big)[self._big_fill :]

    def filled(self, count: int) -> list[tuple[ReadFrame, int]]:
        """``count`` bytes were read into :meth:`room`: the frame, once it is whole."""
        big = self._big
        assert big is not None
        assert 0 <= count <= len(big) - self._big_fill
        self._big_fill += count
        if self._big_fill < len(big):
            return []
        self._big = None
        if self._big_split and not self._big_fds:
            # Taken apart, the frame is copies of its own: its buffer is free again.
            frame = _take_apart(memoryview(big), self._big_split)
            if len(big) <= SPARE_MAX:
                self._spare = big
            return [(frame, 0)]
        return [(big, self._big_fds)]

    def _new_big(self, length: int) -> bytearray:
        spare = self._spare
        if spare is not None and len(spare) == length:
            self._spare = None
            return spare
        return bytearray(length)

    def feed(self, data: bytes | memoryview) -> list[tuple[ReadFrame, int]]:
        # Each frame is copied once, straight out of the bytes read: the common
        # case (nothing left over from the last read) never copies the read into
        # the buffer first, and slicing a memoryview copies nothing by itself.
        if self.failed is not None:
            raise self.failed
        frames: list[tuple[ReadFrame, int]] = []
        if self._big is not None:  # fed rather than read into room(): copy it there
            view = memoryview(data)
            take = min(len(self._big) - self._big_fill, len(view))
            _copy_into(self._big, self._big_fill, view[:take])
            frames = self.filled(take)
            if not frames:
                return frames
            data = view[take:]
        buf = self._buf
        if buf:
            buf += data
            src = memoryview(buf)
        else:
            src = memoryview(data)
        pos = 0
        end_of_data = len(src)
        try:
            while end_of_data - pos >= PREFIX_LEN:
                length, nfds, split = PREFIX.unpack_from(src, pos)
                if length > self.max_frame or nfds > self.max_fds:
                    try:
                        self._check(length, nfds, pos)
                    except FrameTooLarge as exc:
                        if not frames:
                            raise
                        self.failed = exc
                        break
                end = pos + PREFIX_LEN + length
                if end_of_data < end:
                    if DIRECT_READ <= length <= DIRECT_READ_MAX:
                        got = end_of_data - pos - PREFIX_LEN
                        big = self._new_big(length)
                        _copy_into(big, 0, src[pos + PREFIX_LEN : end_of_data])
                        self._big, self._big_fill, self._big_fds = big, got, nfds
                        self._big_split = split
                        pos = end_of_data
                    break
                # Each frame a copy of its own (no view of src survives: its
                # buffer is reused); one written in pieces is taken apart here.
                frames.append(
                    (
                        _take_apart(src[pos + PREFIX_LEN : end], split)
                        if split and length >= TAKE_APART_FROM and not nfds
                        else bytes(src[pos + PREFIX_LEN : end]),
                        nfds,
                    )
                )
                pos = end
        finally:
            src.release()  # a bytearray cannot be resized while viewed
        if self.failed is not None:
            buf.clear()  # the stream is unusable: keep nothing of it
        elif buf:
            del buf[:pos]
        elif pos < end_of_data:
            buf += data[pos:]
        return frames

    def _check(self, length: int, nfds: int, pos: int) -> None:
        if length > self.max_frame:
            raise FrameTooLarge(
                f"frame of {length} bytes exceeds the limit of {self.max_frame}",
                expected=f"at most {self.max_frame} bytes",
                got=f"{length} bytes",
                path=f"stream offset +{pos}",
            )
        if nfds > self.max_fds:
            raise FrameTooLarge(
                f"frame carries {nfds} descriptors, above the limit of {self.max_fds}",
                expected=f"at most {self.max_fds} descriptors",
                got=f"{nfds} descriptors",
                path=f"stream offset +{pos}",
            )
