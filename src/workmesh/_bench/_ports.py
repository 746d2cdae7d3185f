"""The Rust criterion scenarios of mesh_channel's ``benches/channel.rs``, ported.

The original runs each body on a single-threaded executor with
``iter_batched(SmallInput)``: the setup (making the channel, moving a sender
through a port) is outside the timed part.  Here every operation gets its own
setup, then only ``send(20); await recv()`` is timed; the ``*_and_rt`` scenarios
time creation, the round trip and dropping the ends, as the Rust closure does.
No peer: these report µs per operation only.

The Rust by-value / boxed distinction of the ``large`` scenarios does not exist in
Python: both send the same 1000-byte ``bytes`` by reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter_ns
from typing import Annotated, Any, Protocol

import msgspec

import workmesh as wm
from workmesh._channel._mpsc import sender_from_port, sender_to_port
from workmesh._channel._oneshot import oneshot_sender_from_port, oneshot_sender_to_port

from ._core import LATENCY, Case, Outcome, Settings, measure_latency, register

OPS = 20_000  # operations per round at full scale
VALUE = 20  # what the Rust benchmark sends
LARGE = bytes(1000)

# The Rust force_serialize cases retype a u64 channel's sender as i64, which makes
# the types differ so the value must be encoded and decoded.  Mirror that (msgspec
# cannot express bounds past int64, so u64 is "non-negative").
U64 = Annotated[int, msgspec.Meta(ge=0)]
I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _Closable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class _Prepared:
    """One scenario's ends after the untimed setup."""

    send: Callable[[Any], None]
    recv: Callable[[], Awaitable[Any]]
    ends: tuple[_Closable, ...]


def _channel(tp: Any) -> _Prepared:
    tx, rx = wm.channel(tp)
    return _Prepared(tx.send, rx.recv, (tx, rx))


def _channel_through_ports(tp: Any, sender_tp: Any) -> _Prepared:
    tx, rx = wm.channel(tp)
    moved = sender_from_port(sender_to_port(tx), sender_tp)
    return _Prepared(moved.send, rx.recv, (moved, rx))


def _oneshot(tp: Any) -> _Prepared:
    tx, rx = wm.oneshot(tp)
    return _Prepared(tx.send, rx.recv, (tx, rx))


def _oneshot_through_ports(tp: Any, sender_tp: Any) -> _Prepared:
    tx, rx = wm.oneshot(tp)
    moved = oneshot_sender_from_port(oneshot_sender_to_port(tx), sender_tp)
    return _Prepared(moved.send, rx.recv, (moved, rx))


async def _prepared_round(prepare: Callable[[], _Prepared], value: Any, ops: int) -> list[int]:
    samples = [0] * ops
    clock = perf_counter_ns
    for i in range(ops):
        ready = prepare()
        send, recv = ready.send, ready.recv
        start = clock()
        send(value)
        await recv()
        samples[i] = clock() - start
        for end in ready.ends:
            end.close()
    return samples


async def _create_round(make: Callable[[Any], Any], value: Any, ops: int) -> list[int]:
    samples = [0] * ops
    clock = perf_counter_ns
    for i in range(ops):
        start = clock()
        tx, rx = make(int)
        tx.send(value)
        await rx.recv()
        # Dropping the ends is part of the Rust closure, so it is timed here too.
        del tx, rx
        samples[i] = clock() - start
    return samples


async def _check(prepare: Callable[[], _Prepared], value: Any) -> None:
    """The scenario must deliver what it sent; checked once, outside the timing."""
    ready = prepare()
    ready.send(value)
    got = await ready.recv()
    for end in ready.ends:
        end.close()
    if got != value:
        raise RuntimeError(f"scenario delivered {got!r}, sent {value!r}")


def _run_prepared(prepare: Callable[[], _Prepared], value: Any, settings: Settings) -> Outcome:
    ops = settings.ops(OPS)
    with asyncio.Runner() as runner:
        runner.run(_check(prepare, value))
        return measure_latency(settings, lambda: runner.run(_prepared_round(prepare, value, ops)))


def _run_create(make: Callable[[Any], Any], settings: Settings) -> Outcome:
    ops = settings.ops(OPS)
    with asyncio.Runner() as runner:
        return measure_latency(settings, lambda: runner.run(_create_round(make, VALUE, ops)))


def _prepared_case(
    name: str, description: str, prepare: Callable[[], _Prepared], value: Any = VALUE
) -> Case:
    return Case(
        name=name,
        description=description,
        kind=LATENCY,
        run=partial(_run_prepared, prepare, value),
    )


_ENCODES = "a port-backed sender always encodes here, so the value is encoded and decoded"
_FORCED = (
    "; the sender is retyped i64 and the receiver u64 as in Rust, but since a "
    "port-backed sender always encodes this is the same path as the case above "
    "plus range validation"
)

register(_prepared_case("channel_rt", "channel(int): send 20, await recv", partial(_channel, int)))
register(
    _prepared_case(
        "channel_rt_large",
        "channel(bytes): send 1000 bytes (by reference), await recv",
        partial(_channel, bytes),
        LARGE,
    )
)
register(
    _prepared_case(
        "channel_rt_large_boxed",
        "same as channel_rt_large (Python has no by-value / boxed distinction)",
        partial(_channel, bytes),
        LARGE,
    )
)
register(
    _prepared_case(
        "channel_rt_through_ports",
        f"sender -> port -> sender_from_port(port, int); send 20, await recv ({_ENCODES})",
        partial(_channel_through_ports, int, int),
    )
)
register(
    _prepared_case(
        "channel_rt_through_ports_force_serialize",
        f"as channel_rt_through_ports{_FORCED}",
        partial(_channel_through_ports, U64, I64),
    )
)
register(
    Case(
        name="channel_and_rt",
        description="create channel(int), send 20, await recv, drop both ends",
        kind=LATENCY,
        run=partial(_run_create, wm.channel),
    )
)
register(_prepared_case("oneshot_rt", "oneshot(int): send 20, await recv", partial(_oneshot, int)))
register(
    _prepared_case(
        "oneshot_rt_through_ports",
        f"oneshot sender -> port -> oneshot_sender_from_port(port, int); send 20, await "
        f"({_ENCODES})",
        partial(_oneshot_through_ports, int, int),
    )
)
register(
    _prepared_case(
        "oneshot_rt_through_ports_force_serialize",
        f"as oneshot_rt_through_ports{_FORCED}",
        partial(_oneshot_through_ports, U64, I64),
    )
)
register(
    Case(
        name="oneshot_and_rt",
        description="create oneshot(int), send 20, await recv, drop both ends",
        kind=LATENCY,
        run=partial(_run_create, wm.oneshot),
    )
)
