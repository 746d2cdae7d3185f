"""The codec: payloads with resources in a side list, Message, frames and framing."""

from __future__ import annotations

import os
from typing import Annotated, Any, Optional

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workmesh as wm
from workmesh._frames import (
    MAX_RUN_MESSAGES,
    RUN_BYTES,
    MessageFrame,
    MessageRunFrame,
    PortRecord,
)
from workmesh._wire import (
    BY_REFERENCE,
    DIRECT_READ,
    DIRECT_READ_MAX,
    SPARE_MAX,
    TAKE_APART_FROM,
    Codec,
    FrameDecoder,
    FrameTooLarge,
    MessageRun,
    Payload,
    SplicedPayload,
    codec_for,
    decode_frame,
    encode_frame,
    encode_spliced,
    encoding_of,
    frame_bytes,
    frame_prefix,
    message_frame,
)

pytestmark = pytest.mark.timeout(60)


class Point(msgspec.Struct):
    x: int
    y: int


class Envelope(msgspec.Struct):
    name: str
    reply: wm.Sender[int]
    extra: list[wm.Receiver[str]] = []
    fd: wm.OwnedFd | None = None
    err: wm.RemoteError | None = None


def roundtrip(value: Any, tp: Any = object) -> Any:
    return codec_for(tp).decode(codec_for(tp).encode(value))


# ------------------------------------------------------------------ plain values


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_untyped_values_roundtrip(value: Any) -> None:
    assert roundtrip(value) == value


def test_typed_struct_roundtrip() -> None:
    assert roundtrip(Point(1, 2), Point) == Point(1, 2)


def test_decode_error_says_expected_got_and_where() -> None:
    payload = codec_for(object).encode({"x": 1, "y": "two"})
    with pytest.raises(wm.PayloadError) as info:
        codec_for(Point).decode(payload)
    err = info.value
    assert "Expected `int`, got `str`" in str(err)
    assert err.path == "$.y"
    assert (err.expected, err.got) == ("int", "str")


def test_unencodable_value_is_payload_error() -> None:
    with pytest.raises(wm.PayloadError) as info:
        codec_for(object).encode({"f": object()})
    assert "cannot encode dict" in str(info.value)
    assert "object" in str(info.value)


def test_int_out_of_range_is_payload_error() -> None:
    with pytest.raises(wm.PayloadError, match="can't serialize ints"):
        codec_for(object).encode([2**64])


def test_type_that_cannot_be_decoded_is_payload_error() -> None:
    # An ambiguous union: msgspec cannot tell the two object-like members apart.
    with pytest.raises(wm.PayloadError, match="cannot cross a process boundary"):
        codec_for(dict[str, int] | Point)


def test_invalid_constraint_is_payload_error() -> None:
    from typing import Annotated  # noqa: PLC0415 - local to this case

    with pytest.raises(wm.PayloadError, match="cannot cross a process boundary"):
        codec_for(Annotated[int, msgspec.Meta(lt=2**64)])


def test_plain_class_fails_at_encode() -> None:
    class NotWire:
        pass

    with pytest.raises(wm.PayloadError, match="NotWire is unsupported"):
        codec_for(NotWire).encode(NotWire())


# ------------------------------------------------------------------ endpoints and fds


def test_struct_with_endpoints_roundtrip_and_still_works() -> None:
    tx, rx = wm.channel(int)
    extra_tx, extra_rx = wm.channel(str)
    env = roundtrip(Envelope("e", tx, [extra_rx]), Envelope)
    assert isinstance(env.reply, wm.Sender)
    assert isinstance(env.extra[0], wm.Receiver)
    env.reply.send(7)
    assert rx.try_recv() == 7
    extra_tx.send("hello")
    assert env.extra[0].recv_blocking(timeout=5) == "hello"


def test_values_of_one_type_with_and_without_endpoints_all_encode() -> None:
    """Plain values take a short path with no hook; a value of the same type that
    holds an endpoint still has it collected and moved, before and after."""
    codec = Codec(dict[str, Any])
    plain = codec.encode({"n": 1})
    assert plain.resources == [] and codec.decode(plain) == {"n": 1}
    tx, rx = wm.channel(int)
    carrying = codec.encode({"n": 2, "reply": tx})
    assert len(carrying.resources) == 1
    assert tx.is_closed()  # moved into the payload: this end is used up
    moved = codec.decode(carrying)["reply"]
    moved.send(5)
    assert rx.recv_blocking(timeout=5) == 5
    again = codec.encode({"n": 3})
    assert again.resources == [] and codec.decode(again) == {"n": 3}


