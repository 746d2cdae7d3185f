"""Hot restart of a worker from one child process into a fresh one, under load."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

import workmesh as wm

from .helpers.aio import within
from .helpers.workers import (
    Collect,
    Collector,
    Counter,
    CounterParams,
    Incr,
    RefusingTagger,
    Tagged,
    TaggedParams,
)

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")
SENDERS = 4
CALLS_PER_SENDER = 600


def run(main: object) -> T:  # type: ignore[type-var]
    return asyncio.run(main)  # type: ignore[arg-type]


async def pipelined_calls(
    client: wm.Sender[Incr],
    n: int,
    futures: list[asyncio.Future[tuple[int, int]]],
    halfway: asyncio.Event,
    moved: asyncio.Event,
) -> list[asyncio.Future[tuple[int, int]]]:
    """Send ``n`` calls back to back from one sender into ``futures``; say when half
    are out, and send the rest once the worker has ``moved``."""
    for i in range(n):
        futures.append(asyncio.ensure_future(client.call(Incr, 1)))
        if i == n // 2:
            halfway.set()
            await moved.wait()
        await asyncio.sleep(0)  # let the other senders interleave; not a synchronisation
    return futures


def test_restart_into_fresh_process_under_load_loses_nothing() -> None:
    async def main() -> None:
        async with wm.Mesh("test") as mesh:
            first = await mesh.launch_host("first", imports=["tests.helpers.workers"])
            second = await mesh.launch_host("second", imports=["tests.helpers.workers"])
            client, requests = wm.channel(Incr)
            handle = await first.launch_worker(Counter, CounterParams(requests))
            del requests
            senders = [client.clone() for _ in range(SENDERS)]
            halfway = [asyncio.Event() for _ in senders]
            moved = asyncio.Event()
            futures: list[list[asyncio.Future[tuple[int, int]]]] = [[] for _ in senders]
            tasks = [
                asyncio.ensure_future(pipelined_calls(s, CALLS_PER_SENDER, f, h, moved))
                for s, f, h in zip(senders, futures, halfway, strict=True)
            ]
            await halfway[0].wait()
            await futures[0][0]  # the first process has answered at least one call
            handle.restart(second)  # with the rest of the first halves in flight
            started = await handle.next_event()
            moved.set()  # the second halves go to the new process
            per_sender = [[await f for f in await t] for t in tasks]
            results = [r for mine in per_sender for r in mine]

            totals = sorted(total for _pid, total in results)
            assert totals == list(range(1, SENDERS * CALLS_PER_SENDER + 1)), (
                "a call was lost or applied twice"
            )
            for k, mine in enumerate(per_sender):
                seen = [total for _pid, total in mine]
                assert seen == sorted(seen), f"sender {k}'s calls were reordered"
            pids = [pid for pid, _total in results]
            assert len(set(pids)) == 2, "the restart did not move the worker"
            assert os.getpid() not in pids
            assert isinstance(started, wm.Started)
            _new_pid, total = await client.call(Incr, 0)
            assert total == SENDERS * CALLS_PER_SENDER
            first.close()  # the old process has no hosts and no workers now: it exits
            handle.stop()
            assert [type(e).__name__ async for e in handle] == ["Stopped"]
            second.close()
            for s in senders:
                s.close()
            client.close()
            exits = [c.wait() for c in mesh.children.values()]
            assert await asyncio.wait_for(asyncio.gather(*exits), 10) == [0, 0]

    run(main())


def test_a_one_way_stream_queued_across_a_restart_arrives_whole_and_in_order() -> None:
    """Plain messages sent in bursts (they travel several to a frame) while the
    worker moves to a fresh process: the new one gets every message, once, in order,
    after those the old one took."""
    total = 20_000

    async def main() -> None:
        async with wm.Mesh("test") as mesh:
            first = await mesh.launch_host("first", imports=["tests.helpers.workers"])
            second = await mesh.launch_host("second", imports=["tests.helpers.workers"])
            tx, items = wm.channel(int)
            done_tx, done = wm.channel(list[int])
            handle = await first.launch_worker(Collector, Collect(items, done_tx))
            del items, done_tx
            for i in range(total // 2):  # one turn of the loop: runs of messages
                tx.send(i)
            handle.restart(second)  # with much of the first half still queued
            for i in range(total // 2, total):
                tx.send(i)
            assert isinstance(await handle.next_event(), wm.Started)
            tx.send(-1)
            pid, *seen = await asyncio.wait_for(done.recv(), 30)
            assert seen == list(range(total)), "a message was lost, repeated or reordered"
            by_name = {c.name: c.pid for c in mesh.children.values()}
            assert pid == by_name["second"], "the stream did not end in the new process"
            handle.stop()
            assert [type(e).__name__ async for e in handle] == ["Stopped"]
            first.close()
            second.close()
            tx.close()
            done.close()
            exits = [c.wait() for c in mesh.children.values()]
            assert await asyncio.wait_for(asyncio.gather(*exits), 10) == [0, 0]

    run(main())


def test_restart_into_newer_code_converts_state() -> None:
    async def main() -> None:
        async with wm.Mesh("test") as mesh:
            old = await mesh.launch_host("v1", imports=["tests.helpers.workers"])
            client, requests = wm.channel(Incr)
            handle = await old.launch_worker(Counter, CounterParams(requests, start=7))
            del requests
            old_pid, total = await client.call(Incr, 1)
            assert total == 8
            new = await mesh.launch_host("v2", imports=["tests.helpers.workers_v2"])
            handle.restart(new)
            assert isinstance(await handle.next_event(), wm.Started)
            new_pid, total = await client.call(Incr, 1)
            assert new_pid != old_pid
            assert total == 8001, "the v2 restart() converts the v1 state"
            old.close()
            new.close()
            client.close()
            assert [type(e).__name__ async for e in handle] == ["Stopped"]

    run(main())


def test_worker_process_killed_is_failed_with_exit_status() -> None:
    async def main() -> None:
        async with wm.Mesh("test") as mesh:
            host = await mesh.launch_host("doomed", imports=["tests.helpers.workers"])
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests))
            del requests
            pid, _ = await client.call(Incr, 1)
            (child,) = [c for c in mesh.children.values() if c.pid == pid]
            child.kill()
            event = await handle.next_event()
            assert isinstance(event, wm.Failed)
            text = str(event.error)
            assert "node failure" in text
            assert "killed by SIGKILL" in text
            assert await handle.next_event() is None
            with pytest.raises((wm.ChannelFailed, wm.ChannelClosed)):
                await client.call(Incr, 1)
            host.close()
            client.close()

    run(main())


# ------------------------------------------------- a refused restart, calls in flight

CALLERS = 4
IN_FLIGHT = 8  # calls each caller keeps outstanding
AFTER_REVERT = 150  # calls each caller starts once the restart is known to have failed
Answer = tuple[str, int, int]  # (incarnation, tag, handled): see Tagged


class Traffic:
    """Calls made and answered so far, over all callers."""

    def __init__(self) -> None:
        self.made = 0
        self.answered = 0


def tagged_call(client: wm.Sender[Tagged], tag: int, traffic: Traffic) -> asyncio.Future[Answer]:
    """Make a call: counted as made now; its task sends it at its first step, on the
    loop's next turn, before any answer can come back."""
    traffic.made += 1

    async def call() -> Answer:
        answer: Answer = await client.call(Tagged, tag)
        traffic.answered += 1
        return answer

    return asyncio.ensure_future(call())


