"""Worker hosts: launch requests, the runner that serves them, and worker handles.

``worker_host()`` is a channel of launch requests: the :class:`WorkerHost` end
sends them, the :class:`WorkerHostRunner` end builds and runs workers, each on a
thread of its own.  Either end may be sent to another process inside a message,
which is how a worker ends up in a child process.

The runner returns only when every ``WorkerHost`` copy is gone -- here, in
another process, or inside a message still in flight -- *and* every worker it
started has finished.  A child process that serves a runner therefore lives
exactly as long as someone can still launch workers on it, or a worker runs.

Hot restart (``WorkerHandle.restart(host)``) swaps fresh channels into the handle
and sends the target host the old worker's rpc sender and events receiver.  The
new worker's thread asks the old worker for its state over that sender (so every
message sent before the restart reaches the old worker first) and then:

* if the old worker refuses, is gone, or this host cannot build the worker, it
  reports ``RestartFailed`` first and then *bridges* the new channels back to the
  old worker, so the handle keeps talking to it and sees its later events;
* otherwise it builds the new worker from the state (``Failed`` if that raises:
  the old worker is gone) and runs it; the old events stream is dropped, so the
  old worker's own ``Stopped`` never reaches the handle.

Messages sent through the handle meanwhile wait in the new channel and follow
whichever worker wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from .._channel import (
    Err,
    FailableRpc,
    Ok,
    Receiver,
    Sender,
    channel,
    oneshot,
)
from .._channel._mpsc import retype
from .._errors import ChannelClosed, ChannelFailed, LaunchError, RemoteError
from .._inspection import InspectRequest, register_root, unregister_root
from .._node import local_node
from .._wire import Message
from ._registry import WorkerBuilder, WorkerFactory
from ._trace import span
from ._types import (
    Failed,
    Inspect,
    Restart,
    RestartFailed,
    Started,
    Stop,
    Stopped,
    Worker,
    WorkerEvent,
    WorkerId,
    rpc_type,
    runs_async,
    worker_name,
)

log = logging.getLogger(__name__)


class LaunchNew(msgspec.Struct, tag="new"):
    parameters: Message


class LaunchRestart(msgspec.Struct, tag="restart"):
    send: Sender[Any]  # the old worker's rpc sender
    events: Receiver[WorkerEvent]  # the old worker's events


class LaunchRequest(msgspec.Struct):
    name: str
    rpc: Receiver[Any]
    events: Sender[WorkerEvent]
    launch: LaunchNew | LaunchRestart

    def fail(self, error: BaseException) -> None:
        """This host cannot build the worker: report it (and revert a restart)."""
        remote = RemoteError.from_exception(error)
        if isinstance(self.launch, LaunchNew):
            self.events.send(Failed(remote))
            self.events.close()
            return
        self.events.send(RestartFailed(remote))
        _revert(self, self.launch)


def _revert(request: LaunchRequest, launch: LaunchRestart) -> None:
    """Send the handle's traffic back to the old worker (after RestartFailed)."""
    request.events.bridge(launch.events)
    launch.send.bridge(request.rpc)


# ------------------------------------------------------------------------- handles


class WorkerHandle(msgspec.Struct):
    """A running worker: its events, and the channel to stop or restart it.

    ``async for event in handle`` yields :data:`WorkerEvent` values; a failure of
    the channel itself (say, the worker's process died) becomes a ``Failed``.
    """

    name: str
    send: Sender[Any]
    events: Receiver[WorkerEvent]

    def __aiter__(self) -> AsyncIterator[WorkerEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WorkerEvent]:
        while True:
            event = await self.next_event()
            if event is None:
                return
            yield event

    async def next_event(self) -> WorkerEvent | None:
        """The next event, or None once the stream has ended."""
        try:
            return await self.events.recv()
        except ChannelClosed:
            return None
        except ChannelFailed as exc:
            return Failed(RemoteError.from_exception(exc))

    def __inspect__(self, req: InspectRequest) -> None:
        """Inspecting a handle inspects the worker (its ``run`` answers ``Inspect``)."""
        self.send.send(Inspect(req.defer()))

    def stop(self) -> None:
        """Ask the worker to stop (it answers by returning from ``run``)."""
        self.send.send(Stop())

    async def join(self) -> None:
        """Wait for the worker to end; raises the RemoteError of a ``Failed``."""
        async for event in self:
            if isinstance(event, Failed):
                raise event.error

    def is_terminated(self) -> bool:
        return self.events.is_terminated()

    def restart(self, host: WorkerHost) -> None:
        """Hot-restart the worker onto ``host`` (possibly in another process)."""
        send, rpc = channel()
        events_send, events = channel(WorkerEvent)
        old_send, self.send = self.send, send
        old_events, self.events = self.events, events
        host._launch(self.name, rpc, events_send, LaunchRestart(old_send, old_events))


