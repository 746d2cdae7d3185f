"""The warm route to a child process: a zygote that forks children ready-made.

A cold child (``python -m workmesh._process._child``) spends most of its start-up
importing workmesh.  ``Mesh.spawn(..., warm=True)`` forks the child instead, from
the Mesh's *zygote*: a process the Mesh started from ``sys.executable`` that has
imported workmesh, the child module and the declared modules, and then waits.

Design
------
* **Start.**  The first warm spawn of a Mesh starts its zygote (``python -c
  "...; main()"`` of this module), handing it one end of a ``SOCK_SEQPACKET`` control
  socket and, in its environment, the Mesh's pid, its ``sys.path`` and the modules
  to preload (that spawn's entry module and ``imports``).  That first child starts
  cold, so a warm spawn is never slower than a cold one; later warm spawns wait for
  the zygote while it is still starting.  ``Mesh._warm_up(preload)`` starts it
  ahead of time and waits until it is ready.  The zygote asks to be killed when the
  Mesh dies (``PR_SET_PDEATHSIG``), imports, freezes its heap (``gc.freeze()``:
  a child's collections then neither scan nor copy the inherited objects), and
  reports ``Ready``.
* **Only a single-threaded process forks.**  Before each fork the zygote counts its
  threads in ``/proc/self/task`` (which sees threads started by C code too) and
  checks that no workmesh node exists in it.  If an import started a thread or
  made a node, the zygote refuses, and the Mesh starts children cold from then on.
* **A spawn request** is ``Fork(seq)`` with the child's socket and the stdout and
  stderr a cold child would get, passed by ``SCM_RIGHTS``.  The invitation, the
  environment and the working directory do *not* go through the zygote: the Mesh
  writes them on the child's own socket, ahead of the link traffic, and the forked
  child reads them first.  So the zygote never holds a child's secret, port ids or
  environment, and no child can find a sibling's in the memory it inherited.
* **The forked child** sets ``PR_SET_PDEATHSIG`` itself (it is not inherited
  across ``fork``) and exits at once if the zygote is already gone; closes what it
  inherited from the zygote (the control socket, its siblings' pidfds); takes its
  stdout and stderr, its own process group (as a cold child's ``process_group=0``),
  environment and working directory; then runs exactly what a cold child runs:
  :func:`workmesh._process._child.run_invitation`.
* **Dying with the Mesh** is a chain of kernel-delivered SIGKILLs: the Mesh dies,
  so the zygote dies, so every forked child dies.  No link can be skipped: each
  process checks, after asking, that its parent is still the one it asked about.
* **Reaping and exit status.**  A forked child is the zygote's child, so the zygote
  reaps it: it polls a pidfd per child and, when one exits, calls ``waitpid`` on it
  and sends ``Exited(pid, returncode)``.  Right after the fork it sends the Mesh
  ``Forked(seq, pid)`` with a pidfd for the child, opened before the child could be
  reaped; the Mesh signals the child through it, so a signal can never reach a
  recycled pid.  Statuses come in the order the zygote saw them, so a reused pid
  cannot be confused either.  :class:`WarmPopen` carries all this behind the parts
  of :class:`subprocess.Popen` that :class:`~workmesh._process.ChildProcess` uses,
  so ``pid``, ``wait()``, ``kill()`` and ``returncode`` behave as for a cold child.
* **If the zygote dies** (killed, or out of memory), the Mesh reaps it, logs it and
  starts later warm spawns cold.  Its children die with it; each one whose status
  it had not reported is reported, once its pidfd says it is gone, as killed by
  SIGKILL (the zygote took the true status with it).
* **Stopping.**  ``Mesh.shutdown`` stops the children first, then shuts the
  write side of the control socket: the zygote kills and reaps any child still
  there, reports it, and exits; the Mesh reaps the zygote.

A sandboxed child (``Mesh.spawn(..., sandbox=...)``) applies its sandbox right
after the fork, before it imports its own modules.  Modules the zygote preloaded
ran their import-time code in the zygote, unconfined; so a zygote started by a
sandboxed spawn preloads only workmesh, and a sandboxed warm spawn whose modules
share a top-level package with the zygote's preload list starts cold instead.

Limits.  A warm child runs the code the zygote imported: a child that must run
new code (a hot restart after an upgrade) must start cold, which is the default.
Interpreter start-up settings (``PYTHON*`` variables, locale, hash seed) are the
zygote's; the zygote's own environment (the Mesh's when it started) stays in its
memory, so a child that must not see the Mesh's environment should start cold.  A
preloaded module runs its import-time code in the zygote, before the child sets up
logging: one that configures logging at import wins over the child's format.
"""