def test_encode_plain_gives_the_encoding_only_where_no_hook_or_reference_is_needed() -> None:
    codec = Codec(object)
    for value in ({"n": 1}, Point(1, 2), [1.5, "x"], b"y" * (BY_REFERENCE - 1)):
        assert codec.encode_plain(value) == codec.encode(value).data
    big = b"z" * BY_REFERENCE
    assert codec.encode_plain(big) is None  # sent by reference: encode() splices it
    assert codec.encode_plain(wm.Message(3)) is None
    assert codec.encode_plain(2**70) is None  # encode() says why, as usual
    with pytest.raises(wm.PayloadError):
        codec.encode(2**70)
    tx, _rx = wm.channel(int)
    carrying = {"reply": tx}
    assert codec.encode_plain(carrying) is None  # an endpoint: the hook's path...
    assert codec.encode_plain({"n": 1}) is None  # ...from then on, for the whole type
    assert not tx.is_closed()  # nothing was taken by the refused attempts
    assert len(codec.encode(carrying).resources) == 1


def test_a_plain_value_that_cannot_encode_is_the_usual_payload_error() -> None:
    codec = Codec(list[int])
    with pytest.raises(wm.PayloadError, match="cannot encode list as list: can't serialize ints"):
        codec.encode([2**64])
    with pytest.raises(wm.PayloadError, match="cannot encode list as list: can't serialize ints"):
        codec.encode([2**64])  # not remembered as needing the hook: the same answer
    assert codec.encode([1]).resources == []


def test_untyped_decode_gives_endpoints() -> None:
    tx, rx = wm.channel()
    out = roundtrip({"tx": tx})
    assert isinstance(out["tx"], wm.Sender)
    out["tx"].send({"k": 1})
    assert rx.try_recv() == {"k": 1}


def test_failed_encode_leaves_endpoints_usable() -> None:
    tx, rx = wm.channel(int)
    with pytest.raises(wm.PayloadError):
        codec_for(object).encode([tx, object()])
    tx.send(3)
    assert rx.try_recv() == 3


def test_same_endpoint_twice_is_rejected() -> None:
    tx, _rx = wm.channel()
    with pytest.raises(wm.PayloadError, match="appears twice"):
        codec_for(object).encode([tx, tx])
    assert not tx.is_closed()


def test_wrong_endpoint_kind_in_typed_field() -> None:
    _tx, rx = wm.channel(int)
    payload = codec_for(object).encode({"name": "n", "reply": rx})
    with pytest.raises(wm.PayloadError) as info:
        codec_for(Envelope).decode(payload)
    assert "Expected `Sender`, got `Receiver`" in str(info.value)
    assert info.value.path == "$.reply"


def test_fd_roundtrip_moves_ownership() -> None:
    r, w = os.pipe()
    owned = wm.OwnedFd(w)
    tx, _rx = wm.channel(int)
    payload = codec_for(Envelope).encode(Envelope("f", tx, fd=owned))
    assert owned.closed, "encoding moves the descriptor out of the original"
    env = codec_for(Envelope).decode(payload)
    assert isinstance(env.fd, wm.OwnedFd)
    os.write(env.fd.fileno(), b"x")
    env.fd.close()
    assert os.read(r, 1) == b"x"
    os.close(r)


def test_resources_of_undecodable_message_are_closed() -> None:
    r, w = os.pipe()
    payload = codec_for(object).encode({"fd": wm.OwnedFd(w), "x": "not an int"})
    with pytest.raises(wm.PayloadError):
        codec_for(dict[str, int]).decode(payload)
    assert os.read(r, 1) == b"", "the write end must have been closed"
    os.close(r)


def test_unreferenced_resources_are_closed() -> None:
    r, w = os.pipe()
    payload = Payload(codec_for(object).encode(5).data, [wm.OwnedFd(w)])
    assert codec_for(int).decode(payload) == 5
    assert os.read(r, 1) == b""
    os.close(r)


def test_out_of_range_resource_reference() -> None:
    tx, _rx = wm.channel()
    payload = codec_for(object).encode([tx])
    payload.resources[0].close()
    payload.resources = []
    with pytest.raises(wm.PayloadError, match="out of range"):
        codec_for(object).decode(payload)