# ------------------------------------------------------------------------- hosts


class WorkerHost(msgspec.Struct):
    """Launches workers on a host (maybe in another process).  Clone it freely."""

    requests: Sender[LaunchRequest]

    def start_worker(
        self, worker: WorkerId[Any] | type[Worker[Any, Any]] | str, params: Any
    ) -> WorkerHandle:
        """Ask for a worker and return its handle at once (watch for ``Started``)."""
        name = worker_name(worker)
        send, rpc = channel()
        events_send, events = channel(WorkerEvent)
        self._launch(name, rpc, events_send, LaunchNew(Message(params)))
        return WorkerHandle(name, send, events)

    async def launch_worker(
        self, worker: WorkerId[Any] | type[Worker[Any, Any]] | str, params: Any
    ) -> WorkerHandle:
        """Start a worker and wait until it runs; raises LaunchError if it fails."""
        handle = self.start_worker(worker, params)
        event = await handle.next_event()
        if isinstance(event, Started):
            return handle
        if isinstance(event, Failed):
            raise LaunchError("failed to launch worker", cause=event.error)
        if event is None:
            raise LaunchError("failed to launch worker: the host went away")
        raise LaunchError(f"failed to launch worker: received invalid worker event {event!r}")

    def _launch(
        self,
        name: str,
        rpc: Receiver[Any],
        events: Sender[WorkerEvent],
        launch: LaunchNew | LaunchRestart,
    ) -> None:
        self.requests.send(LaunchRequest(name, rpc, events, launch))

    def clone(self) -> WorkerHost:
        return WorkerHost(self.requests.clone())

    def close(self) -> None:
        self.requests.close()


