"""Conformance of ``wm.Rpc`` / ``wm.FailableRpc`` and ``Sender.call``: mesh-semantics §1.5."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest

import workmesh as wm
from workmesh._channel._mpsc import (
    receiver_from_port,
    receiver_to_port,
    sender_from_port,
    sender_to_port,
)

pytestmark = pytest.mark.timeout(20)

Run = Callable[[Any], Any]
TIMEOUT = 5
# How long a call that should already have ended (reply dropped) is given.
SHORT = 1


class Point(msgspec.Struct):
    x: int
    y: int


class Request(msgspec.Struct):
    rpc: wm.Rpc[int, Point]


class FailableRequest(msgspec.Struct):
    rpc: wm.FailableRpc[int, Point]


def make_channel(kind: str, tp: Any = object) -> tuple[wm.Sender[Any], wm.Receiver[Any]]:
    send, recv = wm.channel(tp)
    if kind == "port":
        send = sender_from_port(sender_to_port(send), tp)
        recv = receiver_from_port(receiver_to_port(recv), tp)
    return send, recv


async def serve_one(recv: wm.Receiver[Any], handle: Callable[[Any], Awaitable[None]]) -> None:
    await handle(await recv.recv())


async def call_with(
    kind: str,
    handle: Callable[[Any], Awaitable[None]],
    input: Any,
    *,
    failable: bool = False,
    tp: Any = None,
    make: Callable[[Any], Any] = lambda rpc: rpc,
    call_timeout: float = TIMEOUT,
) -> Any:
    """Serve one request with ``handle`` while calling with ``input``; the call's result.

    The channel's type defaults to ``Rpc[Any, Any]`` (or the failable one): on a promoted
    channel it is what the server decodes the request as.
    """
    if tp is None:
        tp = wm.FailableRpc[Any, Any] if failable else wm.Rpc[Any, Any]
    send, recv = make_channel(kind, tp)
    server = asyncio.create_task(serve_one(recv, handle))
    try:
        call = send.call_failable if failable else send.call
        return await asyncio.wait_for(call(make, input), call_timeout)
    finally:
        await asyncio.wait_for(server, TIMEOUT)


KINDS = ["local", "port"]


async def later(value: Any) -> Any:
    """``value``, after one trip through the event loop."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, value)
    return await fut


# --------------------------------------------------------------------------- Rpc


@pytest.mark.parametrize("kind", KINDS)
def test_call_with_sync_handler(arun: Run, kind: str) -> None:
    async def handle(rpc: wm.Rpc[int, int]) -> None:
        assert isinstance(rpc, wm.Rpc)
        rpc.handle_sync(lambda x: x * 2)

    assert arun(call_with(kind, handle, 21)) == 42


@pytest.mark.parametrize("kind", KINDS)
def test_call_with_async_handler(arun: Run, kind: str) -> None:
    async def double(x: int) -> int:
        return await later(x * 2)  # a real suspension inside the handler

    async def handle(rpc: wm.Rpc[int, int]) -> None:
        await rpc.handle(double)

    assert arun(call_with(kind, handle, 4)) == 8


@pytest.mark.parametrize("kind", KINDS)
def test_handle_accepts_a_sync_function(arun: Run, kind: str) -> None:
    async def handle(rpc: wm.Rpc[str, str]) -> None:
        await rpc.handle(str.upper)

    assert arun(call_with(kind, handle, "abc")) == "ABC"


@pytest.mark.parametrize("kind", KINDS)
def test_complete_and_input(arun: Run, kind: str) -> None:
    async def handle(rpc: wm.Rpc[list[int], int]) -> None:
        rpc.complete(sum(rpc.input))

    assert arun(call_with(kind, handle, [1, 2, 3])) == 6


@pytest.mark.parametrize("kind", KINDS)
def test_call_with_a_request_struct_and_struct_reply(arun: Run, kind: str) -> None:
    async def handle(req: Request) -> None:
        assert isinstance(req, Request)
        assert isinstance(req.rpc, wm.Rpc)
        req.rpc.complete(Point(req.rpc.input, -req.rpc.input))

    result = arun(call_with(kind, handle, 7, tp=Request, make=Request))
    assert type(result) is Point  # decoded as the Struct, not a dict
    assert result == Point(7, -7)


def test_call_through_promoted_rpc_channel_decodes_struct_reply(arun: Run) -> None:
    async def handle(rpc: wm.Rpc[int, Point]) -> None:
        rpc.complete(Point(rpc.input, 0))

    result = arun(call_with("port", handle, 3, tp=wm.Rpc[int, Point]))
    assert type(result) is Point
    assert result == Point(3, 0)


# --------------------------------------------------------------------------- FailableRpc


@pytest.mark.parametrize("kind", KINDS)
def test_call_failable_success(arun: Run, kind: str) -> None:
    async def handle(rpc: wm.FailableRpc[int, int]) -> None:
        assert isinstance(rpc, wm.FailableRpc)
        await rpc.handle_failable(lambda x: x + 1)

    assert arun(call_with(kind, handle, 1, failable=True)) == 2