async def tagged_caller(
    k: int,
    client: wm.Sender[Tagged],
    traffic: Traffic,
    warm: asyncio.Event,
    reverted: asyncio.Event,
) -> list[tuple[int, Answer]]:
    """Caller ``k``: calls with tags of its own, IN_FLIGHT at a time, without a pause
    from before the restart until AFTER_REVERT calls have been made after
    ``reverted``; sets ``warm`` once it has an answer.  Returns (tag, answer) pairs
    in the order the calls were made."""
    window: deque[tuple[int, asyncio.Future[Answer]]] = deque()
    answered: list[tuple[int, Answer]] = []
    tag, after = k * 1_000_000, 0
    while after < AFTER_REVERT:
        after += reverted.is_set()
        window.append((tag, tagged_call(client, tag, traffic)))
        tag += 1
        if len(window) == IN_FLIGHT:
            mine, call = window.popleft()
            answered.append((mine, await call))
            warm.set()
    answered += [(mine, await call) for mine, call in window]
    return answered


@contextlib.asynccontextmanager
async def two_hosts(
    where: str, target_knows_worker: bool
) -> AsyncIterator[tuple[wm.WorkerHost, wm.WorkerHost, wm.Mesh | None]]:
    """A host to start the worker on and one to restart it onto (which may lack
    it): runners on tasks here (workers on threads), or child processes."""
    if where == "process":
        async with wm.Mesh("test") as mesh:
            first = await mesh.launch_host("first", imports=["tests.helpers.workers"])
            target = await mesh.launch_host(
                "second", imports=["tests.helpers.workers"] if target_knows_worker else []
            )
            yield first, target, mesh
            first.close()
            target.close()
            exits = [c.wait() for c in mesh.children.values()]
            assert await within(asyncio.gather(*exits)) == [0, 0]
        return
    first, first_runner = wm.worker_host()
    target, target_runner = wm.worker_host()
    workers = wm.RegisteredWorkers() if target_knows_worker else wm.runnable_workers()
    runners = [
        asyncio.create_task(first_runner.run(wm.RegisteredWorkers())),
        asyncio.create_task(target_runner.run(workers)),
    ]
    try:
        yield first, target, None
    finally:
        first.close()
        target.close()
        await within(asyncio.gather(*runners), 30)


