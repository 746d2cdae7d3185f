"""The child side: ``python -m workmesh._process._child`` joins the mesh and runs.

The steps, in order: take the invitation out of the environment; ask the kernel
to kill us when the parent dies (and exit at once if it already has); apply the
sandbox, if the invitation carries one, while this is still the only thread;
install the node the parent chose for us; connect to the parent over the
inherited socket, presenting the secret, with the mesh's limits; receive the
initial message; start answering liveness pings on the I/O thread; import what
the message names; then run the entry function, raced against the parent's
requests.  Whichever ends first, the child waits until no port is still moving
through it, writes out everything queued, and exits (status 0, or 1 if the entry
function raised or the link to the parent was cut for an error).

A sandbox that cannot be applied, like code that cannot be loaded, is reported to
the parent with its traceback instead of "ready"; the child then exits with
status 1 without importing anything of the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from .._channel import Receiver
from .._channel._mpsc import receiver_from_port
from .._errors import ChannelClosed, ChannelFailed, RemoteError
from .._frames import Limits
from .._ids import NodeId, PortId, node_name
from .._node import LocalNode, Port, install_process_node
from .._transport import Connection, new_event_loop
from .._wire import Message
from ._liveness import answer_pings
from ._protocol import (
    ENV_VAR,
    Connect,
    ConnectTo,
    HostRequest,
    InitialMessage,
    InspectHost,
    Invitation,
    Shutdown,
    StartFailure,
    decode_invitation,
)
from ._runtime import Runtime, acquire_runtime
from ._sandbox import apply_sandbox
from ._views import ProcessView

# Named explicitly: run with -m, this module's __name__ is __main__.
log = logging.getLogger("workmesh._process._child")

PR_SET_PDEATHSIG = 1
SETTLE_TIMEOUT = 5.0
DRAIN_TIMEOUT = 5.0


def _die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:  # pragma: no cover
        log.warning("PR_SET_PDEATHSIG failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent_pid:  # the parent died before we could ask
        os._exit(1)


# glibc gives freed memory at the top of its heap back to the system as soon as
# more than 128 KiB of it is free.  A large message is rarely freed alone (its
# frame, its decoded value), so in a child that receives them every message had
# its pages faulted in afresh: measured on a stream of 64 KiB messages, the
# child's loop spent 27 us per message, 13 us with freed memory kept.  A child of
# a Mesh keeps up to KEEP_FREED of it for reuse, and takes blocks up to MMAP_FROM
# from that heap rather than mapping each one anew (setting one limit would stop
# glibc adjusting the other).  Not glibc (no mallopt): its defaults stay.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEEP_FREED = 64 * 1024 * 1024
MMAP_FROM = 32 * 1024 * 1024


def _keep_freed_memory() -> None:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, MMAP_FROM)
    mallopt(_M_TRIM_THRESHOLD, KEEP_FREED)


def _resolve(entry: str) -> Callable[[Message], Any]:
    module_name, _, attr = entry.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"entry {entry!r} is not callable")
    return target  # type: ignore[no-any-return]


async def _run_entry(fn: Callable[[Message], Any], payload: Message) -> None:
    if inspect.iscoroutinefunction(fn):
        await fn(payload)
        return
    # A thread of our own, not asyncio.to_thread: the default executor would be
    # joined when the loop closes, so a blocked entry would keep the process alive.
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def body() -> None:
        try:
            outcome = fn(payload)
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle_future, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle_future, done, outcome, None)

    threading.Thread(target=body, name="workmesh-entry", daemon=True).start()
    result = await done
    if inspect.isawaitable(result):
        await result


def _settle_future(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


async def _serve_requests(
    requests: Receiver[HostRequest], runtime: Runtime, name: str, limits: Limits | None
) -> None:
    try:
        while True:
            request = await requests.recv()
            if isinstance(request, Shutdown):
                return
            if isinstance(request, Connect):
                _connect(request, runtime, limits)
            elif isinstance(request, InspectHost):
                request.deferred.inspect(ProcessView(runtime, name))
    except (ChannelClosed, ChannelFailed):
        log.info("the parent is gone; exiting")


def _connect(request: Connect, runtime: Runtime, limits: Limits | None) -> None:
    peer = NodeId(request.node)
    if request.fd is None:
        runtime.node.fail_node(peer, "no such node in the mesh")
        return
    sock = socket.socket(fileno=request.fd.detach())
    # A sibling gets the limits the parent gets, and is read on this (the main) loop.
    runtime.adopt(runtime.attach(peer, sock, limits=limits))


def _refuse_start(init: InitialMessage, stage: str, error: RemoteError) -> int:
    init.ready.send(StartFailure(stage, error))
    init.requests.close()
    init.leader.close()
    return 1


async def _serve(
    runtime: Runtime, port: Port, inv: Invitation, sandbox_error: RemoteError | None
) -> int:
    receiver: Receiver[InitialMessage] = receiver_from_port(port, InitialMessage)
    try:
        init = await receiver.recv()
    except (ChannelClosed, ChannelFailed) as exc:
        log.error("no initial message from the parent: %s", exc)
        return 1
    finally:
        receiver.close()
    runtime.io.run(answer_pings(init.pings, init.pongs))
    if sandbox_error is not None:
        return _refuse_start(init, "apply its sandbox", sandbox_error)
    leader = init.leader
    runtime.node.on_unknown_node = lambda node: leader.send(ConnectTo(node))
    try:
        for module in init.imports:
            importlib.import_module(module)
        fn = _resolve(init.entry)
    except Exception as exc:
        log.exception("child %r could not load its code", init.name)
        return _refuse_start(init, "load its code", RemoteError.from_exception(exc))
    init.ready.send(None)
    entry = asyncio.create_task(_run_entry(fn, init.payload))
    serving = asyncio.create_task(_serve_requests(init.requests, runtime, init.name, inv.limits))
    await asyncio.wait({entry, serving}, return_when=asyncio.FIRST_COMPLETED)
    for task in (entry, serving):
        task.cancel()
    code = 0
    for task in (entry, serving):
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception:
                log.exception("entry %s of child %r failed", init.entry, init.name)
                code = 1
    init.requests.close()
    leader.close()
    return code


async def _serve_at_home(
    runtime: Runtime,
    link: Connection | None,
    port: Port,
    inv: Invitation,
    sandbox_error: RemoteError | None,
) -> int:
    """Serve with this process's links read on the main loop, where the entry runs.

    An asyncio entry then gets its messages without a hand-off from the I/O thread;
    the links go back to the I/O thread before the loop ends (it keeps draining
    and settling them until the process exits).
    """
    runtime.adopt(link)
    try:
        return await _serve(runtime, port, inv, sandbox_error)
    finally:
        runtime.leave_homes()


def _settle(node: LocalNode) -> None:
    settled = threading.Event()
    node.when_settled(settled.set)
    if not settled.wait(SETTLE_TIMEOUT):
        log.warning(
            "exiting with ports still in flight after %s s: %s",
            SETTLE_TIMEOUT,
            "; ".join(node.moving_ports()),
        )


def main() -> None:
    text = os.environ.pop(ENV_VAR, None)
    if text is None:
        sys.stderr.write("workmesh child: no invitation; this module is started by a Mesh\n")
        sys.exit(2)
    inv: Invitation = decode_invitation(text)
    _die_with_parent(inv.parent_pid)
    run_invitation(inv)


def _apply_sandbox(inv: Invitation) -> RemoteError | None:
    """Apply the invitation's sandbox; the error to report instead of "ready", if any.

    Called while this is the only thread, so that every later thread inherits it.
    """
    if inv.sandbox is None:
        return None
    try:
        apply_sandbox(inv.sandbox)
    except Exception as exc:
        log.error("child %r could not apply its sandbox: %s", inv.name, exc)
        return RemoteError.from_exception(exc)
    log.debug("child %r applied its sandbox: %s", inv.name, inv.sandbox)
    return None


def run_invitation(inv: Invitation) -> NoReturn:
    """Join the mesh as ``inv`` says, run the entry function, and exit the process.

    The caller has already arranged to die with its parent: :func:`main` for a
    child started from ``sys.executable``, the zygote for a child it forked.
    """
    _keep_freed_memory()
    for path in inv.sys_path:
        if path not in sys.path:
            sys.path.append(path)
    logging.basicConfig(
        level=os.environ.get("WORKMESH_LOG", "WARNING").upper(),
        format=f"[{inv.name} %(process)d] %(levelname)s %(name)s: %(message)s",
    )
    sandbox_error = _apply_sandbox(inv)
    node = LocalNode(NodeId(inv.child_node))
    install_process_node(node)
    runtime = acquire_runtime()
    parent = NodeId(inv.parent_node)
    # The port must exist before the first frame can arrive for it.
    port = node.bootstrap_port(PortId(inv.child_port), (parent, PortId(inv.parent_port)))
    link = runtime.attach(
        parent, socket.socket(fileno=inv.fd), send_hello=inv.secret, limits=inv.limits
    )
    log.debug("child %r joined as %s", inv.name, node_name(node.id))
    # The entry's loop also reads the links (see _serve_at_home): uvloop, when it
    # is installed, as for the I/O thread.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        code = runner.run(_serve_at_home(runtime, link, port, inv, sandbox_error))
    if link is not None and link.error is not None:
        log.error("child %r exits: its link to the parent was cut: %s", inv.name, link.error)
        code = 1
    _settle(node)
    runtime.drain(DRAIN_TIMEOUT)
    sys.stdout.flush()
    sys.stderr.flush()
    # The process is done; threads started by user code must not keep it alive.
    os._exit(code)


if __name__ == "__main__":
    main()
