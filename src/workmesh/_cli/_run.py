"""``workmesh run MODULE:WorkerClass``: run one worker; SIGHUP hot-restarts it.

With ``--process`` (the default) the worker runs in a child process, and SIGHUP
restarts it into a *fresh* process that imports the module again, so edited code
takes effect while the state is kept.  With ``--thread`` it runs on a thread here
and SIGHUP reloads the module before restarting.  Ctrl-C and SIGTERM stop the
worker cleanly.  Mistakes in the command line end with one line and status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import msgspec

import workmesh as wm
from workmesh._process import Mesh

USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake in the command line: reported in one line, status 2."""


def _say(text: str) -> None:
    # One write per line: workers on threads print too, and lines must not interleave.
    sys.stdout.write(f"workmesh run: {text}\n")
    sys.stdout.flush()


def load_worker(spec: str) -> tuple[ModuleType, type[wm.Worker[Any, Any]]]:
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise UsageError(f"expected MODULE:WorkerClass, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like 'python -m': modules in the current directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UsageError(f"module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, wm.Worker)):
        raise UsageError(f"{spec} is not a workmesh Worker class")
    try:
        wm.RegisteredWorkers().builder(cls.ID.id)
    except LookupError as exc:
        raise UsageError(
            f"{spec} is not registered: decorate it with @workmesh.register_worker"
        ) from exc
    return module, cls


def parse_params(cls: type[wm.Worker[Any, Any]], text: str | None) -> Any:
    try:
        return msgspec.json.decode(text or "{}", type=cls.params_type)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise UsageError(f"invalid --params for {cls.__qualname__}: {exc}") from exc


class _Hosts:
    """Makes hosts for the worker: child processes, or runner tasks on this loop."""

    def __init__(self, mesh: Mesh, module: ModuleType, in_process: bool) -> None:
        self.mesh = mesh
        self.module = module
        self.in_process = in_process
        self.runners: list[asyncio.Task[None]] = []

    async def new(self, *, fresh_code: bool) -> wm.WorkerHost:
        if not self.in_process:
            host: wm.WorkerHost = await self.mesh.launch_host(
                "worker", imports=[self.module.__name__]
            )
            return host
        if fresh_code:
            self.module = importlib.reload(self.module)
        host, runner = wm.worker_host()
        self.runners.append(asyncio.create_task(runner.run(wm.RegisteredWorkers())))
        return host

    async def aclose(self) -> None:
        for task in self.runners:
            await task


@contextlib.asynccontextmanager
async def _signals(names: dict[signal.Signals, Callable[[], None]]) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    for sig, callback in names.items():
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in names:
            loop.remove_signal_handler(sig)


async def run_worker(spec: str, params_text: str | None, in_process: bool) -> int:
    module, cls = load_worker(spec)
    params = parse_params(cls, params_text)
    async with Mesh("workmesh-run") as mesh:
        hosts = _Hosts(mesh, module, in_process)
        host = await hosts.new(fresh_code=False)
        try:
            handle = await host.launch_worker(cls.ID, params)
        except wm.LaunchError as exc:
            _say(f"{exc}: {exc.__cause__}")
            host.close()
            await hosts.aclose()
            return 1
        where = "on a thread" if in_process else "in a child process"
        code = await _supervise(handle, host, hosts, f"started worker {cls.ID} {where}")
        await hosts.aclose()
        return code


async def _supervise(
    handle: wm.WorkerHandle, host: wm.WorkerHost, hosts: _Hosts, started: str
) -> int:
    restart = asyncio.Event()
    signals = {
        signal.SIGHUP: restart.set,
        signal.SIGINT: handle.stop,
        signal.SIGTERM: handle.stop,
    }
    async with _signals(signals):
        # Said only now: from here on the signals do what the message promises.
        _say(f"{started}; SIGHUP restarts it, Ctrl-C stops it")
        next_event = asyncio.ensure_future(handle.next_event())
        while True:
            restart_wait = asyncio.ensure_future(restart.wait())
            await asyncio.wait({next_event, restart_wait}, return_when=asyncio.FIRST_COMPLETED)
            restart_wait.cancel()
            if restart.is_set() and not next_event.done():
                restart.clear()
                # The restart moves the events receiver away: stop reading it first
                # (a cancelled receive loses nothing).
                next_event.cancel()
                await asyncio.gather(next_event, return_exceptions=True)
                try:
                    new_host = await hosts.new(fresh_code=True)
                except Exception as exc:
                    _say(f"restart failed, the worker keeps running: cannot load the code: {exc}")
                    next_event = asyncio.ensure_future(handle.next_event())
                    continue
                _say("restarting the worker with fresh code")
                handle.restart(new_host)
                host.close()
                host = new_host
                next_event = asyncio.ensure_future(handle.next_event())
                continue
            event = next_event.result()
            code = _report(event)
            if code is not None:
                host.close()
                return code
            next_event = asyncio.ensure_future(handle.next_event())


def _report(event: wm.WorkerEvent | None) -> int | None:
    match event:
        case wm.Started():
            _say("the worker restarted")
        case wm.RestartFailed(error=error):
            _say(f"restart failed, the worker keeps running: {error}")
        case wm.Stopped():
            _say("the worker stopped")
            return 0
        case wm.Failed(error=error):
            _say(f"the worker failed: {error}")
            return 1
        case None:
            _say("the worker's events ended")
            return 0
    return None
