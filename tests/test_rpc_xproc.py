"""Rpc replies across real processes: the cases any reply path must keep.

A call ends with the answer, with ChannelClosed when the handler drops the Rpc,
or with ChannelFailed when the process holding it dies -- wherever the Rpc went:
answered where it arrived, forwarded to a third process, called from several
threads at once, or called from a child that was handed the Sender.  (These pin
the behaviour the reply path of ADR 0006 must preserve.)  Every child is real;
the conftest fixtures check that none, and no thread or descriptor, is left.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import workmesh as wm
from workmesh import _transport as transport
from workmesh._process import Mesh

from .helpers.aio import run, within
from .helpers.children import DROP, HOLD, Ask, CallerParams, EchoParams, RelayParams

pytestmark = pytest.mark.timeout(60)

CHILDREN = "tests.helpers.children"
THREADS = 4
CALLS_PER_THREAD = 100


def test_calls_and_receives_spin_for_their_answers_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On asyncio's loop a call, or a recv(), about to park for what a child sends
    back runs the loop's spin for it in its own place: answers and echoes come
    back right and in order, and the parent's link counts spins run in place.
    (The spin's budget is raised so that no spin gives up on a slow machine.)"""
    monkeypatch.setattr(transport, "SPIN_NS", 10 * 10**9)

    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(Ask)
            child = await mesh.spawn("answer", f"{CHILDREN}:answer", rx)
            link = mesh.runtime.connections[child.node_id]
            assert await within(tx.call(Ask, 0)) == 1000  # the link is up
            before = link.spins_in_place
            answers = [await tx.call(Ask, i) for i in range(1, 41)]  # no task of its own
            assert answers == [1000 + i for i in range(1, 41)]
            calls_in_place = link.spins_in_place - before
            tx.close()
            assert await within(child.wait()) == 0

            req_tx, req_rx = wm.channel(int)
            rep_tx, rep_rx = wm.channel(int)
            echo = await mesh.spawn("echo", f"{CHILDREN}:echo", EchoParams(req_rx, rep_tx))
            link = mesh.runtime.connections[echo.node_id]
            got = []
            for i in range(40):
                req_tx.send(i)
                got.append(await rep_rx.recv())
            assert got == list(range(40))
            req_tx.close()
            assert await within(echo.wait()) == 0
            assert calls_in_place > 0
            assert link.spins_in_place > 0

    run(main)


def test_a_dropped_rpc_closes_its_call_and_the_channel_goes_on() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(Ask)
            child = await mesh.spawn("answer", f"{CHILDREN}:answer", rx)
            assert await within(tx.call(Ask, 1)) == 1001
            with pytest.raises(wm.ChannelClosed):
                await within(tx.call(Ask, DROP))
            assert await within(tx.call(Ask, 2)) == 1002  # the next call is unharmed
            tx.close()
            assert await within(child.wait()) == 0

    run(main)


def test_an_rpc_forwarded_to_a_third_process_is_answered_from_there() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            to_answerer, answerer_rx = wm.channel(Ask)
            answerer = await mesh.spawn("answer", f"{CHILDREN}:answer", answerer_rx)
            tx, rx = wm.channel(Ask)
            relay = await mesh.spawn("relay", f"{CHILDREN}:relay", RelayParams(rx, to_answerer))
            assert await within(tx.call(Ask, 5)) == 1005
            with pytest.raises(wm.ChannelClosed):
                await within(tx.call(Ask, DROP))
            held = asyncio.ensure_future(tx.call(Ask, HOLD))
            assert await within(tx.call(Ask, 6)) == 1006  # the held one reached the answerer
            assert not held.done()
            answerer.kill()
            with pytest.raises(wm.ChannelFailed) as info:
                await within(held)
            assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
            tx.close()
            assert await within(relay.wait()) == 0
            await within(answerer.wait())

    run(main)


def test_calls_from_several_threads_on_one_sender_get_their_own_answers() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(Ask)
            child = await mesh.spawn("answer", f"{CHILDREN}:answer", rx)
            assert await within(tx.call(Ask, 0)) == 1000  # the link is up
            answers: dict[int, list[int]] = {}
            errors: list[BaseException] = []

            async def calls(first: int) -> list[int]:
                inputs = range(first, first + CALLS_PER_THREAD)
                return [await within(tx.call(Ask, x)) for x in inputs]

            def thread_main(index: int) -> None:
                try:
                    answers[index] = asyncio.run(calls(index * CALLS_PER_THREAD))
                except BaseException as exc:  # reported below, with the thread's index
                    errors.append(exc)

            threads = [
                threading.Thread(target=thread_main, args=(i,), name=f"caller-{i}")
                for i in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            done = asyncio.get_running_loop().run_in_executor(None, _join_all, threads)
            await within(done, 30)
            assert errors == []
            for index in range(THREADS):
                first = index * CALLS_PER_THREAD
                assert answers[index] == [x + 1000 for x in range(first, first + CALLS_PER_THREAD)]
            tx.close()
            assert await within(child.wait()) == 0

    run(main)


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


def test_a_sender_handed_to_a_child_calls_from_there() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(Ask)
            answerer = await mesh.spawn("answer", f"{CHILDREN}:answer", rx)
            results_tx, results = wm.channel(list[int])
            params = CallerParams(tx.clone(), 50, results_tx)
            calling = await mesh.spawn("caller", f"{CHILDREN}:caller", params)
            assert await within(results.recv()) == [x + 1000 for x in range(50)]
            assert await within(tx.call(Ask, 7)) == 1007  # the parent's own calls go on
            assert await within(calling.wait()) == 0
            tx.close()
            assert await within(answerer.wait()) == 0

    run(main)