from __future__ import annotations

import array
import asyncio
import base64
import concurrent.futures
import contextlib
import gc
import importlib
import importlib.util
import itertools
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, NoReturn, TypeVar

import msgspec

from .._transport import IoLoop, spin_from_environment
from ._protocol import Invitation

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG_VAR = "WORKMESH_ZYGOTE"
START_TIMEOUT = 30.0  # preloading the caller's modules may be slow; past this, start cold
REPLY_TIMEOUT = 10.0  # a fork takes a millisecond: no answer means the zygote is stuck
# The setup is written before the fork, so it must fit in the socket's buffer.
MAX_SETUP = 64 * 1024
_MAX_MESSAGE = 4096
_FD_SIZE = array.array("i").itemsize
_SETUP_HEADER = struct.Struct(">I")
# Imported by every zygote: what a cold child imports before its entry module runs.
_BASE_PRELOAD = ("workmesh", "workmesh._process._child", "concurrent.futures.thread")


# ----------------------------------------------------------------- the protocol
class Config(msgspec.Struct, frozen=True, array_like=True):
    """Mesh to zygote, in its environment: who to die with, what to import."""

    fd: int
    parent_pid: int
    sys_path: list[str]
    preload: list[str]


class Fork(msgspec.Struct, frozen=True, tag="fork", array_like=True):
    """Mesh to zygote: fork a child.  Descriptors: its socket, then stdout, stderr if set."""

    seq: int
    stdout: bool
    stderr: bool


class Ready(msgspec.Struct, frozen=True, tag="ready", array_like=True):
    """Zygote to Mesh: imports done; ``problem`` says why it cannot fork ("" if it can)."""

    pid: int
    problem: str
    not_imported: list[str]


class Forked(msgspec.Struct, frozen=True, tag="forked", array_like=True):
    """Zygote to Mesh: request ``seq`` is process ``pid`` (a pidfd for it rides along)."""

    seq: int
    pid: int


class Refused(msgspec.Struct, frozen=True, tag="refused", array_like=True):
    """Zygote to Mesh: request ``seq`` was not forked, because of ``reason``."""

    seq: int
    reason: str


class Exited(msgspec.Struct, frozen=True, tag="exited", array_like=True):
    """Zygote to Mesh: child ``pid`` was reaped (returncode as in :mod:`subprocess`)."""

    pid: int
    returncode: int


class Setup(msgspec.Struct, frozen=True, array_like=True):
    """Mesh to forked child, first on the child's own socket: who it is and where."""

    invitation: Invitation
    environ: dict[bytes, bytes]
    cwd: bytes


ZygoteMessage = Ready | Forked | Refused | Exited

_config_decoder = msgspec.msgpack.Decoder(Config)
_fork_decoder = msgspec.msgpack.Decoder(Fork)
_message_decoder = msgspec.msgpack.Decoder(ZygoteMessage)
_setup_decoder = msgspec.msgpack.Decoder(Setup)
_encoder = msgspec.msgpack.Encoder()


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _send(sock: socket.socket, message: msgspec.Struct, fds: Sequence[int] = ()) -> None:
    ancillary = []
    if fds:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sock.sendmsg([_encoder.encode(message)], ancillary)