def test_remote_error_inside_payload() -> None:
    try:
        raise ValueError("bad")
    except ValueError as exc:
        err = wm.RemoteError.from_exception(exc)
    tx, _rx = wm.channel(int)
    env = roundtrip(Envelope("x", tx, err=err), Envelope)
    assert env.err == err
    assert roundtrip([KeyError("k")])[0].chain[0].type_name == "KeyError"


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.integers(-(2**63), 2**63) | st.text(max_size=5) | st.just("<endpoint>"),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_nested_payloads_with_endpoints_roundtrip(shape: Any) -> None:
    """Every endpoint inside any nesting comes back as an endpoint of its channel."""
    receivers: list[wm.Receiver[Any]] = []

    def build(node: Any) -> Any:
        if node == "<endpoint>":
            tx, rx = wm.channel()
            receivers.append(rx)
            return tx
        if isinstance(node, list):
            return [build(n) for n in node]
        if isinstance(node, dict):
            return {k: build(v) for k, v in node.items()}
        return node

    senders: list[wm.Sender[Any]] = []

    def check(orig: Any, got: Any) -> None:
        if orig == "<endpoint>":
            assert isinstance(got, wm.Sender)
            senders.append(got)
        elif isinstance(orig, list):
            assert len(got) == len(orig)
            for o, g in zip(orig, got, strict=True):
                check(o, g)
        elif isinstance(orig, dict):
            assert got.keys() == orig.keys()
            for k in orig:
                check(orig[k], got[k])
        else:
            assert got == orig

    check(shape, roundtrip(build(shape)))
    for i, tx in enumerate(senders):
        tx.send(i)
    assert [rx.try_recv() for rx in receivers] == list(range(len(receivers)))


# ------------------------------------------------------------------ Message


def test_message_in_process_returns_same_object() -> None:
    obj = Point(1, 2)
    assert wm.Message(obj).parse(Point) is obj


def test_message_parse_as_other_type() -> None:
    assert wm.Message({"x": 1, "y": 2}).parse(Point) == Point(1, 2)


def test_message_parse_mismatch() -> None:
    with pytest.raises(wm.PayloadError, match="Expected `int`"):
        wm.Message({"x": "no", "y": 2}).parse(Point)


def test_message_with_endpoint_crosses_and_parses_once() -> None:
    tx, rx = wm.channel(int)
    msg = roundtrip({"m": wm.Message({"reply": tx})})["m"]
    assert isinstance(msg, wm.Message)
    parsed = msg.parse(dict[str, wm.Sender[int]])
    parsed["reply"].send(9)
    assert rx.try_recv() == 9
    with pytest.raises(wm.PayloadError, match="already parsed"):
        msg.parse(dict[str, wm.Sender[int]])


# ------------------------------------------------------------------ frames and framing


def test_frame_roundtrip() -> None:
    frame = MessageFrame(b"\x01" * 16, 5, True, b"data")
    assert decode_frame(encode_frame(frame)) == frame


@pytest.mark.parametrize(
    "size",
    [BY_REFERENCE, 0xFFFF, 0x10000, 0x10001, 3 << 20],  # bin 16 and bin 32 headers
)
@pytest.mark.parametrize("close", [False, True])
def test_a_large_bytes_value_is_framed_by_reference_exactly_as_a_copy_would_be(
    size: int, close: bool
) -> None:
    value = os.urandom(size)
    payload = Codec(bytes).encode(value)
    assert isinstance(payload, SplicedPayload) and payload.body is value
    assert payload.data == msgspec.msgpack.encode(value)
    target = os.urandom(16)
    pieces = encode_spliced(target, 9, close, payload)
    assert pieces[1] is value
    whole = frame_bytes(pieces)
    assert whole == encode_frame(MessageFrame(target, 9, close, payload.data))
    frame = decode_frame(whole)
    assert isinstance(frame, MessageFrame) and frame.data is not None
    assert Codec(bytes).decode(Payload(frame.data)) == value


def test_a_run_of_one_message_is_a_plain_message_frame() -> None:
    target = os.urandom(16)
    run = MessageRun(target, 7, b"only")
    assert run.frame() == encode_frame(message_frame(target, 7, False, b"only"))


@pytest.mark.parametrize("size", [BY_REFERENCE, 0x10000, 3 << 20])
def test_a_run_of_one_large_message_is_framed_from_its_own_bytes(size: int) -> None:
    """A large message alone in its run is written as it is, in three pieces, and
    the pieces join to the frame a copy would have made."""
    target = os.urandom(16)
    data = os.urandom(size)
    run = MessageRun(target, 7, data)
    pieces = run.frame()
    assert isinstance(pieces, tuple) and pieces[1] is data
    assert frame_bytes(pieces) == encode_frame(message_frame(target, 7, False, data))
    assert frame_bytes(run) == frame_bytes(pieces)


def test_a_run_of_one_message_below_the_threshold_or_not_bytes_is_one_piece() -> None:
    target = os.urandom(16)
    small = os.urandom(BY_REFERENCE - 1)
    view = memoryview(os.urandom(BY_REFERENCE))  # bytes only go by reference
    for data in (small, view):
        frame = MessageRun(target, 3, data).frame()
        assert frame == encode_frame(message_frame(target, 3, False, data))


