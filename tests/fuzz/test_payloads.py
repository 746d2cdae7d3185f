"""Fuzzing the payload codec: typed payloads with endpoints, descriptors, nested
Messages and RemoteErrors, decoded with real descriptors and real ports.

Valid payloads must decode; mutated ones (bytes mutated, Exts retagged with bogus
or mismatched kinds, side lists that do not match the Exts: too short, too long,
a port where a descriptor is expected and the other way round) must decode or be
refused with ``PayloadError``.  Either way every endpoint that comes out must
work, and once the value is dropped no descriptor and no port may be left open.

The tests after the fuzzing pin down, one by one, the defects it found.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import workmesh as wm
from workmesh._ids import new_node_id
from workmesh._node import LocalNode
from workmesh._wire import EXT_FD, EXT_MESSAGE, EXT_RAW, Payload, codec_for

from ..chaos._scale import figure, timeout
from ._kit import (
    DECLARED,
    EXT_ONESHOT_RECEIVER,
    EXT_ONESHOT_SENDER,
    EXT_RECEIVER,
    EXT_SENDER,
    Mutation,
    Resources,
    check_payload,
    mutate,
    mutate_plan,
    open_ports,
    random_payload,
)
from ._settings import Tally, fuzz_settings, mutations, randoms

pytestmark = pytest.mark.timeout(timeout(short=300, long=3600))

declared = st.sampled_from(DECLARED)


def test_valid_payloads_decode_and_leave_nothing_open() -> None:
    tally = Tally()

    @fuzz_settings(short=800, long=10_000)
    @given(rnd=randoms, tp=declared)
    def prop(rnd: random.Random, tp: Any) -> None:
        tp, data, plan = random_payload(rnd, tp)
        outcome = check_payload(tp, data, plan.kinds)
        assert outcome == "accepted", f"a valid payload for {tp!r} was refused"
        tally.add(outcome)

    prop()
    figure(tally.line("fuzz: valid payloads"))


def test_mutated_payloads_are_refused_cleanly() -> None:
    tally = Tally()

    @fuzz_settings(short=2500, long=30_000)
    @given(
        rnd=randoms,
        tp=declared,
        muts=st.one_of(st.just([]), mutations),
        plan_op=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 100))),
    )
    def prop(
        rnd: random.Random, tp: Any, muts: list[Mutation], plan_op: tuple[int, int] | None
    ) -> None:
        tp, data, plan = random_payload(rnd, tp)
        kinds = plan.kinds if plan_op is None else mutate_plan(plan.kinds, *plan_op)
        tally.add(check_payload(tp, mutate(data, muts, donor=data), kinds))

    prop()
    figure(tally.line("fuzz: mutated payloads"))


def test_messages_parse_as_any_type_cleanly() -> None:
    """``wm.Message.parse(T)`` of a received Message, for T other than what was sent."""
    tally = Tally()

    @fuzz_settings(short=700, long=10_000)
    @given(rnd=randoms, sent=declared, parse_as=declared, muts=st.one_of(st.just([]), mutations))
    def prop(rnd: random.Random, sent: Any, parse_as: Any, muts: list[Mutation]) -> None:
        _tp, data, plan = random_payload(rnd, sent)
        data = mutate(data, muts, donor=data)
        tally.add(check_payload(wm.Message, data, plan.kinds, parse_as=parse_as))

    prop()
    figure(tally.line("fuzz: Message.parse"))


# ---------------------------------------------------------------- what the fuzzing found
# Each decodes one small hand-made payload with real resources.  The outcome is
# reduced to a word (and the exception dropped at once), so that a failing check
# does not keep descriptors alive in a traceback and upset the leak check.


def _index(n: int) -> bytes:
    return n.to_bytes(4, "little")


def _decode(tp: Any, data: bytes, kinds: list[str]) -> tuple[Resources, str, Any]:
    """Decode; returns the resources, the outcome ("ok", "PayloadError", or the
    repr of another exception) and the value (None unless "ok")."""
    res = Resources(LocalNode(), new_node_id())
    try:
        value = codec_for(tp).decode(Payload(data, res.make(kinds)))
    except wm.PayloadError:
        return res, "PayloadError", None
    except Exception as exc:
        return res, repr(exc), None
    return res, "ok", value


def _ext(code: int, index: int = 0) -> bytes:
    return msgspec.msgpack.encode(msgspec.msgpack.Ext(code, _index(index)))


@pytest.mark.parametrize("code", [EXT_RECEIVER, EXT_ONESHOT_RECEIVER])
def test_receiver_ext_naming_a_descriptor_is_a_payload_error(code: int) -> None:
    """A receiver's Ext whose side-list entry is a descriptor, not a port."""
    res, outcome, _value = _decode(object, _ext(code), ["fd"])
    assert outcome == "PayloadError"
    assert not res.fds_open()