def _receive(sock: socket.socket, max_fds: int, flags: int = 0) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it; b"" at the end of the stream."""
    data, ancillary, msg_flags, _addr = sock.recvmsg(
        _MAX_MESSAGE, socket.CMSG_SPACE(max_fds * _FD_SIZE), flags
    )
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
    if msg_flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
        _close_all(fds)
        raise ValueError("a control message or its descriptors were truncated")
    return data, list(fds)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# ----------------------------------------------------------------- the zygote process
def main() -> NoReturn:
    """The zygote: preload, report ``Ready``, then fork on request until the Mesh leaves."""
    # Here, not at the top: a Mesh imports this module but has no use for the child's.
    from ._child import _die_with_parent  # noqa: PLC0415

    config = _config_decoder.decode(base64.b64decode(os.environ.pop(CONFIG_VAR)))
    _die_with_parent(config.parent_pid)
    code = 0
    try:
        ctl = socket.socket(fileno=config.fd)
        if sys.path and not sys.path[0]:  # -c put "" there; -m (as a cold child) the cwd
            sys.path[0] = os.getcwd()
        for path in config.sys_path:
            if path not in sys.path:
                sys.path.append(path)
        not_imported = _preload(config.preload)
        # Everything imported so far is shared with every child; keep the collector
        # off those pages so that children neither scan nor copy them.
        gc.freeze()
        problem = _fork_problem()
        _send(ctl, Ready(os.getpid(), problem, not_imported))
        if not problem:
            _Server(ctl).serve()
    except BaseException:  # the zygote reports everything, then exits
        traceback.print_exc()
        code = 1
    # No interpreter shutdown: a preloaded module may have left work for it (atexit,
    # non-daemon threads) that belongs to no one here.
    os._exit(code)


def _preload(modules: Sequence[str]) -> list[str]:
    """Import ``modules``; return those that failed (the child will report why)."""
    wanted = list(_BASE_PRELOAD)
    if importlib.util.find_spec("uvloop") is not None:
        wanted.append("uvloop")  # the child's I/O loop uses it when it is installed
    failed = []
    for name in [*wanted, *modules]:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):  # the forked child imports it again, and reports
            failed.append(name)
    return failed


def _fork_problem() -> str:
    """Why this process must not fork ("" if it may)."""
    from .. import _node  # noqa: PLC0415 - preloaded by now
    from . import _runtime  # noqa: PLC0415

    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        # A fork copies only the calling thread: locks other threads held stay held.
        return f"the zygote has {threads} threads (an import started one)"
    if _node._process_node is not None or _runtime._runtime is not None:
        return "an import created a workmesh node in the zygote; each child needs its own"
    return ""


class _Server:
    """The zygote's loop: fork on request, reap children, report their exits."""

    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.pid = os.getpid()
        # poll(), not epoll: a forked child must inherit no descriptor it has to know about.
        self.poller = select.poll()
        self.poller.register(ctl.fileno(), select.POLLIN)
        self.children: dict[int, int] = {}  # pidfd -> pid

    def serve(self) -> None:
        try:
            while True:
                for fd, _events in self.poller.poll():
                    if fd != self.ctl.fileno():
                        self._reap(fd)
                    elif not self._handle_request():
                        return
        finally:
            self._kill_children()

    def _handle_request(self) -> bool:
        data, fds = _receive(self.ctl, 3)
        if not data and not fds:
            return False  # the Mesh shut its side: stop
        try:
            request = _fork_decoder.decode(data)
        except msgspec.DecodeError as exc:
            _close_all(fds)
            sys.stderr.write(f"workmesh zygote: bad request: {exc}\n")
            return True
        self._fork(request, fds)
        return True

    def _fork(self, request: Fork, fds: list[int]) -> None:
        expected = 1 + request.stdout + request.stderr
        problem = _fork_problem()
        if not problem and len(fds) != expected:
            problem = f"{len(fds)} descriptors came with the request, not {expected}"
        if problem:
            _close_all(fds)
            _send(self.ctl, Refused(request.seq, problem))
            return
        rest = iter(fds[1:])
        stdout = next(rest) if request.stdout else None
        stderr = next(rest) if request.stderr else None
        for stream in (sys.stdout, sys.stderr):  # so that a child does not repeat them
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            _close_all(fds)
            _send(self.ctl, Refused(request.seq, f"fork failed: {exc}"))
            return
        if pid == 0:
            _become_child(
                self.pid,
                self.ctl,
                list(self.children),
                sock_fd=fds[0],
                stdout=stdout,
                stderr=stderr,
            )
        _close_all(fds)
        # Opened before this process could reap the child: it names exactly that child.
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)
        _send(self.ctl, Forked(request.seq, pid), [pidfd])

    def _reap(self, pidfd: int) -> None:
        pid = self.children.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _pid, status = os.waitpid(pid, 0)
        _send(self.ctl, Exited(pid, os.waitstatus_to_exitcode(status)))

    def _kill_children(self) -> None:
        """Leave no child behind: kill, reap and (if the Mesh still listens) report each."""
        for pidfd in self.children:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        for pidfd, pid in self.children.items():
            _pid, status = os.waitpid(pid, 0)
            os.close(pidfd)
            with contextlib.suppress(OSError):
                _send(self.ctl, Exited(pid, os.waitstatus_to_exitcode(status)))
        self.children.clear()


