"""Liveness checks: a stopped child is found, killed and reported; a busy one is not.

Real child processes, stopped with SIGSTOP.  Nothing waits by sleeping: each test
waits for the failures, exits and answers it expects.  Nothing is left behind
(the conftest fixture checks).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest

import workmesh as wm
from workmesh._process import ChildProcess, Mesh
from workmesh._process._liveness import LivenessMonitor
from workmesh._process._protocol import Ping, Pong
from workmesh._process._zygote import WarmPopen
from workmesh._transport import IoLoop

from .helpers.aio import run, within
from .helpers.children import EchoParams
from .helpers.liveness_children import BusyParams, HoldParams
from .helpers.workers import Counter, CounterParams, Incr

pytestmark = pytest.mark.timeout(60)

CHILDREN = "tests.helpers.children"
HELPERS = "tests.helpers.liveness_children"
UNRESPONSIVE = "unresponsive: no answer to a liveness check within 0.5 s"


async def spawn_echo(
    mesh: Mesh, name: str, **kwargs: Any
) -> tuple[ChildProcess, wm.Sender[str], wm.Receiver[str]]:
    req_tx, req_rx = wm.channel(str)
    rep_tx, rep_rx = wm.channel(str)
    child = await mesh.spawn(name, f"{CHILDREN}:echo", EchoParams(req_rx, rep_tx), **kwargs)
    return child, req_tx, rep_rx


async def echoes(tx: wm.Sender[str], rx: wm.Receiver[str], text: str) -> bool:
    tx.send(text)
    return await within(rx.recv()) == text


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_a_stopped_child_is_declared_unresponsive_killed_and_reaped(warm: bool) -> None:
    async def main() -> None:
        async with Mesh("live", liveness=0.5) as mesh:
            if warm:
                assert await within(mesh._warm_up([HELPERS]))
            calls, calls_rx = wm.channel(wm.Rpc[int, int])
            received_tx, received = wm.channel(int)
            child = await mesh.spawn(
                "holder", f"{HELPERS}:hold_calls", HoldParams(calls_rx, received_tx), warm=warm
            )
            del calls_rx, received_tx
            assert isinstance(child._proc, WarmPopen) is warm
            assert child.liveness == 0.5
            pending = [asyncio.ensure_future(calls.call(lambda rpc: rpc, i)) for i in range(3)]
            assert [await within(received.recv()) for _ in range(3)] == [0, 1, 2]
            waiting = asyncio.ensure_future(received.recv())
            os.kill(child.pid, signal.SIGSTOP)  # our own child, not yet reaped
            for future in [*pending, waiting]:
                with pytest.raises(wm.ChannelFailed) as info:
                    await within(future, 5)
                assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
                assert f"process 'holder' (pid {child.pid}) {UNRESPONSIVE}" in str(info.value)
            assert await within(child.wait(), 5) == -signal.SIGKILL
            assert calls.is_closed()
            assert child.status == f"{UNRESPONSIVE}; killed by SIGKILL"
            tree = (await wm.inspect(mesh, timeout=5)).to_dict()
            (shown,) = tree["children"].values()
            assert shown["status"] == child.status
            assert shown["liveness_s"] == 0.5
            calls.close()

    run(main)


def test_workers_in_a_stopped_host_fail_as_unresponsive() -> None:
    async def main() -> None:
        async with Mesh("live") as mesh:  # the default deadline, overridden for this host
            host = await mesh.launch_host("stuck", imports=["tests.helpers.workers"], liveness=0.5)
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests))
            del requests
            host.close()
            pid, count = await within(client.call(Incr, 2))
            assert count == 2
            (child,) = mesh.children.values()
            os.kill(pid, signal.SIGSTOP)
            event = await within(handle.next_event(), 5)
            assert isinstance(event, wm.Failed)
            assert UNRESPONSIVE in str(event.error)
            assert f"process 'stuck' (pid {pid})" in str(event.error)
            assert await within(handle.next_event()) is None
            assert client.is_closed()  # its receiver lived in the killed process
            assert await within(child.wait(), 5) == -signal.SIGKILL
            client.close()

    run(main)


def test_a_busy_child_is_not_declared_unresponsive() -> None:
    async def main() -> None:
        async with Mesh("live", liveness=1.0) as mesh:
            done, finished = wm.channel(str)
            # A thread spinning, and the event loop blocked in bursts longer than the
            # deadline, for 3 s: the checks are answered by the child's I/O thread.
            child = await mesh.spawn("busy", f"{HELPERS}:busy", BusyParams(3.0, 1.5, done))
            del done
            report = await within(finished.recv(), 30)
            assert report.startswith("done after ")
            assert child.failure is None
            monitor = child._monitor
            assert monitor is not None
            # It was checked all along (a ping every quarter second), and answered.
            assert monitor.answers >= 4, monitor.answers
            assert await within(child.wait()) == 0

    run(main)


def test_a_stalled_parent_asks_again_instead_of_condemning() -> None:
    """The monitor alone, on an I/O loop of its own, with this test as the child."""
    io = IoLoop("test-liveness")
    pings, child_pings = wm.channel(Ping)
    child_pongs, pongs = wm.channel(Pong)
    verdicts: list[str] = []
    condemned = threading.Event()

    def on_unresponsive(reason: str) -> None:
        verdicts.append(reason)
        condemned.set()

    monitor = LivenessMonitor(io, 0.5, pings, pongs, on_unresponsive)
    try:
        monitor.start()
        first = child_pings.recv_blocking(5)
        # The monitor's loop stalls for two deadlines while that ping is unanswered
        # (a stand-in for a parent that was stopped or starved); the answer comes
        # meanwhile, but is read only after the deadline's check has come due.
        stalling = threading.Event()

        def stall() -> None:
            stalling.set()
            time.sleep(1.0)

        io.call(stall)
        assert stalling.wait(5)
        child_pongs.send(Pong(first.seq))
        # The overdue check asks again rather than condemning the child.
        second = child_pings.recv_blocking(5)
        assert second.seq == first.seq + 1
        assert verdicts == []
        child_pongs.send(Pong(second.seq))
        third = child_pings.recv_blocking(5)  # the next regular ping
        assert monitor.answers == 1
        # Left unanswered, it is condemned: the reason names the deadline.
        assert condemned.wait(5)
        assert verdicts == ["unresponsive: no answer to a liveness check within 0.5 s"]
        assert third.seq == second.seq + 1
        with pytest.raises(wm.ChannelClosed):
            child_pings.recv_blocking(5)  # a condemned child is not pinged again
    finally:
        monitor.stop()
        monitor.done.result(5)
        io.stop()
        for endpoint in (child_pings, child_pongs):
            endpoint.close()


def test_liveness_none_turns_the_checks_off() -> None:
    async def main() -> None:
        async with Mesh("live", liveness=None) as mesh:
            quiet, quiet_tx, quiet_rx = await spawn_echo(mesh, "unchecked")
            first, _, first_rx = await spawn_echo(mesh, "first", liveness=0.5)
            assert quiet.liveness is None and quiet._monitor is None
            os.kill(quiet.pid, signal.SIGSTOP)
            os.kill(first.pid, signal.SIGSTOP)
            with pytest.raises(wm.ChannelFailed, match=UNRESPONSIVE):
                await within(first_rx.recv(), 5)
            # A second checked child, stopped only now, is found at least one more
            # deadline later: by then "unchecked" has been stopped for two.
            second, _, second_rx = await spawn_echo(mesh, "second", liveness=0.5)
            os.kill(second.pid, signal.SIGSTOP)
            with pytest.raises(wm.ChannelFailed, match=UNRESPONSIVE):
                await within(second_rx.recv(), 5)
            assert quiet.returncode is None
            assert quiet.failure is None
            assert quiet.status == "running"
            os.kill(quiet.pid, signal.SIGCONT)
            assert await echoes(quiet_tx, quiet_rx, "still here")
            quiet_tx.close()
            assert await within(quiet.wait()) == 0
            assert await within(first.wait()) == -signal.SIGKILL
            assert await within(second.wait()) == -signal.SIGKILL

    run(main)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "10"])
def test_bad_liveness_values_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"Mesh\('m'\): liveness must be a positive number"):
        Mesh("m", liveness=value)

    async def main() -> None:
        async with Mesh("m") as mesh:
            with pytest.raises(ValueError, match=r"spawn\('x'\): liveness must be a positive"):
                await mesh.spawn("x", f"{CHILDREN}:echo", liveness=value)
            assert mesh.children == {}

    run(main)
