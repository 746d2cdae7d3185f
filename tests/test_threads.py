"""Channels between plain threads and asyncio tasks, and between event loops.

"Every endpoint works from any thread and any event loop" (api.md, Channels).  Every
thread started here is joined; the autouse fixture of conftest checks that the
thread count and the fd count are back where they started.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import workmesh as wm
from workmesh._channel._mpsc import (
    receiver_from_port,
    receiver_to_port,
    sender_from_port,
    sender_to_port,
)
from workmesh._channel._oneshot import oneshot_sender_from_port, oneshot_sender_to_port

pytestmark = pytest.mark.timeout(20)

Run = Callable[[Any], Any]
KINDS = ["local", "port"]
JOIN_TIMEOUT = 10


class Worker(threading.Thread):
    """A thread that keeps its result or exception for the test to collect."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:
            self.error = exc
        finally:
            del self.fn, self.args  # endpoints in the arguments die with the thread's work

    def finish(self) -> Any:
        self.join(JOIN_TIMEOUT)
        assert not self.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def start(fn: Callable[..., Any], *args: Any) -> Worker:
    worker = Worker(fn, *args)
    worker.start()
    return worker


def make_channel(kind: str, tp: Any = object) -> tuple[wm.Sender[Any], wm.Receiver[Any]]:
    send, recv = wm.channel(tp)
    if kind == "port":
        send = sender_from_port(sender_to_port(send), tp)
        recv = receiver_from_port(receiver_to_port(recv), tp)
    return send, recv


async def parked_recv(recv: wm.Receiver[Any]) -> asyncio.Task[Any]:
    """A task that is waiting inside ``recv.recv()`` when this returns."""
    started = asyncio.Event()

    async def body() -> Any:
        started.set()
        return await recv.recv()  # runs up to its first suspension before we resume

    task = asyncio.create_task(body())
    await started.wait()
    return task


@pytest.mark.parametrize("kind", KINDS)
def test_thread_sends_10k_messages_to_a_task(arun: Run, kind: str) -> None:
    count = 10_000

    def produce(send: wm.Sender[int]) -> None:
        for i in range(count):
            send.send(i)
        send.close()

    async def main() -> tuple[list[int], Worker]:
        send, recv = make_channel(kind, int)
        worker = start(produce, send)
        del send
        return [item async for item in recv], worker

    got, worker = arun(main())
    worker.finish()
    assert got == list(range(count))


@pytest.mark.parametrize("kind", KINDS)
def test_task_sends_to_a_thread_using_recv_blocking(arun: Run, kind: str) -> None:
    count = 2_000

    def consume(recv: wm.Receiver[int]) -> list[int]:
        got = []
        while True:
            try:
                got.append(recv.recv_blocking(timeout=JOIN_TIMEOUT))
            except wm.ChannelClosed:
                return got

    async def main() -> Worker:
        send, recv = make_channel(kind, int)
        worker = start(consume, recv)
        del recv
        for i in range(count):
            send.send(i)
        send.close()
        return worker

    worker = arun(main())
    assert worker.finish() == list(range(count))


def test_thread_iterates_with_plain_for_until_a_task_closes(arun: Run) -> None:
    send, recv = wm.channel(int)
    worker = start(list, recv)
    del recv

    async def main() -> None:
        for i in range(100):
            send.send(i)
        send.close()

    arun(main())
    assert worker.finish() == list(range(100))


@pytest.mark.parametrize("kind", KINDS)
def test_two_event_loops_ping_pong(kind: str) -> None:
    rounds = 1_000
    to_pong, pong_in = make_channel(kind, int)
    to_ping, ping_in = make_channel(kind, int)

    def ping(send: wm.Sender[int], recv: wm.Receiver[int]) -> int:
        async def main() -> int:
            last = 0
            for i in range(rounds):
                send.send(i)
                last = await recv.recv()
                assert last == i + 1
            send.close()
            with pytest.raises(wm.ChannelClosed):
                await recv.recv()
            return last

        return asyncio.run(main())

    def pong(recv: wm.Receiver[int], send: wm.Sender[int]) -> int:
        async def main() -> int:
            seen = 0
            async for i in recv:
                send.send(i + 1)
                seen += 1
            send.close()
            return seen

        return asyncio.run(main())

    ping_thread = start(ping, to_pong, ping_in)
    pong_thread = start(pong, pong_in, to_ping)
    del to_pong, pong_in, to_ping, ping_in
    assert ping_thread.finish() == rounds
    assert pong_thread.finish() == rounds