def _become_child(
    zygote_pid: int,
    ctl: socket.socket,
    sibling_pidfds: list[int],
    *,
    sock_fd: int,
    stdout: int | None,
    stderr: int | None,
) -> NoReturn:
    """In the forked child: become what a cold child would be, then run it.  Never returns:
    whatever happens, this process must not go back to the zygote's loop."""
    from . import _child  # noqa: PLC0415 - preloaded

    try:
        _child._die_with_parent(zygote_pid)
        os.setpgid(0, 0)  # a Ctrl-C aimed at the Mesh's terminal is not for us
        ctl.close()
        _close_all(sibling_pidfds)
        _take_stdio(1, stdout)
        _take_stdio(2, stderr)
        setup = _read_setup(sock_fd)
        os.environb.clear()
        os.environb.update(setup.environ)
        spin_from_environment()  # read at import, under the zygote's environment
        os.chdir(setup.cwd)
        sys.argv = [_child.__file__ or "", setup.invitation.name]  # as in a cold child
        _child.run_invitation(msgspec.structs.replace(setup.invitation, fd=sock_fd))
    except BaseException:  # report, and exit as a failed child
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    os._exit(1)


def _take_stdio(target: int, fd: int | None) -> None:
    if fd is None:  # closed in the Mesh, so closed in a cold child too
        with contextlib.suppress(OSError):
            os.close(target)
    elif fd != target:
        os.dup2(fd, target)
        os.close(fd)


def _read_setup(fd: int) -> Setup:
    (size,) = _SETUP_HEADER.unpack(_read_exactly(fd, _SETUP_HEADER.size))
    return _setup_decoder.decode(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    # Exactly: what follows on this socket is the link to the parent.
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the Mesh closed the socket before the setup arrived")
        data += chunk
    return bytes(data)


# ----------------------------------------------------------------- the Mesh's side
class WarmPopen(subprocess.Popen[bytes]):
    """A child the zygote forked, behind the parts of Popen that ChildProcess uses.

    It is not this process's child: the zygote reaps it and reports its status.
    Signals go through a pidfd, so they cannot reach a recycled pid.
    """

    def __init__(self, pid: int, pidfd: int) -> None:
        # No Popen.__init__: that would start a process, and this one exists already.
        self.args = ["<forked by the workmesh zygote>"]
        self.pid = pid
        self.returncode = None
        self.stdin = self.stdout = self.stderr = None
        # Popen.__del__ must not waitpid() what is the zygote's child, not ours.
        self._child_created = False
        self._pidfd = pidfd
        self._pidfd_lock = threading.Lock()
        self._exit: concurrent.futures.Future[int] = concurrent.futures.Future()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        try:
            return self._exit.result(timeout)
        except TimeoutError:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0) from None

    def send_signal(self, sig: int) -> None:
        with self._pidfd_lock:  # the pidfd is closed under this lock once the exit is known
            if self._pidfd >= 0:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, sig)

    def when_exited(self, callback: Callable[[int], object]) -> None:
        """Call ``callback(returncode)`` once the exit is known (at once if it is)."""
        self._exit.add_done_callback(lambda done: callback(done.result()))

    def _report(self, returncode: int) -> None:
        with self._pidfd_lock:
            if self._pidfd < 0:
                return
            os.close(self._pidfd)
            self._pidfd = -1
            self.returncode = returncode
        self._exit.set_result(returncode)