def check_value_error(err: wm.RemoteError) -> None:
    assert type(err) is wm.RemoteError
    assert err.chain[0].type_name == "ValueError"
    assert err.chain[0].message == "bad input 3"
    assert err.chain[1].type_name == "KeyError"
    assert str(err) == "bad input 3: 'missing'"
    traceback = err.chain[0].traceback
    assert traceback is not None
    assert "raise ValueError" in traceback
    assert "failing_handler" in traceback
    notes = "\n".join(getattr(err, "__notes__", []))
    assert "failing_handler" in notes  # shown when the error is printed


def failing_handler(x: int) -> int:
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError(f"bad input {x}") from exc
    return x


async def async_failing_handler(x: int) -> int:
    return failing_handler(await later(x))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fn", [failing_handler, async_failing_handler], ids=["sync", "async"])
def test_handle_failable_exception_becomes_remote_error(
    arun: Run, kind: str, fn: Callable[[int], Any]
) -> None:
    async def handle(rpc: wm.FailableRpc[int, int]) -> None:
        await rpc.handle_failable(fn)

    with pytest.raises(wm.RemoteError) as info:
        arun(call_with(kind, handle, 3, failable=True))
    check_value_error(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_handle_failable_sync(arun: Run, kind: str) -> None:
    async def handle(rpc: wm.FailableRpc[int, int]) -> None:
        rpc.handle_failable_sync(failing_handler)

    with pytest.raises(wm.RemoteError) as info:
        arun(call_with(kind, handle, 3, failable=True))
    check_value_error(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_failable_rpc_fail(arun: Run, kind: str) -> None:
    async def handle(rpc: wm.FailableRpc[int, int]) -> None:
        rpc.fail(RuntimeError("refused"))

    with pytest.raises(wm.RemoteError) as info:
        arun(call_with(kind, handle, 3, failable=True))
    assert info.value.chain[0].type_name == "RuntimeError"
    assert str(info.value) == "refused"


@pytest.mark.parametrize("kind", KINDS)
def test_failable_struct_reply_and_error_through_a_request(arun: Run, kind: str) -> None:
    async def ok(req: FailableRequest) -> None:
        await req.rpc.handle_failable(lambda x: Point(x, x))

    async def bad(req: FailableRequest) -> None:
        await req.rpc.handle_failable(failing_handler)

    result = arun(call_with(kind, ok, 2, failable=True, tp=FailableRequest, make=FailableRequest))
    assert type(result) is Point
    assert result == Point(2, 2)
    with pytest.raises(wm.RemoteError) as info:
        arun(call_with(kind, bad, 3, failable=True, tp=FailableRequest, make=FailableRequest))
    check_value_error(info.value)


# --------------------------------------------------------------------------- dropped requests


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("failable", [False, True], ids=["rpc", "failable"])
def test_handler_dropping_the_rpc_closes_the_call(arun: Run, kind: str, failable: bool) -> None:
    async def handle(rpc: Any) -> None:
        del rpc  # neither completed nor failed

    with pytest.raises(wm.ChannelClosed):
        arun(call_with(kind, handle, 1, failable=failable, call_timeout=SHORT))


@pytest.mark.parametrize("kind", KINDS)
def test_call_on_a_channel_whose_receiver_is_gone(arun: Run, kind: str) -> None:
    async def main() -> None:
        send, recv = make_channel(kind, wm.Rpc[int, int])
        recv.close()
        with pytest.raises(wm.ChannelClosed):
            await asyncio.wait_for(send.call(lambda rpc: rpc, 1), SHORT)

    arun(main())


@pytest.mark.parametrize("kind", KINDS)
def test_receiver_dropped_with_a_queued_request_closes_the_call(arun: Run, kind: str) -> None:
    async def main() -> None:
        send, recv = make_channel(kind, wm.Rpc[int, int])
        call = asyncio.ensure_future(send.call(lambda rpc: rpc, 1))
        await asyncio.wait_for(wait_until_queued(recv), TIMEOUT)
        recv.close()  # the queued request is destroyed with the receiver
        with pytest.raises(wm.ChannelClosed):
            await asyncio.wait_for(call, SHORT)

    arun(main())


async def wait_until_queued(recv: wm.Receiver[Any]) -> None:
    """Return once ``recv`` has something queued, without taking it."""
    core = recv._core
    assert core is not None
    while not core.items:
        await later(None)


@pytest.mark.parametrize("kind", KINDS)
def test_handler_exception_in_plain_handle_drops_the_reply(arun: Run, kind: str) -> None:
    # `handle` is the must-succeed form: an error stays with the handler and the
    # caller sees the reply dropped.
    async def handle(rpc: wm.Rpc[int, int]) -> None:
        with pytest.raises(ValueError, match="bad input"):
            await rpc.handle(failing_handler)
        del rpc

    with pytest.raises(wm.ChannelClosed):
        arun(call_with(kind, handle, 3, call_timeout=SHORT))
