"""The parent side: :class:`Mesh` starts child processes and brokers their links.

A child is started from ``sys.executable`` (never a shell or a shim) with one
inherited socket to its parent and an invitation in its environment.  It runs an
entry function (``"module:function"``) with a message that may carry channel
endpoints and descriptors, so a child holds only what it was handed.  Children
die with their parent (``PR_SET_PDEATHSIG``), are always reaped (a pidfd on the
I/O loop reports the exit at once), and leaving the ``Mesh`` shuts every child
down: politely first, then ``SIGKILL`` after a timeout.

The parent is the mesh's *leader*: when a child needs a link to another child (a
port whose peer lives there arrived), it asks, and the leader makes a socketpair
and hands one end to each.

Three protections, each optional: the mesh's :class:`~workmesh.Limits` bound what
any peer may send over any link, in the parent and (carried in the invitation) in
every child; a spawn's :class:`~workmesh.Sandbox` confines the child before it
runs any of the caller's code; and liveness checks (``_liveness``) find a child
that has stopped answering, kill it and fail its node.  A child whose link the
parent cut (a frame over the limits, a broken protocol) sees its link end and
exits; it can no longer be told anything, so one still running after
``shutdown_timeout`` is killed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import EllipsisType
from typing import IO, Any, ClassVar

import msgspec

from .._channel import OneshotReceiver, Receiver, Sender, channel, oneshot
from .._channel._mpsc import sender_from_port
from .._errors import ChannelClosed, ChannelFailed, LaunchError, WorkmeshError
from .._frames import Limits
from .._ids import NodeId, new_node_id, new_port_id, node_name
from .._inspection import Forward, InspectRequest
from .._wire import Message
from ._diag import DiagnosticsServer
from ._liveness import LivenessMonitor
from ._protocol import (
    ENV_VAR,
    Connect,
    ConnectTo,
    HostRequest,
    InitialMessage,
    InspectHost,
    Invitation,
    LeaderRequest,
    Ping,
    Pong,
    Shutdown,
    StartFailure,
    encode_invitation,
)
from ._runtime import Runtime, acquire_runtime, release_runtime
from ._sandbox import Sandbox
from ._views import ProcessView, rss_kib
from ._zygote import WarmPopen, Zygote

log = logging.getLogger(__name__)

HOST_ENTRY = "workmesh._worker._serve:serve_runner"
EXIT_STATUS_WAIT = 1.0  # seconds to wait for a child's exit status after its link ends
DEFAULT_LIVENESS = 10.0


class ChildFailedToStart(WorkmeshError):
    """A child process exited, could not apply its sandbox or could not import its
    code, before it was ready.  When the child reported why, ``__cause__`` is the
    :class:`~workmesh.RemoteError` it sent, with its traceback."""


class HostFailedToStart(ChildFailedToStart, LaunchError):
    """The process of a worker host did not start (``Mesh.launch_host``)."""


def _check_liveness(value: object, where: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{where}: liveness must be a positive number of seconds or None, got {value!r}"
        )
    return float(value)


def _is_workmesh_module(name: str) -> bool:
    return name == "workmesh" or name.startswith("workmesh.")


def _describe_remote(problem: StartFailure) -> str:
    type_name = problem.error.chain[0].type_name.rpartition(".")[2]
    return f"{type_name}: {problem.error}"


def describe_status(returncode: int) -> str:
    if returncode == 0:
        return "exited successfully"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


class ChildProcess:
    """A child process of a :class:`Mesh`."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], node: NodeId) -> None:
        self.name = name
        self.pid = proc.pid
        self.node_id = node
        self.started = time.monotonic()
        self._proc = proc
        self._exit: concurrent.futures.Future[int] = concurrent.futures.Future()
        self.requests: Sender[HostRequest] | None = None
        self.ready: OneshotReceiver[StartFailure | None] | None = None
        self._pidfd: int | None = None  # a cold child's, while it is not yet reaped
        self._pidfd_lock = threading.Lock()
        # Without a pidfd, a thread waits for the exit (see _watch_by_thread); until it
        # has reaped the child, the bare pid still names it.
        self._waiter: threading.Thread | None = None
        self._by_pid = False
        # Why the mesh gave up on the child (unresponsive, cut off), once it has.
        self.failure: str | None = None
        self.liveness: float | None = None  # the liveness deadline in seconds, if any
        self.sandbox: Sandbox | None = None
        self._monitor: LivenessMonitor | None = None

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else describe_status(self.returncode)
        return f"<ChildProcess {self.name!r} pid={self.pid} {state}>"

    def __inspect__(self, req: InspectRequest) -> None:
        resp = req.respond()
        resp.field("pid", self.pid).field("node", node_name(self.node_id))
        resp.field("status", self.status)
        resp.field("liveness_s", self.liveness)
        resp.field("sandboxed", self.sandbox is not None)
        code = self.returncode
        if code is None:
            resp.field("uptime_s", round(time.monotonic() - self.started, 3))
            resp.field("rss_kib", rss_kib(self.pid))
            requests = self.requests
            if requests is not None:
                resp.child("process", Forward(requests, InspectHost))

    @property
    def status(self) -> str:
        """Running or how it ended, after why the mesh gave up on it (if it did)."""
        code = self.returncode
        state = "running" if code is None else describe_status(code)
        return state if self.failure is None else f"{self.failure}; {state}"

    @property
    def returncode(self) -> int | None:
        """None while running; else like subprocess (negative: killed by that signal)."""
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        """Wait for the exit status.  Cancelling a wait does not affect other waiters."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()

        def resolve(done: concurrent.futures.Future[int]) -> None:
            def settle() -> None:
                if not waiter.done():
                    waiter.set_result(done.result())

            with contextlib.suppress(RuntimeError):  # the waiting loop is gone
                loop.call_soon_threadsafe(settle)

        self._exit.add_done_callback(resolve)
        return await waiter

    def wait_blocking(self, timeout: float | None = None) -> int:
        return self._exit.result(timeout)

    def kill(self) -> None:
        """SIGKILL the child (only while it has not been reaped: the pid is still ours)."""
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        # Signal through the pidfd, never by a bare pid: Popen.send_signal would also
        # reap the child on this thread, behind the back of the I/O loop's watcher.
        with self._pidfd_lock:
            if self._exit.done():
                return
            if self._pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, sig)
                return
            if self._by_pid:  # not reaped yet (that happens under this lock)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
                return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)  # a warm child: its stand-in signals by pidfd

    def _watch_by_thread(self, why: OSError) -> None:
        """Wait for the exit on a thread of its own: no pidfd could be had for the child.

        The kernel may lack pidfds, a seccomp policy may refuse them, or the process
        may be out of descriptors.  The thread waits without reaping (``WNOWAIT``),
        then reaps under the lock that signals take, so a signal still never reaches
        a recycled pid.
        """
        log.info(
            "child %r (pid %d): no pidfd (%s); a thread waits for its exit",
            self.name,
            self.pid,
            why,
        )
        self._by_pid = True
        self._waiter = threading.Thread(
            target=self._wait_by_pid, name=f"workmesh-wait-{self.pid}", daemon=True
        )
        self._waiter.start()

    def _wait_by_pid(self) -> None:
        # ChildProcessError: reaped already (by Popen, before the watch began).
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with self._pidfd_lock:
            self._by_pid = False
            try:
                _pid, status = os.waitpid(self.pid, 0)
                returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                returncode = self._proc.wait()  # Popen reaped it and kept the status
        self._reaped(returncode)

    def _reaped(self, returncode: int) -> None:
        self._proc.returncode = returncode
        log.log(
            logging.INFO if returncode == 0 else logging.WARNING,
            "child %r (pid %d) %s",
            self.name,
            self.pid,
            describe_status(returncode),
        )
        if not self._exit.done():
            self._exit.set_result(returncode)


class Mesh:
    """This process's mesh.  ``async with Mesh("name") as mesh: ...``"""

    def __init__(
        self,
        name: str,
        *,
        limits: Limits | None = None,
        liveness: float | None = DEFAULT_LIVENESS,
        shutdown_timeout: float = 5.0,
    ) -> None:
        """``limits`` bound what each peer may send over each link, here and in every
        child (the defaults of :class:`~workmesh.Limits` when None).  ``liveness`` is
        the deadline, in seconds, within which each child must answer a liveness
        check (sent about every quarter of it); a child that does not is killed and
        its node fails as unresponsive.  None turns the checks off.  ``spawn`` and
        ``launch_host`` can override it per child."""
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(
                f"Mesh({name!r}): limits must be a workmesh.Limits or None, "
                f"got {type(limits).__name__}"
            )
        self.name = name
        self.limits = limits
        self.liveness = _check_liveness(liveness, f"Mesh({name!r})")
        self.shutdown_timeout = shutdown_timeout
        self.children: dict[NodeId, ChildProcess] = {}
        self._runtime: Runtime | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._diagnostics: list[DiagnosticsServer] = []

    async def serve_diagnostics(self, path: str) -> None:
        """Let other processes of this user inspect the mesh through a Unix socket.

        ``workmesh inspect PATH`` reads it.  The socket goes when the mesh does.
        """
        server = DiagnosticsServer(self, path)
        await server.start()
        self._diagnostics.append(server)

    def __inspect__(self, req: InspectRequest) -> None:
        """The whole mesh: this process, and every child (reaching into each one)."""
        resp = req.respond()
        resp.field("name", self.name)
        if self._runtime is not None:
            resp.child("process", ProcessView(self._runtime, self.name))
        for child in list(self.children.values()):
            resp.child(f"children/{child.name}-{child.pid}", child)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the Mesh is not running: use 'async with Mesh(...)'")
        return self._runtime

    async def __aenter__(self) -> Mesh:
        self._runtime = acquire_runtime()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # ----------------------------------------------------------------- spawning
    async def spawn(
        self,
        name: str,
        entry: str,
        message: Any = None,
        *,
        imports: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        stderr: IO[Any] | int | None = None,
        warm: bool = False,
        sandbox: Sandbox | None = None,
        liveness: float | EllipsisType | None = ...,
    ) -> ChildProcess:
        """Start a child that runs ``entry`` (``"module:function"``) with ``message``.

        The function receives a :class:`~workmesh.Message` (parse it to the type it
        expects); it may be ``async``.  The child exits when the function returns.

        ``warm=True`` forks the child from this Mesh's zygote, a process that has
        already imported workmesh, the entry's module and ``imports``: the child runs
        in milliseconds rather than tens of them, and is otherwise the same (exit
        status, ``kill()``, death with the parent).  The first warm spawn starts the
        zygote, preloading its own modules, and itself starts cold; later warm
        spawns wait for the zygote while it starts, and start cold (and log why)
        when it is unavailable.  A warm child runs the code the zygote imported, so
        a child that must run new code (a restart after an upgrade) must start cold,
        the default.  See :mod:`workmesh._process._zygote`.

        ``sandbox`` confines the child before it imports ``imports`` or the entry's
        module (see :class:`~workmesh.Sandbox`); if it cannot be applied the spawn
        raises :class:`ChildFailedToStart` with the child's traceback as its cause.
        A sandboxed warm spawn is forked only if the zygote imported none of its
        modules' packages (they would have run unconfined there); otherwise it
        starts cold.

        ``liveness`` overrides the mesh's liveness deadline for this child (None:
        no checks; ``...``, the default: the mesh's).
        """
        runtime = self.runtime
        if ":" not in entry:
            raise ValueError(f"entry must be 'module:function', got {entry!r}")
        if sandbox is not None and not isinstance(sandbox, Sandbox):
            raise TypeError(
                f"spawn({name!r}): sandbox must be a workmesh.Sandbox or None, "
                f"got {type(sandbox).__name__}"
            )
        deadline = (
            self.liveness
            if isinstance(liveness, EllipsisType)
            else _check_liveness(liveness, f"spawn({name!r})")
        )
        parent_sock, child_sock = socket.socketpair()
        child_id, secret = new_node_id(), os.urandom(16)
        parent_port, child_port = new_port_id(), new_port_id()
        invitation = Invitation(
            name=name,
            parent_node=runtime.node.id,
            child_node=child_id,
            parent_port=parent_port,
            child_port=child_port,
            secret=secret,
            fd=child_sock.fileno(),
            parent_pid=os.getpid(),
            sys_path=[p for p in sys.path if p],
            limits=self.limits,
            sandbox=sandbox,
        )
        try:
            proc: subprocess.Popen[bytes] | None = None
            if warm:
                proc = await self._warm_popen(
                    invitation,
                    entry=entry,
                    imports=imports,
                    env=env,
                    stderr=stderr,
                    parent_sock=parent_sock,
                )
                if proc is None:  # a fresh pair: the old one may hold a forked child's setup
                    parent_sock.close()
                    child_sock.close()
                    parent_sock, child_sock = socket.socketpair()
                    invitation = msgspec.structs.replace(invitation, fd=child_sock.fileno())
            if proc is None:
                proc = self._popen(invitation, env, stderr, child_sock)
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        child = ChildProcess(name, proc, child_id)
        child.liveness, child.sandbox = deadline, sandbox
        self.children[child_id] = child
        if isinstance(proc, WarmPopen):
            proc.when_exited(child._reaped)  # the zygote reaps it and reports its status
        else:
            self._watch_exit(child)
        # Queue the initial message first: the port must exist before the child's
        # first frame for it can arrive, and the frames wait until the link is up.
        pings = self._send_initial(
            child,
            entry=entry,
            message=message,
            imports=imports,
            parent_port=parent_port,
            child_port=child_port,
        )
        link = runtime.attach(
            child_id,
            parent_sock,
            expect_hello=secret,
            limits=self.limits,
            on_eof=lambda _conn: self._link_ended(runtime, child),
            on_cut=lambda _conn, error: self._link_cut(runtime, child, error),
        )
        # Read the child's frames on this loop: a reply wakes its caller here
        # directly, with no hand-off from the I/O thread (given back at shutdown).
        runtime.adopt(link)
        try:
            await self._until_ready(child)
        except BaseException:
            pings[0].close()
            pings[1].close()
            raise
        self._watch_liveness(child, *pings)
        log.info(
            "started child %r (pid %d, node %s%s)",
            name,
            proc.pid,
            node_name(child_id),
            ", warm" if isinstance(proc, WarmPopen) else "",
        )
        return child

    async def _until_ready(self, child: ChildProcess) -> None:
        """Wait until the child has loaded its code; raise if it could not."""
        ready, child.ready = child.ready, None
        assert ready is not None
        try:
            problem = await ready
        except (ChannelClosed, ChannelFailed):
            status = describe_status(await child.wait())
            reason = f"; {child.failure}" if child.failure is not None else ""
            raise ChildFailedToStart(
                f"child {child.name!r} (pid {child.pid}) {status} before it was ready{reason}"
            ) from None
        if problem is not None:
            status = describe_status(await child.wait())
            raise ChildFailedToStart(
                f"child {child.name!r} (pid {child.pid}) could not {problem.stage}: "
                f"{_describe_remote(problem)}; it {status}"
            ) from problem.error

    def _popen(
        self,
        invitation: Invitation,
        env: Mapping[str, str] | None,
        stderr: IO[Any] | int | None,
        child_sock: socket.socket,
    ) -> subprocess.Popen[bytes]:
        child_env = dict(os.environ if env is None else env)
        child_env[ENV_VAR] = encode_invitation(invitation)
        return subprocess.Popen(
            [sys.executable, "-m", "workmesh._process._child", invitation.name],
            stdin=subprocess.DEVNULL,
            stderr=stderr,
            env=child_env,
            pass_fds=(child_sock.fileno(),),
            close_fds=True,
            # Its own process group: a Ctrl-C aimed at the parent's terminal is the
            # parent's to handle; children go when the parent tells them, or dies.
            process_group=0,
        )

    # The zygote that forks warm children: started by the first warm spawn.
    _zygote: Zygote | None = None
    _no_zygote: str | None = None  # why the zygote could not start: warm spawns start cold

    async def _warm_popen(
        self,
        invitation: Invitation,
        *,
        entry: str,
        imports: Sequence[str],
        env: Mapping[str, str] | None,
        stderr: IO[Any] | int | None,
        parent_sock: socket.socket,
    ) -> WarmPopen | None:
        """The child forked by the zygote, or None: start it cold (logged)."""
        modules = [entry.partition(":")[0], *imports]
        sandboxed = invitation.sandbox is not None
        if self._no_zygote is not None:
            log.info("child %r starts cold: %s", invitation.name, self._no_zygote)
            return None
        if self._zygote is None:
            # A sandboxed child's modules must first run inside its sandbox, not in
            # the zygote: preload only workmesh's own then.
            preload = [m for m in modules if not sandboxed or _is_workmesh_module(m)]
            if self._start_zygote(preload):
                log.info("child %r starts cold while the zygote starts", invitation.name)
            return None
        if sandboxed:
            early = self._zygote.imported_packages(m for m in modules if not _is_workmesh_module(m))
            if early:
                log.info(
                    "sandboxed child %r starts cold: the zygote has imported %s outside "
                    "its sandbox",
                    invitation.name,
                    ", ".join(sorted(early)),
                )
                return None
        result = await self._zygote.fork(invitation, env, stderr, parent_sock)
        if isinstance(result, str):
            log.info("child %r starts cold: %s", invitation.name, result)
            return None
        return result

    def _start_zygote(self, preload: Sequence[str]) -> bool:
        if self._no_zygote is not None:
            return False
        try:
            self._zygote = Zygote(self.runtime.io, preload)
        except OSError as exc:
            # Not tried again: this Mesh's warm spawns start cold from now on.
            self._no_zygote = f"the zygote could not start: {exc}"
            log.warning("%s; warm spawns start cold", self._no_zygote)
            return False
        return True

    async def _warm_up(self, preload: Sequence[str] = ()) -> bool:
        """Start the zygote (preloading ``preload``) unless it runs; wait until it can
        fork.  False if it cannot: warm spawns then start cold."""
        if self._zygote is None and not self._start_zygote(preload):
            return False
        assert self._zygote is not None
        return await self._zygote.wait_ready()

    def _send_initial(
        self,
        child: ChildProcess,
        *,
        entry: str,
        message: Any,
        imports: Sequence[str],
        parent_port: bytes,
        child_port: bytes,
    ) -> tuple[Sender[Ping], Receiver[Pong]]:
        """Queue the child's initial message; return the parent's ends of its pings."""
        node = self.runtime.node
        requests, requests_rx = channel(HostRequest)
        leader_tx, leader_rx = channel(LeaderRequest)
        pings, pings_rx = channel(Ping)
        pongs_tx, pongs = channel(Pong)
        ready_tx, child.ready = oneshot(StartFailure | None)
        child.requests = requests
        port = node.bootstrap_port(parent_port, (child.node_id, child_port))  # type: ignore[arg-type]
        init = sender_from_port(port, InitialMessage)
        init.send(
            InitialMessage(
                name=child.name,
                entry=entry,
                payload=Message(message),
                imports=list(imports),
                requests=requests_rx,
                leader=leader_tx,
                pings=pings_rx,
                pongs=pongs_tx,
                ready=ready_tx,
            )
        )
        init.close()
        task = asyncio.get_running_loop().create_task(self._serve_leader(child, leader_rx))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pings, pongs

    def _watch_liveness(
        self, child: ChildProcess, pings: Sender[Ping], pongs: Receiver[Pong]
    ) -> None:
        if child.liveness is None:
            pings.close()  # the child's side sees the end and stops listening
            pongs.close()
            return
        runtime = self.runtime
        monitor = LivenessMonitor(
            runtime.io,
            child.liveness,
            pings,
            pongs,
            lambda reason: self._unresponsive(runtime, child, reason),
        )
        child._monitor = monitor
        child._exit.add_done_callback(lambda _done: monitor.stop())
        monitor.start()

    def _unresponsive(self, runtime: Runtime, child: ChildProcess, reason: str) -> None:
        """I/O thread: the child missed its liveness deadline.  Kill it, fail its node."""
        if child.failure is not None or child.returncode is not None:
            return
        child.failure = reason
        log.warning("child %r (pid %d) is %s; killing it", child.name, child.pid, reason)
        child.kill()  # SIGKILL ends a stopped process too
        runtime.node.fail_node(child.node_id, f"process {child.name!r} (pid {child.pid}) {reason}")

    def _link_cut(self, runtime: Runtime, child: ChildProcess, error: BaseException) -> None:
        """I/O thread: the link to the child was cut for an error (its node has failed).

        The child sees its link end, as when its parent leaves, and exits.  It can
        no longer be told anything, so one that has not gone after
        ``shutdown_timeout`` is killed.
        """
        if child._monitor is not None:
            child._monitor.stop()
        if child.failure is not None or child.returncode is not None:
            return
        child.failure = f"cut off: {error}"
        log.warning("child %r (pid %d) was cut off: %s", child.name, child.pid, error)

        def kill_if_running() -> None:
            if child.returncode is None:
                log.warning(
                    "child %r (pid %d) did not exit after it was cut off; killing it",
                    child.name,
                    child.pid,
                )
                child.kill()

        assert runtime.io.loop is not None
        timer = runtime.io.loop.call_later(self.shutdown_timeout, kill_if_running)
        child._exit.add_done_callback(lambda _done: runtime.io.call(timer.cancel))

    def _watch_exit(self, child: ChildProcess) -> None:
        io = self.runtime.io

        def start() -> None:
            try:
                pidfd = child._pidfd = os.pidfd_open(child.pid)
            except OSError as exc:
                child._watch_by_thread(exc)
                return

            def on_exit() -> None:
                assert io.loop is not None
                io.loop.remove_reader(pidfd)
                with child._pidfd_lock:
                    _pid, status = os.waitpid(child.pid, 0)
                    child._pidfd = None
                    os.close(pidfd)
                child._reaped(os.waitstatus_to_exitcode(status))

            assert io.loop is not None
            io.loop.add_reader(pidfd, on_exit)

        io.call_sync(start)

    def _link_ended(self, runtime: Runtime, child: ChildProcess) -> None:
        """The child's end of the link closed: fail its node, naming how it exited.

        The end of stream usually comes a moment before the exit status; wait for
        the status (briefly) so that failures read "killed by SIGKILL" rather than
        just "disconnected".
        """
        if child._monitor is not None:
            child._monitor.stop()
        if child.failure is not None:
            return  # its node failed when the mesh gave up on it, with the reason why
        failed = False

        def fail(reason: str) -> None:
            nonlocal failed
            if not failed:
                failed = True
                runtime.node.fail_node(child.node_id, reason)

        def exited(done: concurrent.futures.Future[int]) -> None:
            status = describe_status(done.result())
            runtime.io.call(fail, f"process {child.name!r} (pid {child.pid}) {status}")

        child._exit.add_done_callback(exited)
        assert runtime.io.loop is not None
        runtime.io.loop.call_later(EXIT_STATUS_WAIT, fail, "remote node disconnected")

    # ----------------------------------------------------------------- the leader
    async def _serve_leader(self, child: ChildProcess, requests: Receiver[LeaderRequest]) -> None:
        async for request in requests:
            if isinstance(request, ConnectTo):
                self._broker(child, NodeId(request.node))

    def _broker(self, child: ChildProcess, target_id: NodeId) -> None:
        target = self.children.get(target_id)
        if target is None or target.returncode is not None or target.requests is None:
            log.warning("child %r asked for unknown node %s", child.name, node_name(target_id))
            if child.requests is not None:
                child.requests.send(Connect(target_id))
            return
        if child.requests is None:
            return
        from .._fd import OwnedFd  # noqa: PLC0415 - only the broker needs it

        one, other = socket.socketpair()
        child.requests.send(Connect(target_id, OwnedFd(one.detach())))
        target.requests.send(Connect(child.node_id, OwnedFd(other.detach())))

    # ----------------------------------------------------------------- shutdown
    async def shutdown(self) -> None:
        """Ask every child to exit; kill those that have not within the timeout."""
        if self._runtime is None:
            return
        self._runtime.leave_homes(set(self.children))
        for server in self._diagnostics:
            await server.aclose()
        self._diagnostics.clear()
        children = [c for c in self.children.values() if c.returncode is None]
        for child in children:
            if child.requests is not None:
                child.requests.send(Shutdown())
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), self.shutdown_timeout)
            except TimeoutError:
                log.warning("child %r (pid %d) did not exit; killing it", child.name, child.pid)
                child.kill()
                await child.wait()
        for child in self.children.values():
            if child._waiter is not None:
                child._waiter.join()  # its exit is known: the thread is returning
            if child.requests is not None:
                child.requests.close()
                child.requests = None
            if child._monitor is not None:
                child._monitor.stop()
                await child._monitor.wait_stopped()
        if self._zygote is not None:  # after the children: it reports their exits
            await self._zygote.stop(self.shutdown_timeout)
            self._zygote = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runtime = None
        release_runtime()

    # ----------------------------------------------------------------- worker hosts
    # Builds a (WorkerHost, WorkerHostRunner) pair.  The worker layer sits above this
    # one and may not be imported here, so the package wires it in (workmesh/__init__).
    host_factory: ClassVar[Callable[[], tuple[Any, Any]] | None] = None

    async def launch_host(
        self,
        name: str,
        *,
        imports: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        stderr: IO[Any] | int | None = None,
        warm: bool = False,
        sandbox: Sandbox | None = None,
        liveness: float | EllipsisType | None = ...,
    ) -> Any:
        """Start a child process that serves a ``WorkerHost``; return that host.

        ``warm=True`` forks it from the mesh's zygote (milliseconds instead of a
        fresh interpreter); leave it off when the host must run freshly loaded code,
        as for a hot restart with new code.

        The child imports ``imports`` first, so their ``@register_worker`` classes
        can be launched there.  It lives until every copy of the host is gone and
        its workers have ended (or the mesh shuts down).

        ``sandbox`` and ``liveness`` are as for :meth:`spawn`; the sandbox is in
        force before ``imports`` are imported.  A host whose process does not start
        raises :class:`~workmesh.LaunchError` (also a :class:`ChildFailedToStart`).
        """
        factory = Mesh.host_factory
        if factory is None:
            raise RuntimeError("worker hosts need the worker layer: import workmesh")
        host, runner = factory()
        try:
            await self.spawn(
                name,
                HOST_ENTRY,
                runner,
                imports=imports,
                env=env,
                stderr=stderr,
                warm=warm,
                sandbox=sandbox,
                liveness=liveness,
            )
        except BaseException as exc:
            host.close()  # nothing will serve it
            if isinstance(exc, ChildFailedToStart):
                raise HostFailedToStart(
                    f"failed to launch worker host {name!r}: {exc}", cause=exc.__cause__
                ) from exc.__cause__
            raise
        return host