@pytest.mark.parametrize("where", ["thread", "process"])
@pytest.mark.parametrize("how", ["refused", "unbuildable"])
def test_refused_restart_reverts_with_calls_in_flight_losing_none(where: str, how: str) -> None:
    """Four callers keep calls in flight to a worker while it is asked to restart onto
    another host, and the restart fails there -- the old worker refuses to hand
    over ("refused"), or the target host cannot build the worker ("unbuildable").
    After RestartFailed the old worker keeps serving: every call made before,
    during and after gets its own answer, from the old worker, counted once."""

    async def main() -> None:
        async with two_hosts(where, target_knows_worker=how == "refused") as hosts:
            first, target, mesh = hosts
            client, requests = wm.channel(Tagged)
            handle = await first.launch_worker(RefusingTagger, TaggedParams(requests))
            del requests
            senders = [client.clone() for _ in range(CALLERS)]
            callers: list[asyncio.Future[list[tuple[int, Answer]]]] = []
            try:
                await exercise(
                    handle,
                    target,
                    mesh=mesh,
                    client=client,
                    senders=senders,
                    callers=callers,
                    how=how,
                )
            finally:
                # Even when a check failed: the worker ends once its callers are gone.
                for caller in callers:
                    caller.cancel()
                await asyncio.gather(*callers, return_exceptions=True)
                for s in senders:
                    s.close()
                client.close()

    run(main())


async def exercise(
    handle: wm.WorkerHandle,
    target: wm.WorkerHost,
    *,
    mesh: wm.Mesh | None,
    client: wm.Sender[Tagged],
    senders: list[wm.Sender[Tagged]],
    callers: list[asyncio.Future[list[tuple[int, Answer]]]],
    how: str,
) -> None:
    incarnation, _, handled = await within(client.call(Tagged, 0))
    assert handled == 1
    if mesh is not None:
        by_name = {c.name: c.pid for c in mesh.children.values()}
        assert incarnation.startswith(f"{by_name['first']}/"), incarnation
    traffic = Traffic()
    warm = [asyncio.Event() for _ in senders]
    reverted = asyncio.Event()
    callers += [
        asyncio.ensure_future(tagged_caller(k, s, traffic, w, reverted))
        for k, (s, w) in enumerate(zip(senders, warm, strict=True), start=1)
    ]
    await within(asyncio.gather(*(w.wait() for w in warm)))
    handle.restart(target)
    # Made in the same step as the restart request, nothing having run in between:
    # these calls are in flight while the restart is under way, whatever the
    # callers' windows hold at this moment (that is up to scheduling: under load,
    # every call they made may already be answered, their next ones not yet made).
    during = [(tag, tagged_call(client, tag, traffic)) for tag in range(1, IN_FLIGHT * CALLERS + 1)]
    # Sent through the handle meanwhile: it waits in the new channel and follows
    # the old worker back.
    asked = asyncio.ensure_future(wm.inspect(handle, "incarnation", timeout=30))
    event = await within(handle.next_event(), 30)
    reverted.set()
    assert isinstance(event, wm.RestartFailed), event
    expected_error = (
        "this worker does not move" if how == "refused" else "unsupported worker refusing-tagger"
    )
    assert expected_error in str(event.error)

    per_caller = await within(asyncio.gather(*callers), 60)
    per_caller.insert(0, [(tag, await within(call)) for tag, call in during])
    calls = [call for mine in per_caller for call in mine]
    assert len(calls) == traffic.made == traffic.answered
    misanswered = [(tag, answer) for tag, answer in calls if answer[1] != tag]
    assert not misanswered, f"calls got answers not their own: {misanswered[:5]}"
    strangers = {answer[0] for _tag, answer in calls} - {incarnation}
    assert not strangers, f"answered by other than the old worker: {strangers}"
    counts = sorted(answer[2] for _tag, answer in calls)
    assert counts == list(range(2, len(calls) + 2)), "a call was lost or doubled"
    for k, mine in enumerate(per_caller):
        seen = [answer[2] for _tag, answer in mine]
        assert seen == sorted(seen), f"caller {k}'s calls were reordered"

    assert (await within(asked, 40)).to_dict() == incarnation
    state = (await wm.inspect(handle, timeout=10)).to_dict()
    assert isinstance(state, dict), state
    assert state["incarnation"] == incarnation
    assert state["handled"] == len(calls) + 1
    assert state["tag_sum"] == sum(tag for tag, _answer in calls)
    if how == "refused":
        assert state["refused"] == 1
        assert 1 < state["handled_at_refusal"] < state["handled"]
    else:
        assert state["refused"] == 0, "the old worker was asked for its state"

    handle.stop()  # reaches the old worker through the bridge
    assert [type(e).__name__ async for e in handle] == ["Stopped"]
