"""Hot restart of a worker from one child process into a fresh one, under load."""

from __future__ import annotations

import asyncio
import os
from typing import TypeVar

import pytest

import workmesh as wm

from .helpers.workers import Collect, Collector, Counter, CounterParams, Incr

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