def test_a_run_holds_consecutive_messages_as_bytes() -> None:
    target = os.urandom(16)
    datas = [msgspec.msgpack.encode(i) for i in range(50)] + [b"x" * 1000]
    run = MessageRun(target, 3, datas[0])
    for seq, data in enumerate(datas[1:], start=4):
        assert run.extend(seq, data, RUN_BYTES)
    encoded = run.frame()
    assert len(encoded) <= run.size  # the estimate is an upper bound
    frame = decode_frame(encoded)
    assert isinstance(frame, MessageRunFrame)
    assert frame.target == target and frame.seq == 3
    assert all(type(d) is bytes for d in frame.datas)  # not tracked by the collector
    assert frame.datas == datas


@given(sizes=st.lists(st.integers(0, 70_000), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_a_run_never_grows_past_its_limit(sizes: list[int]) -> None:
    """Whatever the message sizes, a run's frame stays within the limit it was
    extended under -- or holds a single message, as a frame of its own would."""
    limit = 4096
    run = MessageRun(b"t" * 16, 1, b"a" * sizes[0])
    for seq, size in enumerate(sizes[1:], start=2):
        if not run.extend(seq, b"b" * size, limit):
            break
    assert len(run.datas) == 1 or run.size <= limit
    assert len(run.frame()) <= run.size


def test_a_run_frame_with_too_many_messages_is_refused_from_its_header() -> None:
    """A run claiming more messages than any sender makes is refused before a
    message is made: a claim of four billion, with nothing behind it, fails at once."""
    target = os.urandom(16)
    most = encode_frame(MessageRunFrame(target, 1, [b"ab"] * MAX_RUN_MESSAGES))
    frame = decode_frame(most)
    assert isinstance(frame, MessageRunFrame) and len(frame.datas) == MAX_RUN_MESSAGES
    one_more = encode_frame(MessageRunFrame(target, 1, [b"ab"] * (MAX_RUN_MESSAGES + 1)))
    with pytest.raises(wm.PayloadError, match=f"length <= {MAX_RUN_MESSAGES}"):
        decode_frame(one_more)
    header = b"\x94\x08\xc4\x10" + target + b"\x01\xdd\xff\xff\xff\xff"
    with pytest.raises(wm.PayloadError, match=f"length <= {MAX_RUN_MESSAGES}"):
        decode_frame(header)


def test_no_run_a_sender_makes_holds_more_messages_than_a_receiver_takes() -> None:
    run = MessageRun(os.urandom(16), 1, b"")
    seq = 2
    while run.extend(seq, b"", RUN_BYTES):
        seq += 1
    assert len(run.datas) <= MAX_RUN_MESSAGES
    frame = decode_frame(run.frame())
    assert isinstance(frame, MessageRunFrame) and len(frame.datas) == len(run.datas)


def test_a_run_is_extended_only_by_the_next_sequence_number() -> None:
    run = MessageRun(os.urandom(16), 1, b"a")
    assert not run.extend(3, b"c", RUN_BYTES)
    assert not run.extend(1, b"a", RUN_BYTES)
    assert run.extend(2, b"b", RUN_BYTES)
    assert run.datas == [b"a", b"b"] and run.next_seq == 3


def test_smaller_or_other_bytes_like_values_are_copied() -> None:
    for value in (
        b"x" * (BY_REFERENCE - 1),
        bytearray(BY_REFERENCE),
        memoryview(b"y" * BY_REFERENCE),
    ):
        payload = Codec(object).encode(value)
        assert type(payload) is Payload, type(value)  # a mutable buffer could change after send
        assert bytes(Codec(bytes).decode(payload)) == bytes(value)


def test_a_decoded_message_frame_holds_a_view_of_its_frame_not_a_copy() -> None:
    value = os.urandom(1000)
    whole = encode_frame(message_frame(b"\x02" * 16, 3, False, Codec(bytes).encode(value).data))
    frame = decode_frame(whole)
    assert isinstance(frame, MessageFrame) and isinstance(frame.data, memoryview)
    assert frame.data.obj is whole
    assert Codec(bytes).decode(Payload(frame.data)) == value


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\x93\x01", b"\x95\x09\x00\x00\x00\x00"])
def test_malformed_frame_is_payload_error(garbage: bytes) -> None:
    with pytest.raises(wm.PayloadError, match="cannot decode"):
        decode_frame(garbage)


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frame_decoder_any_chunking(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame_prefix(len(f), i % 3) + f for i, f in enumerate(frames))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == [(f, i % 3) for i, f in enumerate(frames)]
    assert dec.pending == 0


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frame_decoder_keeps_nothing_of_a_reused_read_buffer(
    frames: list[bytes], data: st.DataObject
) -> None:
    """The connection reads into one buffer and overwrites it: what the decoder
    keeps (a partial frame, the frames it returns) must be its own copy."""
    stream = b"".join(frame_prefix(len(f)) + f for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    scratch = bytearray(len(stream) + 1)
    out: list[tuple[bytes, int]] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        n = cut - prev
        scratch[:n] = stream[prev:cut]
        out += dec.feed(memoryview(scratch)[:n])
        scratch[:] = b"\xee" * len(scratch)  # the next read lands here
        prev = cut
    assert out == [(f, 0) for f in frames]
    assert dec.pending == 0


_LARGE_OR_SMALL = st.one_of(
    st.binary(max_size=100),
    st.builds(
        lambda size, fill: bytes([fill]) * size,
        st.sampled_from([DIRECT_READ - 1, DIRECT_READ, DIRECT_READ + 7, 70_000]),
        st.integers(0, 255),
    ),
)


@settings(max_examples=60, deadline=None)  # large frames: time varies with the machine
@given(st.lists(_LARGE_OR_SMALL, max_size=6), st.data())
def test_frame_decoder_reads_large_frames_in_place_whatever_the_reads(
    frames: list[bytes], data: st.DataObject
) -> None:
    """As the transport reads: the rest of a large frame straight into room(), what
    follows through a reused buffer.  Every frame comes out whole and in order."""
    stream = b"".join(frame_prefix(len(f), i % 3) + f for i, f in enumerate(frames))
    dec = FrameDecoder()
    out: list[tuple[bytes | bytearray, int]] = []
    scratch = bytearray(len(stream) + 1)
    pos = 0
    used_room = False
    while pos < len(stream):
        n = data.draw(st.integers(1, len(stream) - pos))
        chunk = stream[pos : pos + n]
        pos += n
        room = dec.room()
        direct = 0
        if room is not None:
            used_room = True
            direct = min(n, len(room))
            room[:direct] = chunk[:direct]
            room.release()
            out += dec.filled(direct)
        rest = n - direct
        if rest:
            scratch[:rest] = chunk[direct:]
            out += dec.feed(memoryview(scratch)[:rest])
            scratch[:] = b"\xee" * len(scratch)  # the next read lands here
    assert out == [(f, i % 3) for i, f in enumerate(frames)]
    assert dec.pending == 0
    assert dec.room() is None
    if used_room:
        assert any(len(f) >= DIRECT_READ for f in frames)


def test_a_large_frame_cut_by_a_read_is_finished_in_its_own_buffer() -> None:
    body = os.urandom(DIRECT_READ * 3)
    stream = frame_prefix(len(body), 1) + body + frame_prefix(2) + b"ok"
    dec = FrameDecoder()
    assert dec.feed(stream[:100]) == []
    room = dec.room()
    assert room is not None and len(room) == len(body) - (100 - 8)
    assert dec.pending == 100
    room[:50] = stream[100:150]
    assert dec.filled(50) == []
    room.release()
    room = dec.room()
    assert room is not None
    rest = len(room)
    room[:] = stream[150 : 150 + rest]
    room.release()
    assert dec.filled(rest) == [(body, 1)]
    assert dec.room() is None
    assert dec.feed(stream[150 + rest :]) == [(b"ok", 0)]
    assert dec.pending == 0


# ------------------------------------------------------------ frames read in pieces


def _written(pieces: tuple[bytes, bytes, bytes], nfds: int = 0) -> bytes:
    """A frame in pieces as the transport writes it: its header marks the split."""
    whole = frame_bytes(pieces)
    return frame_prefix(len(whole), nfds, len(pieces[0])) + whole


def _apart(read: Any) -> tuple[MessageFrame, SplicedPayload]:
    """A frame the decoder took apart: its fields and its payload in pieces."""
    assert type(read) is tuple, read
    frame, payload = read
    assert type(frame) is MessageFrame and frame.data is None
    assert type(payload) is SplicedPayload and not payload.resources
    return frame, payload


@pytest.mark.parametrize("size", [TAKE_APART_FROM, 0x10000, 3 << 20])
@pytest.mark.parametrize("close", [False, True])
def test_a_frame_written_in_pieces_is_read_in_them(size: int, close: bool) -> None:
    """A large bytes value by reference: the reader copies the value out of the
    bytes read as an object of its own, and decoding it as bytes returns that
    object, not another copy."""
    value = os.urandom(size)
    target = os.urandom(16)
    pieces = encode_spliced(target, 4, close, SplicedPayload(value))
    read = bytearray(_written(pieces) + frame_prefix(2) + b"ok")
    [(large, nfds), (after, _)] = FrameDecoder().feed(memoryview(read))
    read[:] = b"\xee" * len(read)  # the read buffer is reused: nothing may view it
    assert after == b"ok" and nfds == 0
    frame, payload = _apart(large)
    assert frame == MessageFrame(target, 4, close, None)
    assert payload.body == value and payload.head == msgspec.msgpack.encode(value)[: -len(value)]
    assert isinstance(payload, SplicedPayload)
    assert payload.data == msgspec.msgpack.encode(value)
    for tp in (bytes, object, Any, bytes | None, Optional[bytes]):  # noqa: UP045
        assert codec_for(tp).decode(payload) is payload.body


def test_a_call_head_before_the_body_stays_in_the_head_piece() -> None:
    """The split is where the sender put it: a control head in front of an
    encoding stays whole in the head piece, and the encoding is the body."""
    encoding = msgspec.msgpack.encode([1, os.urandom(TAKE_APART_FROM)])
    head = b"\xd4\x7f\x02" + bytes(12)
    pieces = encode_spliced(os.urandom(16), 0, False, SplicedPayload(encoding, head))
    [(large, nfds)] = FrameDecoder().feed(_written(pieces))
    assert nfds == 0
    _frame, payload = _apart(large)
    assert payload.head == head and payload.body == encoding


def test_a_payload_whose_head_was_taken_off_is_its_body_not_a_copy() -> None:
    """A received call's request is left with an empty head once the call head
    is taken off: its encoding is then the body object itself (the compiled
    build copied it, joining an empty head)."""
    encoding = msgspec.msgpack.encode([1, os.urandom(TAKE_APART_FROM)])
    payload = SplicedPayload(encoding, b"")
    assert encoding_of(payload) is encoding
    assert payload.data is encoding
    assert encoding_of(SplicedPayload(encoding, b"\x91")) == b"\x91" + encoding


def test_a_value_read_in_pieces_decodes_as_usual_where_bytes_is_not_the_type() -> None:
    value = os.urandom(TAKE_APART_FROM)
    pieces = encode_spliced(os.urandom(16), 0, False, SplicedPayload(value))
    [(large, nfds)] = FrameDecoder().feed(_written(pieces))
    assert nfds == 0
    _frame, payload = _apart(large)
    as_bytearray = codec_for(bytearray).decode(payload)
    assert type(as_bytearray) is bytearray and as_bytearray == value
    with pytest.raises(wm.PayloadError, match="length <= 10"):  # a constraint is checked
        codec_for(Annotated[bytes, msgspec.Meta(max_length=10)]).decode(payload)
    with pytest.raises(wm.PayloadError, match="Expected `int`, got `bytes`"):
        codec_for(int).decode(payload)


def test_a_message_read_in_pieces_keeps_them_until_parsed_or_sent_on() -> None:
    """Received as a type-erased Message, a large value is not joined: parsing it
    as bytes gives the body itself, and sending it on writes the same pieces."""
    value = os.urandom(TAKE_APART_FROM)
    pieces = encode_spliced(os.urandom(16), 0, False, SplicedPayload(value))
    [(large, nfds)] = FrameDecoder().feed(_written(pieces))
    assert nfds == 0
    _frame, payload = _apart(large)
    message = codec_for(wm.Message).decode(payload)
    assert message.parse(bytes) is payload.body
    assert message.parse(bytes) is payload.body  # it holds no resource: it parses again
    with pytest.raises(wm.PayloadError, match="Expected `int`, got `bytes`"):
        message.parse(int)
    again = codec_for(wm.Message).encode(message)
    assert type(again) is SplicedPayload and again.body is payload.body
    assert again.data == msgspec.msgpack.encode(value)


def test_a_frame_buffered_across_reads_is_taken_apart_without_holding_the_buffer() -> None:
    """A read that ends inside a frame's header leaves it in the decoder's own
    buffer, and the frame is then whole there: taking it apart must leave that
    buffer free to shrink."""
    value = os.urandom(TAKE_APART_FROM)
    stream = _written(encode_spliced(os.urandom(16), 0, False, SplicedPayload(value)))
    stream += frame_prefix(2) + b"ok"
    dec = FrameDecoder()
    assert dec.feed(stream[:5]) == []
    assert dec.room() is None and dec.pending == 5
    [(large, nfds), (after, _)] = dec.feed(stream[5:])
    assert nfds == 0
    assert _apart(large)[1].body == value and after == b"ok"
    assert dec.pending == 0


def test_a_split_the_frame_does_not_fit_leaves_the_frame_whole_for_the_node() -> None:
    """A split on a frame that is not a resource-free message, one outside its
    data, or one on a frame with descriptors: the frame comes out whole, as
    without one, and the node decodes (or refuses) it as any other."""
    value = os.urandom(TAKE_APART_FROM)
    target = os.urandom(16)
    message = frame_bytes(encode_spliced(target, 0, False, SplicedPayload(value)))
    with_port = encode_frame(
        MessageFrame(
            target,
            0,
            False,
            msgspec.msgpack.encode(value),
            [PortRecord(target, 1, target, target, target, target)],
        )
    )
    run = encode_frame(MessageRunFrame(target, 0, [value]))
    garbage = b"\x96\x01" + bytes(TAKE_APART_FROM) + b"\x90"
    cases = [
        (message, len(message)),  # past the end of the data
        (message, 3),  # before its start
        (with_port, 40),
        (run, 40),
        (garbage, 40),
        (b"", 1),  # too short to take apart: never looked at for a split
        (b"\x96", 1),
    ]
    for frame, split in cases:
        got = FrameDecoder().feed(frame_prefix(len(frame), 0, split) + frame)
        assert got == [(frame, 0)]
    got = FrameDecoder().feed(frame_prefix(len(message), 1, 40) + message)
    assert got == [(message, 1)]
    with pytest.raises(wm.PayloadError):
        decode_frame(garbage)


def _read_like_the_transport(
    dec: FrameDecoder, stream: bytes, cuts: list[int]
) -> list[tuple[Any, int]]:
    """Read ``stream`` in reads ending at ``cuts``: the rest of a large frame
    straight into room(), what follows through one reused (overwritten) buffer."""
    out: list[tuple[Any, int]] = []
    scratch = bytearray(len(stream) + 1)
    pos = 0
    for cut in [*cuts, len(stream)]:
        while pos < cut:
            room = dec.room()
            direct = 0
            if room is not None:
                direct = min(cut - pos, len(room))
                room[:direct] = stream[pos : pos + direct]
                room.release()
                out += dec.filled(direct)
            rest = cut - pos - direct
            if rest:
                scratch[:rest] = stream[pos + direct : cut]
                out += dec.feed(memoryview(scratch)[:rest])
                scratch[:] = b"\xee" * len(scratch)  # the next read lands here
            pos = cut
    return out


_SPLICED_SIZES = st.sampled_from(
    [BY_REFERENCE, DIRECT_READ - 1, DIRECT_READ + 7, TAKE_APART_FROM, 70_000]
)


@settings(max_examples=60, deadline=None)  # large frames: time varies with the machine
@given(st.lists(st.tuples(_SPLICED_SIZES, st.booleans()), max_size=6), st.data())
def test_frames_in_pieces_come_out_whole_whatever_the_reads(
    shapes: list[tuple[int, bool]], data: st.DataObject
) -> None:
    """Large messages written in pieces, each followed by a small frame, read in
    any cuts: each comes out as the message that was sent -- taken apart if it
    was finished in its own buffer (which the next one may reuse) or read whole
    from TAKE_APART_FROM on, else whole."""
    target = os.urandom(16)
    values = [bytes([i]) * size for i, (size, _close) in enumerate(shapes)]
    stream = b""
    for seq, (value, (_size, close)) in enumerate(zip(values, shapes, strict=True)):
        stream += _written(encode_spliced(target, seq, close, SplicedPayload(value)))
        stream += frame_prefix(1) + b"s"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    out = _read_like_the_transport(FrameDecoder(), stream, cuts)
    assert len(out) == 2 * len(values)
    for seq, (value, (_size, close)) in enumerate(zip(values, shapes, strict=True)):
        (large, nfds), (small, _) = out[2 * seq], out[2 * seq + 1]
        assert nfds == 0 and small == b"s"
        encoding = msgspec.msgpack.encode(value)
        if type(large) is tuple:
            frame, payload = _apart(large)
            assert frame == MessageFrame(target, seq, close, None)
            assert payload.body == value and payload.data == encoding
        else:
            assert len(large) < TAKE_APART_FROM
            assert decode_frame(large) == MessageFrame(target, seq, close, encoding)


def _finish_in_own_buffer(dec: FrameDecoder, stream: bytes) -> tuple[object, list[Any]]:
    """Feed one large frame's start, read its rest into room(): the buffer it was
    finished in, and what the decoder returned."""
    assert dec.feed(stream[:1000]) == []
    room = dec.room()
    assert room is not None
    buffer = room.obj
    room[:] = stream[1000:]
    room.release()
    return buffer, dec.filled(len(stream) - 1000)


def test_the_buffer_of_a_large_frame_taken_apart_is_read_into_again() -> None:
    """Two equal large messages, each finished in a buffer of its own: the second
    reuses the first's buffer, and the first message, copied out, is unchanged."""
    first, second = os.urandom(70_000), os.urandom(70_000)
    target = os.urandom(16)
    streams = [
        _written(encode_spliced(target, i, False, SplicedPayload(v)))
        for i, v in enumerate((first, second))
    ]
    dec = FrameDecoder()
    buffers = []
    got: list[tuple[Any, int]] = []
    for stream in streams:
        buffer, frames = _finish_in_own_buffer(dec, stream)
        buffers.append(buffer)
        got += frames
    assert buffers[0] is buffers[1]
    assert [_apart(frame)[1].body for frame, _ in got] == [first, second]
    # A frame of another size gets a fresh buffer.
    other = _written(encode_spliced(target, 2, False, SplicedPayload(os.urandom(80_000))))
    assert dec.feed(other[:1000]) == []
    room = dec.room()
    assert room is not None and room.obj is not buffers[0]
    room.release()


def test_no_buffer_larger_than_spare_max_is_kept() -> None:
    """What an idle connection keeps is bounded: a larger frame's buffer goes."""
    value = os.urandom(SPARE_MAX)  # its frame is a little larger
    target = os.urandom(16)
    buffers = []
    dec = FrameDecoder()
    for seq in range(2):
        stream = _written(encode_spliced(target, seq, False, SplicedPayload(value)))
        buffer, [(frame, _)] = _finish_in_own_buffer(dec, stream)
        buffers.append(buffer)
        assert _apart(frame)[1].body == value
    assert buffers[0] is not buffers[1]


def test_a_large_frame_with_descriptors_and_a_split_comes_out_whole() -> None:
    value = os.urandom(70_000)
    whole = frame_bytes(encode_spliced(os.urandom(16), 0, False, SplicedPayload(value)))
    stream = frame_prefix(len(whole), 1, 40) + whole
    _buffer, [(frame, nfds)] = _finish_in_own_buffer(FrameDecoder(), stream)
    assert frame == whole and nfds == 1


def test_a_header_alone_cannot_make_the_decoder_allocate_a_huge_frame() -> None:
    dec = FrameDecoder()
    assert dec.feed(frame_prefix(DIRECT_READ_MAX + 1) + b"x") == []
    assert dec.room() is None  # buffered as it arrives, as any frame was before
    assert dec.pending == 9


def test_frame_decoder_rejects_oversized_frame_before_buffering() -> None:
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(FrameTooLarge) as info:
        dec.feed(frame_prefix(11))
    assert "exceeds the limit of 10" in str(info.value)


def test_frame_decoder_rejects_too_many_descriptors() -> None:
    dec = FrameDecoder(max_fds=2)
    with pytest.raises(FrameTooLarge, match="3 descriptors, above the limit of 2"):
        dec.feed(frame_prefix(0, 3))


def test_plain_value_decoded_as_message_can_be_parsed() -> None:
    tx, rx = wm.channel(int)
    payload = codec_for(object).encode({"x": 1, "y": 2, "reply": tx})
    msg = codec_for(wm.Message).decode(payload)
    assert isinstance(msg, wm.Message)

    class WithReply(msgspec.Struct):
        x: int
        y: int
        reply: wm.Sender[int]

    parsed = msg.parse(WithReply)
    assert (parsed.x, parsed.y) == (1, 2)
    parsed.reply.send(5)
    assert rx.try_recv() == 5


def test_nested_message_after_other_resources() -> None:
    """The nested message's references are its own, wherever it sits in the list."""
    first_tx, first_rx = wm.channel(int)
    inner_tx, inner_rx = wm.channel(int)
    outer = roundtrip([first_tx, wm.Message({"reply": inner_tx}), wm.OwnedFd(os.dup(0))])
    outer[0].send(1)
    outer[1].parse(dict[str, wm.Sender[int]])["reply"].send(2)
    outer[2].close()
    assert (first_rx.try_recv(), inner_rx.try_recv()) == (1, 2)


def test_encoded_message_reencoded_inside_another() -> None:
    tx, rx = wm.channel(int)
    msg = roundtrip({"m": wm.Message([tx])})["m"]  # now holds encoded bytes + a port
    _other_tx, other_rx = wm.channel(int)
    again = roundtrip([other_rx, msg])[1]
    again.parse(list[wm.Sender[int]])[0].send(3)
    assert rx.try_recv() == 3


def test_frame_decoder_returns_good_frames_before_a_bad_header() -> None:
    dec = FrameDecoder(max_frame=10)
    frames = dec.feed(frame_prefix(2) + b"ok" + frame_prefix(11) + b"x" * 11)
    assert frames == [(b"ok", 0)]
    assert isinstance(dec.failed, FrameTooLarge)
    with pytest.raises(FrameTooLarge, match="exceeds the limit of 10"):
        dec.feed(b"more")
