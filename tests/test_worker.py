"""Workers on hosts: the worker module's own tests, ported, plus the event sequences.

Parametrized over where the host runs: a runner task in this process ("thread":
workers on threads here) and a runner in a child process ("process").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import pytest

import workmesh as wm
from workmesh._node import local_node

from .helpers.workers import BadParams, Blank, Counter, CounterParams, Incr, SyncEcho

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
HostMaker = Callable[[], contextlib.AbstractAsyncContextManager[wm.WorkerHost]]


@contextlib.asynccontextmanager
async def thread_host() -> AsyncIterator[wm.WorkerHost]:
    host, runner = wm.worker_host()
    task = asyncio.create_task(runner.run(wm.RegisteredWorkers()))
    try:
        yield host
    finally:
        host.close()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def process_host() -> AsyncIterator[wm.WorkerHost]:
    async with wm.Mesh("test") as mesh:
        host = await mesh.launch_host("host", imports=["tests.helpers.workers"])
        try:
            yield host
        finally:
            host.close()


@pytest.fixture(params=["thread", "process"])
def make_host(request: pytest.FixtureRequest) -> HostMaker:
    return thread_host if request.param == "thread" else process_host


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 50))  # type: ignore[arg-type]


async def events_of(handle: wm.WorkerHandle) -> list[str]:
    return [type(e).__name__ async for e in handle]


async def count(client: wm.Sender[Incr], by: int = 1) -> tuple[int, int]:
    result: tuple[int, int] = await client.call(Incr, by)
    return result


# ------------------------------------------------------------------ the original tests


def test_runnable_workers_unsupported() -> None:
    factory = wm.runnable_workers(Counter)
    with pytest.raises(LookupError, match="unsupported worker nope"):
        factory.builder("nope")
    assert factory.builder("counter").cls is Counter


def test_launch_supported_worker_then_drop_handle_and_host(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = await host.launch_worker("sync-echo", Blank())
            assert handle.name == "sync-echo"
            events = handle.events
            handle.send.close()  # dropping the handle's sender stops the worker
            assert [type(e).__name__ async for e in events] == ["Stopped"]

    run(main())


def test_launch_unsupported_worker(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            with pytest.raises(wm.LaunchError) as info:
                await host.launch_worker("no-such-worker", Blank())
            assert str(info.value).startswith("failed to launch worker")
            assert "unsupported worker no-such-worker" in str(info.value.__cause__)

    run(main())


def test_restart_on_same_host(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = await host.launch_worker("sync-echo", Blank())
            handle.restart(host)
            assert isinstance(await handle.next_event(), wm.Started)
            handle.stop()
            assert await events_of(handle) == ["Stopped"]

    run(main())


def test_launch_local_worker_with_params_that_do_not_encode() -> None:
    class Local(wm.Worker[Any, Any]):
        ID = wm.WorkerId("local")

        def __init__(self, fn: Callable[[], int]) -> None:
            self.fn = fn

        @classmethod
        def new(cls, params: Any) -> Local:
            return cls(params)

        def run(self, rpc: wm.Receiver[Any]) -> None:
            assert self.fn() == 42
            for message in rpc:
                if isinstance(message, wm.Stop):
                    return

    async def main() -> None:
        handle = await wm.launch_local_worker(Local, lambda: 42)
        handle.stop()
        await handle.join()

    run(main())


# ------------------------------------------------------------------ events and errors


def test_new_failure_is_failed_with_remote_traceback(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = host.start_worker("bad-params", Blank())
            event = await handle.next_event()
            assert isinstance(event, wm.Failed)
            frame = event.error.chain[0]
            assert frame.type_name == "ValueError"
            assert frame.message == "these parameters will not do"
            assert "in new" in (frame.traceback or "")
            assert await handle.next_event() is None
            with pytest.raises(wm.LaunchError) as info:
                await host.launch_worker("bad-params", Blank())
            assert "these parameters will not do" in str(info.value.__cause__)

    run(main())


def test_run_failure_started_then_failed(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = host.start_worker("crashes", Blank())
            events = [e async for e in handle]
            assert [type(e).__name__ for e in events] == ["Started", "Failed"]
            assert isinstance(events[1], wm.Failed)
            assert str(events[1].error) == "the worker fell over"
            handle2 = await host.launch_worker("crashes", Blank())
            with pytest.raises(wm.RemoteError, match="the worker fell over"):
                await handle2.join()

    run(main())


def test_params_that_do_not_decode_fail_to_launch(make_host: HostMaker) -> None:
    class Wrong(msgspec.Struct):
        requests: int

    async def main() -> None:
        async with make_host() as host:
            with pytest.raises(wm.LaunchError) as info:
                await host.launch_worker(Counter, Wrong(5))
            assert "failed to receive parameters" in str(info.value.__cause__)

    run(main())


def test_counter_and_stop(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests, start=10))
            del requests
            assert (await count(client, 5))[1] == 15
            handle.stop()
            assert await events_of(handle) == ["Stopped"]

    run(main())


def test_restart_refused_keeps_old_worker(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = await host.launch_worker("stubborn", Blank())
            handle.restart(host)
            event = await handle.next_event()
            assert isinstance(event, wm.RestartFailed)
            assert "restart is not supported here" in str(event.error)
            handle.stop()  # reaches the old worker through the bridge
            assert await events_of(handle) == ["Stopped"]

    run(main())


def test_restart_onto_host_without_the_worker(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = await host.launch_worker("sync-echo", Blank())
            bare, runner = wm.worker_host()
            task = asyncio.create_task(runner.run(wm.runnable_workers()))
            handle.restart(bare)
            event = await handle.next_event()
            assert isinstance(event, wm.RestartFailed)
            assert "unsupported worker sync-echo" in str(event.error)
            handle.stop()
            assert await events_of(handle) == ["Stopped"]
            bare.close()
            await task

    run(main())


def test_restart_whose_rebuild_fails_is_failed(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = await host.launch_worker("no-restore", Blank())
            handle.restart(host)
            events = [e async for e in handle]
            assert [type(e).__name__ for e in events] == ["Failed"]
            assert "cannot rebuild from this state" in str(events[0].error)  # type: ignore[attr-defined]

    run(main())


def test_hot_restart_on_same_host_keeps_state_and_requests(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests))
            del requests
            assert (await count(client))[1] == 1
            pending = [asyncio.ensure_future(count(client)) for _ in range(50)]
            handle.restart(host)
            pending += [asyncio.ensure_future(count(client)) for _ in range(50)]
            totals = sorted(t for _pid, t in await asyncio.gather(*pending))
            assert totals == list(range(2, 102)), "a request was lost or applied twice"
            assert isinstance(await handle.next_event(), wm.Started)
            handle.stop()
            assert await events_of(handle) == ["Stopped"]

    run(main())


def test_runner_ends_only_when_hosts_gone_and_workers_done() -> None:
    async def main() -> None:
        host, runner = wm.worker_host()
        task = asyncio.create_task(runner.run(wm.RegisteredWorkers()))
        copy = host.clone()
        handle = await host.launch_worker("sync-echo", Blank())
        host.close()
        copy.close()
        done, _ = await asyncio.wait({task}, timeout=0.2)
        assert not done, "the runner ended while a worker was still running"
        handle.stop()
        await asyncio.wait_for(task, 10)
        assert await events_of(handle) == ["Stopped"]

    run(main())


def test_launch_local_worker_failure_raises_directly() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="these parameters will not do"):
            await wm.launch_local_worker(BadParams, Blank())

    run(main())


def test_launch_local_worker_never_started() -> None:
    async def main() -> None:
        handle = await wm.launch_local_worker(SyncEcho, Blank())
        handle.stop()
        assert await events_of(handle) == ["Stopped"]

    run(main())


def test_worker_id_forms() -> None:
    assert str(wm.WorkerId("x")) == "x"
    assert wm.WorkerId("x") == wm.WorkerId("x")
    with pytest.raises(ValueError, match="non-empty string"):
        wm.WorkerId("")


def test_duplicate_registration_rejected() -> None:
    class Another(wm.Worker[Blank, Blank]):
        ID = wm.WorkerId("counter")

    with pytest.raises(ValueError, match="already registered"):
        wm.register_worker(Another)


def test_inspecting_a_handle_reaches_the_worker(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests, start=3))
            del requests
            pid, _ = await count(client, 4)
            tree = (await wm.inspect(handle, timeout=5)).to_dict()
            assert tree == {"count": 7, "pid": pid}
            assert (await wm.inspect(handle, "count", timeout=5)).to_dict() == 7
            handle.stop()
            assert await events_of(handle) == ["Stopped"]

    run(main())


def test_worker_that_ignores_inspect_is_unresolved(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = await host.launch_worker(SyncEcho, Blank())
            tree = await wm.inspect(handle, timeout=5)
            assert tree.to_dict() == "<unresolved>"
            handle.stop()
            await handle.join()

    run(main())


def test_warm_process_host() -> None:
    async def main() -> None:
        async with wm.Mesh("test") as mesh:
            cold = await mesh.launch_host("cold", imports=["tests.helpers.workers"], warm=True)
            warm = await mesh.launch_host("warm", imports=["tests.helpers.workers"], warm=True)
            for host in (cold, warm):
                client, requests = wm.channel(Incr)
                handle = await host.launch_worker(Counter, CounterParams(requests))
                del requests
                assert (await count(client))[1] == 1
                handle.stop()
                await handle.join()
                host.close()
                client.close()

    run(main())


def test_restart_that_the_old_worker_drops_is_restart_failed(make_host: HostMaker) -> None:
    async def main() -> None:
        async with make_host() as host:
            handle = await host.launch_worker("deaf", Blank())
            handle.restart(host)
            event = await handle.next_event()
            assert isinstance(event, wm.RestartFailed)
            assert "channel closed" in str(event.error)
            handle.stop()  # still reaches the old worker
            assert await events_of(handle) == ["Stopped"]

    run(main())


def test_leaving_the_mesh_with_a_running_worker_exits_politely() -> None:
    async def main() -> wm.WorkerHandle:
        async with wm.Mesh("test", shutdown_timeout=20) as mesh:
            host = await mesh.launch_host("busy", imports=["tests.helpers.workers"])
            handle = await host.launch_worker(SyncEcho, Blank())
            host.close()
            children = list(mesh.children.values())
        assert [c.returncode for c in children] == [0], "not killed after the timeout"
        return handle

    handle = run(main())
    handle.send.close()
    handle.events.close()


def test_an_asyncio_worker_offers_its_loop_to_read_while_it_runs() -> None:
    """The loop an asyncio worker runs on may read the connections that bring it
    messages (see Connection in _transport) exactly while the worker runs."""
    seen: dict[str, Any] = {}

    class Looking(wm.Worker[Any, Any]):
        ID = wm.WorkerId("looking")

        @classmethod
        def new(cls, params: Any) -> Looking:
            return cls()

        async def run(self, rpc: wm.Receiver[Any]) -> None:
            loop = asyncio.get_running_loop()
            seen["loop"] = loop
            seen["offered"] = local_node().home_offered(loop)
            async for message in rpc:
                if isinstance(message, wm.Stop):
                    return

    async def main() -> None:
        handle = await wm.launch_local_worker(Looking, None)
        handle.stop()
        await handle.join()

    run(main())
    assert seen["offered"] is True
    assert not local_node().home_offered(seen["loop"])  # withdrawn when it returned
    # asyncio's loop even when uvloop is installed: it runs the user's code.
    assert type(seen["loop"]).__module__.split(".")[0] == "asyncio"