class WorkerHostRunner(msgspec.Struct):
    """Serves launch requests: ``await runner.run(factory)``."""

    requests: Receiver[LaunchRequest]

    async def run(self, factory: WorkerFactory) -> None:
        """Serve until every WorkerHost copy is gone and every worker has exited."""
        loop = asyncio.get_running_loop()
        exits: asyncio.Queue[threading.Thread] = asyncio.Queue()
        live: set[threading.Thread] = set()
        root = register_root("worker-host", _RunnerView(live))
        receiving: asyncio.Task[LaunchRequest] | None = asyncio.ensure_future(self.requests.recv())
        try:
            while receiving is not None or live:
                receiving = await self._step(factory, receiving, exits, live, loop)
        except asyncio.CancelledError:
            # Told to stop serving (say, the host's process is shutting down): the
            # workers are left to their handles; a process exiting ends them.
            live.clear()
            raise
        finally:
            unregister_root(root)
            if receiving is not None:
                receiving.cancel()
            for thread in live:
                thread.join()

    async def _step(
        self,
        factory: WorkerFactory,
        receiving: asyncio.Task[LaunchRequest] | None,
        exits: asyncio.Queue[threading.Thread],
        live: set[threading.Thread],
        loop: asyncio.AbstractEventLoop,
    ) -> asyncio.Task[LaunchRequest] | None:
        exited = asyncio.ensure_future(exits.get())
        waits: set[asyncio.Future[Any]] = {exited}
        if receiving is not None:
            waits.add(receiving)
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if exited in done:
            thread = exited.result()
            thread.join()
            live.discard(thread)
        else:
            exited.cancel()
        if receiving is not None and receiving in done:
            try:
                request = receiving.result()
            except (ChannelClosed, ChannelFailed):
                return None  # every host is gone
            self._start(factory, request, exits, live, loop)
            return asyncio.ensure_future(self.requests.recv())
        return receiving

    def _start(
        self,
        factory: WorkerFactory,
        request: LaunchRequest,
        exits: asyncio.Queue[threading.Thread],
        live: set[threading.Thread],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        with span("worker_host_launch_request", name=request.name):
            try:
                builder = factory.builder(request.name)
            except Exception as exc:
                log.warning("cannot launch worker %r: %s", request.name, exc)
                request.fail(exc)
                return

        def body() -> None:
            try:
                _launch(request, builder)
            finally:
                # A runner that was told to stop serving may be gone with its loop;
                # then nobody waits for this exit any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(exits.put_nowait, thread)

        thread = threading.Thread(target=body, name=f"worker-{request.name}")
        live.add(thread)
        thread.start()


class _RunnerView:
    """What inspecting a runner shows: the workers it is running."""

    def __init__(self, live: set[threading.Thread]) -> None:
        self.live = live

    def __inspect__(self, req: InspectRequest) -> None:
        resp = req.respond()
        resp.field("running", len(self.live))
        for thread in list(self.live):
            resp.child(f"workers/{thread.name.removeprefix('worker-')}", {"thread": thread.name})


def worker_host() -> tuple[WorkerHost, WorkerHostRunner]:
    """A new host and runner pair; run the runner somewhere, launch through the host."""
    send, recv = channel(LaunchRequest)
    return WorkerHost(send), WorkerHostRunner(recv)


# ------------------------------------------------------------------------- launching


def _launch(request: LaunchRequest, builder: WorkerBuilder) -> None:
    """Build and run one worker (on its own thread), reporting events as it goes."""
    worker = _build(request, builder)
    if worker is None:
        return
    events = request.events
    events.send(Started())
    retype(request.rpc, rpc_type(builder.cls))
    try:
        _run(worker, request.rpc)
    except Exception as exc:
        events.send(Failed(RemoteError.from_exception(exc)))
    else:
        events.send(Stopped())
    finally:
        events.close()


def _build(request: LaunchRequest, builder: WorkerBuilder) -> Worker[Any, Any] | None:
    launch = request.launch
    if isinstance(launch, LaunchNew):
        with span("worker_new", name=request.name, action="new"):
            try:
                return builder.new(launch.parameters)
            except Exception as exc:
                request.events.send(Failed(RemoteError.from_exception(exc)))
                request.events.close()
                return None
    state = _ask_for_state(launch.send)
    if isinstance(state, BaseException):
        request.events.send(RestartFailed(RemoteError.from_exception(state)))
        _revert(request, launch)
        return None
    launch.events.close()  # the old worker's own Stopped must not reach the handle
    launch.send.close()
    with span("worker_new", name=request.name, action="restart"):
        try:
            return builder.restart(state)
        except Exception as exc:
            request.events.send(Failed(RemoteError.from_exception(exc)))
            request.events.close()
            return None


def _ask_for_state(send: Sender[Any]) -> Message | BaseException:
    """Ask the old worker for its state; blocks this (worker) thread."""
    reply, answer = oneshot(Ok[Message] | Err)
    send.send(Restart(FailableRpc(None, reply)))
    # Only the old worker may hold the reply sender: if it drops the request (or
    # is gone) the wait must end with ChannelClosed, not hang on our own copy.
    del reply
    try:
        outcome = answer.recv_blocking()
    except (ChannelClosed, ChannelFailed) as exc:
        return exc
    if isinstance(outcome, Err):
        return outcome.error
    value = outcome.value
    return value if isinstance(value, Message) else Message(value)


def _run(worker: Worker[Any, Any], rpc: Receiver[Any]) -> None:
    if runs_async(worker):
        # asyncio's own loop, not uvloop's even when installed: the loop runs the
        # user's code, and an idle uvloop loop holds ~300 KiB (measured: an idle
        # asyncio worker 28 KiB -> 324 KiB) for ~8 µs of a small round trip.
        asyncio.run(_run_async(worker, rpc))
    else:
        worker.run(rpc)


async def _run_async(worker: Worker[Any, Any], rpc: Receiver[Any]) -> None:
    # While the worker runs, its loop offers to read the connections whose messages
    # wake it, so a request from another process reaches it without a hop through
    # another thread's loop (see Connection in _transport).
    node = local_node()
    loop = asyncio.get_running_loop()
    node.offer_home(loop)
    try:
        await worker.run(rpc)  # type: ignore[misc]  # checked by runs_async
    finally:
        node.withdraw_home(loop)


async def launch_local_worker(cls: type[Worker[Any, Any]], params: Any) -> WorkerHandle:
    """Run a worker on a thread of this process: no registry, params need not encode.

    A failure in ``new`` is raised here as it is.  The handle never sees
    ``Started``; it sees ``Stopped`` or ``Failed``, then the end.
    """
    send, rpc = channel()
    events_send, events = channel(WorkerEvent)
    built, ready = oneshot()

    def body() -> None:
        try:
            worker = cls.new(params)
        except BaseException as exc:
            built.send(exc)
            return
        built.send(None)
        retype(rpc, rpc_type(cls))
        try:
            _run(worker, rpc)
        except Exception as exc:
            events_send.send(Failed(RemoteError.from_exception(exc)))
        else:
            events_send.send(Stopped())
        finally:
            events_send.close()

    thread = threading.Thread(target=body, name=f"worker-{cls.ID.id}")
    thread.start()
    error = await ready
    if error is not None:
        thread.join()  # it is returning right after handing us the error
        raise error
    return WorkerHandle(cls.ID.id, send, events)