@pytest.mark.parametrize("code", [EXT_SENDER, EXT_ONESHOT_SENDER])
def test_sender_ext_naming_a_descriptor_is_a_payload_error(code: int) -> None:
    """A sender's Ext whose entry is a descriptor: refused, rather than a Sender that
    fails with AttributeError when it is used."""
    res, outcome, value = _decode(object, _ext(code), ["fd"])
    if value is not None:
        value.close()
    del value
    assert outcome == "PayloadError"
    assert not res.fds_open()


@pytest.mark.parametrize("code", [EXT_FD, EXT_RAW])
def test_descriptor_or_raw_ext_naming_a_port_hands_out_no_bare_port(code: int) -> None:
    """An fd (or raw) Ext whose entry is a port: the application must not get a bare
    Port (an internal object that nothing ever closes)."""
    res, outcome, value = _decode(object, _ext(code), ["port"])
    kind = type(value).__name__
    del value
    assert outcome == "PayloadError", f"decoded to a {kind}"
    assert not open_ports(res.node)


class HoldsFd(msgspec.Struct):
    fd: wm.OwnedFd


def test_refused_descriptor_position_closes_the_port_it_named() -> None:
    data = msgspec.msgpack.encode({"fd": msgspec.msgpack.Ext(EXT_FD, _index(0))})
    res, outcome, _value = _decode(HoldsFd, data, ["port"])
    assert outcome == "PayloadError"
    assert not open_ports(res.node), "the port behind the refused value was never closed"


def test_decode_error_after_a_nested_message_closes_its_ports() -> None:
    """A nested Message was built (taking a port), then the payload turned out bad."""
    nested = msgspec.msgpack.Ext(EXT_MESSAGE, msgspec.msgpack.encode((0, 1, _ext(EXT_SENDER))))
    data = msgspec.msgpack.encode([nested]) + b"\x00"  # trailing garbage: refused at the end
    res, outcome, _value = _decode(object, data, ["port"])
    assert outcome == "PayloadError"
    assert not open_ports(res.node), "the nested Message's port was never closed"


def test_decode_error_inside_a_nested_message_closes_what_it_took() -> None:
    """A nested Message claims more of the side list than there is."""
    nested = msgspec.msgpack.Ext(EXT_MESSAGE, msgspec.msgpack.encode((0, 3, b"\xc0")))
    res, outcome, _value = _decode(object, msgspec.msgpack.encode(nested), ["port", "port"])
    assert outcome == "PayloadError"
    assert not open_ports(res.node), "ports taken before the bad reference were never closed"


def test_a_message_dropped_unparsed_closes_its_ports() -> None:
    """A received Message that the application drops without parsing it."""
    res, outcome, message = _decode(wm.Message, _ext(EXT_SENDER), ["port"])
    assert outcome == "ok" and isinstance(message, wm.Message)
    del message
    assert not open_ports(res.node), "the dropped Message's port was never closed"