async def _await(future: concurrent.futures.Future[T]) -> T:
    """Await a thread-safe future; cancelling the wait leaves the future alone."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[T] = loop.create_future()

    def settle(done: concurrent.futures.Future[T]) -> None:
        if not waiter.done():
            waiter.set_result(done.result())

    def resolve(done: concurrent.futures.Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the waiting loop is gone
            loop.call_soon_threadsafe(settle, done)

    future.add_done_callback(resolve)
    return await waiter


class Zygote:
    """A Mesh's handle on its zygote process (see the module docstring).

    Runs on two threads: the Mesh's event loop calls :meth:`fork`, :meth:`wait_ready`
    and :meth:`stop`; the I/O loop reads the control socket and watches the zygote's
    pidfd.  ``_lock`` guards the state they share.
    """

    def __init__(self, io: IoLoop, preload: Sequence[str]) -> None:
        self._io = io
        self._lock = threading.Lock()
        self._ready: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._pending: dict[int, concurrent.futures.Future[WarmPopen | str]] = {}
        self._children: dict[int, WarmPopen] = {}  # pid -> child, until its exit is reported
        self._seq = itertools.count()
        self._unusable = ""  # why warm spawns start cold now ("" while they need not)
        self._stopping = False
        self.preload = tuple(preload)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = Config(theirs.fileno(), os.getpid(), [p for p in sys.path if p], list(preload))
        env = dict(os.environ)
        env[CONFIG_VAR] = base64.b64encode(_encoder.encode(config)).decode("ascii")
        try:
            self._proc = subprocess.Popen(
                # -c, not -m: the package imports this module, and runpy would warn
                # about running it a second time as __main__.
                [sys.executable, "-c", "from workmesh._process._zygote import main; main()"],
                stdin=subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
                process_group=0,  # like a cold child: the terminal's Ctrl-C is the Mesh's
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self._proc.pid
        ours.setblocking(False)
        self._ctl: socket.socket | None = ours
        self._pidfd = -1  # the zygote's, for the I/O loop; closed (under _lock) once reaped
        try:
            io.call_sync(self._watch)
        except BaseException:
            self._proc.kill()  # nothing will watch it: end it here
            self._proc.wait()
            ours.close()
            raise
        log.debug("started the zygote (pid %d), preloading %s", self.pid, list(preload))

    def __repr__(self) -> str:
        return f"<Zygote pid={self.pid}{' unusable: ' + self._unusable if self._unusable else ''}>"

    def imported_packages(self, modules: Iterable[str]) -> set[str]:
        """Those of ``modules`` whose top-level package the zygote may have imported.

        It imported its preload list and whatever that imports, including every
        parent package on the way; sharing a top-level package with the preload
        list is taken to mean "may have run here already".
        """
        preloaded = {name.partition(".")[0] for name in self.preload}
        return {name for name in modules if name.partition(".")[0] in preloaded}

    # ------------------------------------------------------------ event-loop side
    async def wait_ready(self) -> bool:
        """Wait until the zygote can fork; False if it cannot (then spawns start cold)."""
        if not self._ready.done():
            try:
                await asyncio.wait_for(_await(self._ready), START_TIMEOUT)
            except TimeoutError:
                self._give_up(f"it was not ready after {START_TIMEOUT} s")
                self._kill()  # it has forked nothing yet: nothing dies with it
        with self._lock:
            return not self._unusable

    async def fork(
        self,
        invitation: Invitation,
        env: Mapping[str, str] | None,
        stderr: IO[Any] | int | None,
        parent_sock: socket.socket,
    ) -> WarmPopen | str:
        """Fork the child ``invitation`` describes; a str says why not (start it cold).

        ``parent_sock`` is the Mesh's end of the child's socket; the caller passes
        the child's end in ``invitation.fd``.  The setup written on ``parent_sock``
        stays there if this fails, so a cold child needs a fresh pair.
        """
        if not await self.wait_ready():
            return self._unusable
        stdio = _stdio_fds(stderr)
        if isinstance(stdio, str):
            return stdio
        stdout_fd, stderr_fd, opened = stdio
        try:
            try:
                setup = _encode_setup(invitation, env)
            except (OSError, msgspec.EncodeError) as exc:
                return f"cannot pass the setup on: {exc}"
            if len(setup) > MAX_SETUP:
                return f"the setup ({len(setup)} bytes, mostly environment) is over {MAX_SETUP}"
            # Written first, so that the child can read it as soon as it exists.
            parent_sock.sendall(setup)
            fds = [invitation.fd] + [fd for fd in (stdout_fd, stderr_fd) if fd is not None]
            request = Fork(next(self._seq), stdout_fd is not None, stderr_fd is not None)
            waiter: concurrent.futures.Future[WarmPopen | str] = concurrent.futures.Future()
            with self._lock:
                if self._unusable or self._ctl is None:
                    return self._unusable or "the zygote is gone"
                self._pending[request.seq] = waiter
                try:
                    _send(self._ctl, request, fds)
                except OSError as exc:
                    del self._pending[request.seq]
                    return f"cannot reach the zygote: {exc}"
        finally:
            _close_all(opened)
        try:
            return await asyncio.wait_for(_await(waiter), REPLY_TIMEOUT)
        except TimeoutError:
            self._give_up(f"it did not answer a request in {REPLY_TIMEOUT} s")
            self._abandon(request.seq, waiter)
            return self._unusable
        except asyncio.CancelledError:
            self._abandon(request.seq, waiter)
            raise

    def _abandon(self, seq: int, waiter: concurrent.futures.Future[WarmPopen | str]) -> None:
        with self._lock:
            if self._pending.pop(seq, None) is not None:
                return  # the I/O loop will kill the child if it comes
        result = waiter.result()  # resolved under the lock, so done
        if isinstance(result, WarmPopen):
            result.kill()  # nobody will hold it; its exit still gets reported and reaped

    async def stop(self, grace: float) -> None:
        """Stop the zygote (it kills any child it still has) and reap it; kill it if it
        has not gone after ``grace`` seconds."""
        with self._lock:
            self._stopping = True
            self._unusable = self._unusable or "the Mesh is shutting down"
            if self._ctl is not None:
                with contextlib.suppress(OSError):
                    self._ctl.shutdown(socket.SHUT_WR)  # it sees the end and leaves
        if not (self._ready.done() and self._ready.result()):
            self._kill()  # not ready: it has forked nothing, and may be busy importing
        try:
            await asyncio.wait_for(_await(self._stopped), grace)
        except TimeoutError:
            log.warning("the zygote (pid %d) did not exit; killing it", self.pid)
            self._kill()
            await _await(self._stopped)

    def _kill(self) -> None:
        # Through the pidfd, under the lock _on_exit closes it under: never a reused pid.
        with self._lock:
            if self._pidfd >= 0:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def _give_up(self, reason: str) -> None:
        with self._lock:
            first = not self._unusable
            self._unusable = self._unusable or reason
        if first:
            log.warning(
                "warm start unavailable: %s (zygote pid %d); warm spawns start cold",
                reason,
                self.pid,
            )
        self._set_ready(False)

    def _set_ready(self, ready: bool) -> None:
        with self._lock:
            if not self._ready.done():
                self._ready.set_result(ready)

    # ------------------------------------------------------------ I/O-loop side
    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self._io.loop is not None
        return self._io.loop

    def _watch(self) -> None:
        # The zygote is our child and not yet reaped, so the pidfd names exactly it.
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_exit)
        assert self._ctl is not None
        self._loop.add_reader(self._ctl.fileno(), self._on_control)

    def _on_control(self) -> None:
        ctl = self._ctl
        while ctl is not None:
            try:
                data, fds = _receive(ctl, 1, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            except (OSError, ValueError) as exc:
                log.error("reading from the zygote (pid %d): %s", self.pid, exc)
                data, fds = b"", []
            if not data and not fds:
                # The zygote is going; _on_exit finishes up once it has gone.
                self._loop.remove_reader(ctl.fileno())
                return
            self._dispatch(data, fds)

    def _dispatch(self, data: bytes, fds: list[int]) -> None:
        try:
            message = _message_decoder.decode(data)
        except msgspec.DecodeError as exc:
            log.error("bad message from the zygote (pid %d): %s", self.pid, exc)
            _close_all(fds)
            return
        if isinstance(message, Forked) and len(fds) == 1:
            self._forked(message, fds[0])
            return
        _close_all(fds)
        if isinstance(message, Exited):
            with self._lock:
                child = self._children.pop(message.pid, None)
            if child is not None:
                child._report(message.returncode)
        elif isinstance(message, Ready):
            if message.not_imported:
                log.debug("the zygote could not import %s", message.not_imported)
            if message.problem:
                self._give_up(f"it cannot fork: {message.problem}")
            self._set_ready(True)  # a no-op after _give_up
        elif isinstance(message, Refused):
            self._give_up(f"it refused to fork: {message.reason}")
            self._resolve(message.seq, message.reason)
        else:
            log.error("the zygote (pid %d) sent %r without its pidfd", self.pid, message)

    def _forked(self, message: Forked, pidfd: int) -> None:
        child = WarmPopen(message.pid, pidfd)
        with self._lock:
            self._children[message.pid] = child
        if not self._resolve(message.seq, child):
            # The spawn that asked for it was cancelled or timed out: nobody will use it.
            log.debug("killing pid %d: the spawn that asked for it is gone", message.pid)
            child.kill()

    def _resolve(self, seq: int, result: WarmPopen | str) -> bool:
        with self._lock:
            waiter = self._pending.pop(seq, None)
            if waiter is not None:
                waiter.set_result(result)  # under the lock: see _abandon
        return waiter is not None

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        with self._lock:
            os.close(self._pidfd)
            self._pidfd = -1
        returncode = self._proc.wait()  # it has exited: this only reaps it
        self._on_control()  # what it said before it died
        with self._lock:
            ctl, self._ctl = self._ctl, None
            orphans = list(self._children.values())
            self._children.clear()
            pending = list(self._pending.values())
            self._pending.clear()
            for waiter in pending:
                waiter.set_result("the zygote is gone")
            stopping = self._stopping
        if ctl is not None:
            self._loop.remove_reader(ctl.fileno())
            ctl.close()
        if stopping:
            log.debug("the zygote (pid %d) %s", self.pid, _describe(returncode))
        else:
            self._give_up(f"the zygote {_describe(returncode)}")
        self._set_ready(False)
        for child in orphans:
            self._watch_orphan(child)
        self._stopped.set_result(None)

    def _watch_orphan(self, child: WarmPopen) -> None:
        # Its parent died, so PR_SET_PDEATHSIG is killing it; its status died with the
        # zygote.  Report it killed once the pidfd says it is gone.
        pidfd = child._pidfd

        def gone() -> None:
            self._loop.remove_reader(pidfd)
            child._report(-signal.SIGKILL)

        self._loop.add_reader(pidfd, gone)


def _stdio_fds(stderr: IO[Any] | int | None) -> tuple[int | None, int | None, list[int]] | str:
    """The stdout and stderr a cold child would get, and the fds opened here for them."""
    stdout = 1 if _is_open(1) else None
    if stderr is None:
        return stdout, 2 if _is_open(2) else None, []
    if isinstance(stderr, int):
        if stderr == subprocess.DEVNULL:
            devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            return stdout, devnull, [devnull]
        if stderr == subprocess.STDOUT:
            return stdout, stdout, []
        if stderr < 0:
            return "stderr=subprocess.PIPE needs a cold child"
        return stdout, stderr, []
    return stdout, stderr.fileno(), []


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _encode_setup(invitation: Invitation, env: Mapping[str, str] | None) -> bytes:
    # As the cold route: the Mesh's environment now, unless the caller gave one.
    environ = (
        dict(os.environb)
        if env is None
        else {os.fsencode(key): os.fsencode(value) for key, value in env.items()}
    )
    body = _encoder.encode(Setup(invitation, environ, os.getcwdb()))
    return _SETUP_HEADER.pack(len(body)) + body
