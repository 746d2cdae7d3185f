"""Hot restarts under load: a worker moved back and forth between two host processes
while several senders pipeline calls to it loses, repeats and reorders nothing.

The counter worker adds each call's ``by`` (1) and answers with its pid and the new
total.  So the totals of all answers together must be exactly 1..N (a lost call
leaves a gap -- or hangs -- and a call applied twice repeats a number), and each
sender's totals must rise in the order it sent its calls.  The restarts are spread
over the traffic: restart ``i`` is started once ``i/(R+1)`` of the calls have been
answered, and each waits for the successor's ``Started``; between two restarts
``messages`` calls are answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

import workmesh as wm

from ..helpers.workers import Counter, CounterParams, Incr
from ._scale import figure, scale, timeout

pytestmark = pytest.mark.timeout(timeout(short=60, long=3600))

SENDERS = 4
WINDOW = 16  # calls each sender keeps in flight


class Progress:
    """Counts answers; lets the restarter wait for a given number."""

    def __init__(self) -> None:
        self.answered = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self) -> None:
        self.answered += 1
        while self._waiters and self._waiters[0][0] <= self.answered:
            _, fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(None)

    async def reach(self, count: int) -> None:
        if self.answered >= count:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((count, fut))
        self._waiters.sort(key=lambda w: w[0])
        await fut


async def pipelined(
    sender: wm.Sender[Incr], calls: int, progress: Progress
) -> list[tuple[int, int]]:
    """``calls`` calls on one sender with WINDOW in flight; the answers in send order."""
    answers: list[tuple[int, int] | None] = [None] * calls
    window = asyncio.Semaphore(WINDOW)

    async def one(n: int) -> None:
        try:
            answers[n] = await sender.call(Incr, 1)
            progress.add()
        finally:
            window.release()

    tasks = []
    for n in range(calls):
        await window.acquire()
        tasks.append(asyncio.ensure_future(one(n)))
    await asyncio.gather(*tasks)
    sender.close()
    assert all(a is not None for a in answers)
    return [a for a in answers if a is not None]


def test_hot_restarts_back_and_forth_under_load_lose_nothing() -> None:
    restarts = scale(short=5, long=100)
    messages = scale(short=1_000, long=10_000)  # calls answered between two restarts
    per_sender = messages * (restarts + 1) // SENDERS

    async def main() -> tuple[list[list[tuple[int, int]]], set[int], float]:
        async with wm.Mesh("restarts") as mesh:
            hosts = [
                await mesh.launch_host(f"host-{n}", imports=["tests.helpers.workers"], warm=True)
                for n in range(2)
            ]
            client, requests = wm.channel(Incr)
            handle = await hosts[0].launch_worker(Counter, CounterParams(requests))
            del requests
            host_pids = {c.pid for c in mesh.children.values()}
            progress = Progress()
            started = time.monotonic()
            senders = [
                asyncio.ensure_future(pipelined(client.clone(), per_sender, progress))
                for _ in range(SENDERS)
            ]
            for n in range(1, restarts + 1):
                await progress.reach(n * SENDERS * per_sender // (restarts + 1))
                handle.restart(hosts[n % 2])
                event = await asyncio.wait_for(handle.next_event(), 10)
                assert isinstance(event, wm.Started), f"restart {n}: {event}"
            results = await asyncio.wait_for(asyncio.gather(*senders), 600)
            elapsed = time.monotonic() - started
            _pid, total = await client.call(Incr, 0)
            assert total == SENDERS * per_sender
            handle.stop()
            assert [type(e).__name__ async for e in handle] == ["Stopped"]
            client.close()
            for host in hosts:
                host.close()
            exits = [c.wait() for c in mesh.children.values()]
            assert await asyncio.wait_for(asyncio.gather(*exits), 10) == [0, 0]
            return results, host_pids, elapsed

    results, host_pids, elapsed = asyncio.run(main())
    totals = sorted(total for mine in results for _pid, total in mine)
    expected = list(range(1, SENDERS * per_sender + 1))
    lost = sorted(set(expected) - set(totals))
    assert totals == expected, (
        f"lost {lost[:10]}..., applied twice: {len(totals) - len(set(totals))}"
    )
    for k, mine in enumerate(results):
        seen = [total for _pid, total in mine]
        assert seen == sorted(seen), f"sender {k}'s calls were answered out of order"
    pids = [pid for mine in results for pid, _total in mine]
    assert set(pids) == host_pids, "the worker did not run in both hosts"
    # Each answer came from the process the worker was in at the time: along the
    # totals, the pid changes at most once per restart.
    by_total = [pid for _total, pid in sorted((t, p) for mine in results for p, t in mine)]
    moves = sum(a != b for a, b in itertools.pairwise(by_total))
    assert moves <= restarts, f"{moves} changes of process for {restarts} restarts"
    figure(
        f"hot restarts under load: {restarts} restarts between 2 host processes, "
        f"{len(totals)} calls from {SENDERS} pipelining senders in {elapsed:.1f} s; "
        f"none lost, none applied twice, none reordered"
    )
