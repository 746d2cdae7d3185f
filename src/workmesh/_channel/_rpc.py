"""Request/response over channels: ``Rpc`` and ``FailableRpc``.

An ``Rpc[I, R]`` is an input plus the ``OneshotSender[R]`` its answer goes back
on.  Both are msgspec Structs, so a request can sit anywhere inside a message and
cross processes.  ``Sender.call(make, input)`` builds the oneshot, sends
``make(rpc)`` and awaits the answer (see :mod:`._calls`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import msgspec

from .._errors import RemoteError
from ._oneshot import OneshotSender

I = TypeVar("I")  # noqa: E741 - the api's name for an rpc's input type
R = TypeVar("R")


class Rpc(msgspec.Struct, Generic[I, R], array_like=True):
    """A request: ``input`` and where to send the answer."""

    input: I
    reply: OneshotSender[R]

    def complete(self, value: R) -> None:
        self.reply.send(value)

    def handle_sync(self, fn: Callable[[I], R]) -> None:
        self.complete(fn(self.input))

    async def handle(self, fn: Callable[[I], R | Awaitable[R]]) -> None:
        result = fn(self.input)
        if inspect.isawaitable(result):
            result = await result
        self.complete(typing.cast(R, result))


class Ok(msgspec.Struct, Generic[R], tag=0, array_like=True):
    value: R


class Err(msgspec.Struct, tag=1, array_like=True):
    error: RemoteError


class FailableRpc(msgspec.Struct, Generic[I, R], array_like=True):
    """A request whose handler may fail; the caller then gets a ``RemoteError``."""

    input: I
    reply: OneshotSender[Ok[R] | Err]

    def complete(self, value: R) -> None:
        self.reply.send(Ok(value))

    def fail(self, exc: BaseException) -> None:
        self.reply.send(Err(RemoteError.from_exception(exc)))

    def handle_sync(self, fn: Callable[[I], R]) -> None:
        self.complete(fn(self.input))

    async def handle(self, fn: Callable[[I], R | Awaitable[R]]) -> None:
        result = fn(self.input)
        if inspect.isawaitable(result):
            result = await result
        self.complete(typing.cast(R, result))

    async def handle_failable(self, fn: Callable[[I], R | Awaitable[R]]) -> None:
        try:
            result = fn(self.input)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            self.fail(exc)
        else:
            self.complete(typing.cast(R, result))

    def handle_failable_sync(self, fn: Callable[[I], R]) -> None:
        try:
            result = fn(self.input)
        except Exception as exc:
            self.fail(exc)
        else:
            self.complete(result)
