"""Workers the tests launch, here and in child processes (import this module there)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

import workmesh as wm

from .counter_api import COUNTER, CounterParams, CounterState, Incr

__all__ = ["COUNTER", "Counter", "CounterParams", "CounterState", "Incr"]

T = TypeVar("T")


@wm.register_worker
class Counter(wm.Worker[CounterParams, CounterState]):
    """Counts; its request channel travels inside its state on a hot restart."""

    ID = COUNTER

    def __init__(self, requests: wm.Receiver[Incr], count: int) -> None:
        self.requests = requests
        self.count = count

    def __inspect__(self, req: wm.InspectRequest) -> None:
        req.respond().field("count", self.count).field("pid", os.getpid())

    @classmethod
    def new(cls, params: CounterParams) -> Counter:
        return cls(params.requests, params.start)

    @classmethod
    def restart(cls, state: CounterState) -> Counter:
        return cls(state.requests, state.count)

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[CounterState]]) -> None:
        def count(request: Incr) -> None:
            self.count += request.rpc.input
            request.rpc.complete((os.getpid(), self.count))

        await serve(
            self.requests, rpc, count, lambda: CounterState(self.requests, self.count), self
        )


async def serve(
    requests: wm.Receiver[T],
    rpc: wm.Receiver[Any],
    handle: Callable[[T], None],
    state: Callable[[], Any],
    inspected: object,
    *,
    refuse: Callable[[], BaseException] | None = None,
) -> None:
    """A test worker's loop: ``handle`` each request until Stop, or a Restart (which
    gets ``state()`` once the pending receive is cancelled -- a cancelled receive
    loses nothing), answering Inspect with ``inspected``; ends when ``requests``
    closes.  With ``refuse``, a Restart is refused instead (failed with what it
    returns) after the same stop, and the loop carries on."""
    app = asyncio.ensure_future(requests.recv())
    ctl = asyncio.ensure_future(rpc.recv())
    try:
        while True:
            done, _ = await asyncio.wait({app, ctl}, return_when=asyncio.FIRST_COMPLETED)
            if app in done:
                handle(app.result())
                app = asyncio.ensure_future(requests.recv())
            if ctl in done:
                match ctl.result():
                    case wm.Stop():
                        return
                    case wm.Inspect(deferred=deferred):
                        deferred.inspect(inspected)
                    case wm.Restart() as restart:
                        app.cancel()
                        (taken,) = await asyncio.gather(app, return_exceptions=True)
                        if not isinstance(taken, BaseException):  # already received
                            handle(taken)
                        if refuse is None:
                            restart.complete(state())
                            return
                        restart.fail(refuse())
                        app = asyncio.ensure_future(requests.recv())
                ctl = asyncio.ensure_future(rpc.recv())
    except wm.ChannelClosed:
        return
    finally:
        app.cancel()
        ctl.cancel()
        await asyncio.gather(app, ctl, return_exceptions=True)


class Collect(msgspec.Struct):
    """What a Collector gets and hands over: its stream, where the total goes
    (once a negative number arrives), and what it has seen so far."""

    items: wm.Receiver[int]
    done: wm.Sender[list[int]]
    seen: list[int] = []


@wm.register_worker
class Collector(wm.Worker[Collect, Collect]):
    """Records a one-way stream of ints; its stream and record move on a restart."""

    ID = wm.WorkerId("collector")

    def __init__(self, state: Collect) -> None:
        self.state = state

    @classmethod
    def new(cls, params: Collect) -> Collector:
        return cls(params)

    @classmethod
    def restart(cls, state: Collect) -> Collector:
        return cls(state)

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[Collect]]) -> None:
        state = self.state

        def record(item: int) -> None:
            if item < 0:
                state.done.send([os.getpid(), *state.seen])
            else:
                state.seen.append(item)

        await serve(state.items, rpc, record, lambda: state, self)


class Blank(msgspec.Struct):
    pass


@wm.register_worker
class SyncEcho(wm.Worker[Blank, Blank]):
    """A plain-thread worker; restarts hand over an empty state."""

    ID = wm.WorkerId("sync-echo")

    @classmethod
    def new(cls, params: Blank) -> SyncEcho:
        return cls()

    @classmethod
    def restart(cls, state: Blank) -> SyncEcho:
        return cls()

    def run(self, rpc: wm.Receiver[wm.WorkerRpc[Blank]]) -> None:
        for message in rpc:
            match message:
                case wm.Stop():
                    return
                case wm.Restart() as restart:
                    restart.complete(Blank())
                    return


@wm.register_worker
class BadParams(wm.Worker[Blank, Blank]):
    ID = wm.WorkerId("bad-params")

    @classmethod
    def new(cls, params: Blank) -> BadParams:
        raise ValueError("these parameters will not do")


@wm.register_worker
class Crashes(wm.Worker[Blank, Blank]):
    ID = wm.WorkerId("crashes")

    @classmethod
    def new(cls, params: Blank) -> Crashes:
        return cls()

    def run(self, rpc: wm.Receiver[Any]) -> None:
        raise RuntimeError("the worker fell over")


@wm.register_worker
class Stubborn(wm.Worker[Blank, Blank]):
    """Refuses to restart, and keeps running."""

    ID = wm.WorkerId("stubborn")

    @classmethod
    def new(cls, params: Blank) -> Stubborn:
        return cls()

    def run(self, rpc: wm.Receiver[wm.WorkerRpc[Blank]]) -> None:
        for message in rpc:
            match message:
                case wm.Stop():
                    return
                case wm.Restart() as restart:
                    restart.fail(RuntimeError("restart is not supported here"))


@wm.register_worker
class NoRestore(SyncEcho):
    """Hands over its state (as SyncEcho does), but cannot be rebuilt from it."""

    ID = wm.WorkerId("no-restore")

    @classmethod
    def restart(cls, state: Blank) -> NoRestore:
        raise RuntimeError("cannot rebuild from this state")


@wm.register_worker
class Deaf(wm.Worker[Blank, Blank]):
    """Drops every request but Stop (a Restart it receives is never answered)."""

    ID = wm.WorkerId("deaf")

    @classmethod
    def new(cls, params: Blank) -> Deaf:
        return cls()

    def run(self, rpc: wm.Receiver[wm.WorkerRpc[Blank]]) -> None:
        for message in rpc:
            if isinstance(message, wm.Stop):
                return
            # Drop it now: the loop variable would otherwise keep the request (and
            # its reply sender) alive while waiting for the next one.
            del message


class Tagged(msgspec.Struct):
    """A call that must come back as its own: the answer echoes the tag, with who
    answered (``incarnation``: pid and a token of that worker object) and how many
    calls that worker had handled, this one included."""

    rpc: wm.Rpc[int, tuple[str, int, int]]  # input: tag; reply: (incarnation, tag, handled)


class TaggedParams(msgspec.Struct):
    requests: wm.Receiver[Tagged]


@wm.register_worker
class RefusingTagger(wm.Worker[TaggedParams, TaggedParams]):
    """Answers Tagged calls, and refuses every restart: on a Restart it first stops
    taking calls (cancels its pending receive, as a worker about to hand over
    would -- a cancelled receive loses nothing), then refuses and carries on."""

    ID = wm.WorkerId("refusing-tagger")

    def __init__(self, requests: wm.Receiver[Tagged]) -> None:
        self.requests = requests
        self.incarnation = f"{os.getpid()}/{os.urandom(6).hex()}"
        self.handled = 0
        self.tag_sum = 0
        self.refused = 0
        self.handled_at_refusal = -1

    def __inspect__(self, req: wm.InspectRequest) -> None:
        resp = req.respond()
        resp.field("incarnation", self.incarnation).field("pid", os.getpid())
        resp.field("handled", self.handled).field("tag_sum", self.tag_sum)
        resp.field("refused", self.refused).field("handled_at_refusal", self.handled_at_refusal)

    @classmethod
    def new(cls, params: TaggedParams) -> RefusingTagger:
        return cls(params.requests)

    def answer(self, request: Tagged) -> None:
        self.handled += 1
        self.tag_sum += request.rpc.input
        request.rpc.complete((self.incarnation, request.rpc.input, self.handled))

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[TaggedParams]]) -> None:
        def refuse() -> BaseException:
            self.refused += 1
            self.handled_at_refusal = self.handled
            return RuntimeError("this worker does not move")

        await serve(self.requests, rpc, self.answer, lambda: None, self, refuse=refuse)