@pytest.mark.parametrize("kind", KINDS)
def test_rpc_served_by_a_thread_called_from_a_task(arun: Run, kind: str) -> None:
    def serve(recv: wm.Receiver[wm.Rpc[int, int]]) -> int:
        served = 0
        for rpc in recv:
            rpc.handle_sync(lambda x: x * x)
            served += 1
        return served

    async def main() -> tuple[list[int], Worker]:
        send, recv = make_channel(kind, wm.Rpc[int, int])
        worker = start(serve, recv)
        del recv
        results = [await asyncio.wait_for(send.call(lambda rpc: rpc, i), 5) for i in range(200)]
        results += await asyncio.gather(*(send.call(lambda rpc: rpc, i) for i in range(200)))
        send.close()
        return results, worker

    results, worker = arun(main())
    assert worker.finish() == 400
    assert results == [i * i for i in range(200)] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_oneshot_from_a_thread_to_a_task_and_back(arun: Run, kind: str) -> None:
    def answer(rx: wm.OneshotReceiver[int], tx: wm.OneshotSender[int]) -> None:
        tx.send(rx.recv_blocking(timeout=JOIN_TIMEOUT) + 1)

    async def main() -> int:
        to_thread_tx, to_thread_rx = wm.oneshot(int)
        from_thread_tx, from_thread_rx = wm.oneshot(int)
        if kind == "port":
            to_thread_tx = oneshot_sender_from_port(oneshot_sender_to_port(to_thread_tx), int)
            from_thread_tx = oneshot_sender_from_port(oneshot_sender_to_port(from_thread_tx), int)
        worker = start(answer, to_thread_rx, from_thread_tx)
        del to_thread_rx, from_thread_tx
        to_thread_tx.send(41)
        value = await asyncio.wait_for(from_thread_rx.recv(), 5)
        worker.finish()
        return value

    assert arun(main()) == 42


def test_oneshot_corruption_wakes_a_blocked_thread() -> None:
    tx, rx = wm.oneshot(int)
    blocked = threading.Event()

    def wait(rx: wm.OneshotReceiver[int]) -> BaseException | None:
        blocked.set()
        try:
            rx.recv_blocking(timeout=JOIN_TIMEOUT)
        except wm.ChannelFailed as exc:
            return exc
        return None

    worker = start(wait, rx)
    del rx
    assert blocked.wait(JOIN_TIMEOUT)
    oneshot_sender_from_port(oneshot_sender_to_port(tx), str).send("text")
    err = worker.finish()
    assert isinstance(err, wm.ChannelFailed)
    assert err.kind is wm.ChannelErrorKind.CORRUPTION


@pytest.mark.parametrize("kind", KINDS)
def test_dropping_the_sender_wakes_a_blocked_thread(kind: str) -> None:
    send, recv = make_channel(kind, int)

    def wait(recv: wm.Receiver[int]) -> str:
        try:
            recv.recv_blocking(timeout=JOIN_TIMEOUT)
        except wm.ChannelClosed:
            return "closed"
        return "value"

    worker = start(wait, recv)
    del recv
    del send  # from another thread, while the worker may or may not be blocked yet
    assert worker.finish() == "closed"


@pytest.mark.parametrize("kind", KINDS)
def test_cancelled_receives_racing_a_thread_lose_nothing(arun: Run, kind: str) -> None:
    rounds = 500
    parked = threading.Event()

    def produce(send: wm.Sender[int]) -> None:
        for i in range(rounds):
            assert parked.wait(JOIN_TIMEOUT)
            parked.clear()
            send.send(i)  # races with the cancel below
        send.close()

    async def main() -> tuple[list[int], int, Worker]:
        send, recv = make_channel(kind, int)
        worker = start(produce, send)
        del send
        got: list[int] = []
        cancelled = 0
        for _ in range(rounds):
            task = await parked_recv(recv)
            parked.set()
            task.cancel()
            try:
                got.append(await task)
            except asyncio.CancelledError:
                cancelled += 1
                got.append(await asyncio.wait_for(recv.recv(), 5))
        with pytest.raises(wm.ChannelClosed):
            await asyncio.wait_for(recv.recv(), 5)
        return got, cancelled, worker

    got, cancelled, worker = arun(main())
    worker.finish()
    assert got == list(range(rounds))
    assert cancelled > 0  # the race was exercised


@pytest.mark.parametrize("kind", KINDS)
def test_many_threads_one_receiver_fifo_per_sender(arun: Run, kind: str) -> None:
    per_thread, threads = 1_000, 4

    def produce(send: wm.Sender[tuple[int, int]], who: int) -> None:
        for i in range(per_thread):
            send.send((who, i))
        send.close()

    async def main() -> tuple[list[tuple[int, int]], list[Worker]]:
        send, recv = make_channel(kind, tuple[int, int])
        workers = [start(produce, send.clone(), who) for who in range(threads)]
        send.close()
        return [item async for item in recv], workers

    got, workers = arun(main())
    for worker in workers:
        worker.finish()
    assert len(got) == per_thread * threads
    for who in range(threads):
        assert [i for w, i in got if w == who] == list(range(per_thread))


def test_receivers_move_between_event_loops() -> None:
    send, recv = wm.channel(int)
    tx, rx = wm.oneshot(int)

    async def give_up() -> None:
        # Wait on this loop, get cancelled, and let the loop close.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(recv.recv(), 0.01)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rx.recv(), 0.01)

    asyncio.run(give_up())

    def produce() -> None:
        send.send(1)
        tx.send(2)

    async def receive_elsewhere() -> tuple[int, int]:
        worker = start(produce)
        got = await asyncio.wait_for(recv.recv(), 5), await asyncio.wait_for(rx.recv(), 5)
        worker.finish()
        return got

    assert start(asyncio.run, receive_elsewhere()).finish() == (1, 2)
