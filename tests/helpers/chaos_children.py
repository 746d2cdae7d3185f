"""Entry functions and a worker for the chaos suite's child processes.

The call server holds back its last few calls unanswered, so that whenever the
test kills it, calls are certainly pending in it (a server that answers at once
would have most answers already on their way back).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque

import msgspec

import workmesh as wm


class Call(msgspec.Struct, array_like=True):
    """One request; the answer is ``(pid of the server, input)``."""

    rpc: wm.Rpc[int, tuple[int, int]]


class ServeParams(msgspec.Struct):
    requests: wm.Receiver[Call]
    hold: int  # how many of the latest calls stay unanswered


def _serve_one(held: deque[Call], hold: int, pid: int) -> None:
    while len(held) > hold:
        call = held.popleft()
        call.rpc.complete((pid, call.rpc.input))


async def serve_calls(message: wm.Message) -> None:
    """Answer calls in order, keeping the latest ``hold`` unanswered, until closed."""
    params = message.parse(ServeParams)
    pid = os.getpid()
    held: deque[Call] = deque()
    async for call in params.requests:
        held.append(call)
        _serve_one(held, params.hold, pid)
    _serve_one(held, 0, pid)


class FamilyParams(msgspec.Struct):
    reply: wm.Sender[tuple[int, int]]  # (pid, parent's pid)
    hold: wm.Receiver[int]


async def report_family_and_wait(message: wm.Message) -> None:
    """Say who we are and who our parent is, then wait until ``hold`` ends."""
    params = message.parse(FamilyParams)
    params.reply.send((os.getpid(), os.getppid()))
    async for _ in params.hold:
        pass


@wm.register_worker
class CallHolder(wm.Worker[ServeParams, ServeParams]):
    """The call server as a worker: answers in order, holding back the latest few."""

    ID = wm.WorkerId("chaos-call-holder")

    def __init__(self, params: ServeParams) -> None:
        self.params = params

    @classmethod
    def new(cls, params: ServeParams) -> CallHolder:
        return cls(params)

    async def serve(self) -> None:
        pid = os.getpid()
        held: deque[Call] = deque()
        async for call in self.params.requests:
            held.append(call)
            _serve_one(held, self.params.hold, pid)

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[ServeParams]]) -> None:
        serving = asyncio.ensure_future(self.serve())
        try:
            async for message in rpc:
                if isinstance(message, wm.Stop):
                    return
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
