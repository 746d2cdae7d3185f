"""Carriers for node frames (layer L4): Unix-domain stream sockets with SCM_RIGHTS.

One :class:`IoLoop` per process -- a thread running an asyncio loop (uvloop when
it is installed) -- services every connection.  Local channel operations never
need it; only frames to and from other processes go through it.

A :class:`Connection` joins this process's node with one remote node over a
connected ``AF_UNIX``/``SOCK_STREAM`` socket:

* Reading uses ``recvmsg_into`` on a reused buffer (asyncio's own transports
  cannot receive ancillary data, and a fresh buffer per read costs an mmap in a
  young process).  Descriptors that arrive are queued in order; each frame's header
  says how many of them belong to it.
* Writing coalesces: the node tells the connection that its outbox is non-empty,
  and one flush per loop turn takes every waiting frame and sends them with as
  few ``sendmsg`` calls as possible, descriptors riding on the call that carries
  their frame's first byte.
* Reading can move to a *home loop*: the asyncio loop of the code that does the
  messaging (the Mesh's loop in a parent, the main loop in a child).  Frames are
  then read and delivered on that loop, so a coroutine waiting there for a reply
  is woken directly instead of through a hand-off from the I/O thread (see
  :meth:`Connection.adopt`).  The I/O thread keeps an eye on the socket and reads
  in the home loop's place whenever data waits unread for a grace period (the
  home loop is blocked or not running), so a blocked loop never stalls others.
* A malformed stream, an oversized frame, lost descriptors or an I/O error cut the
  connection (the error is logged) and fail every port routed through that node;
  a clean end of stream is an orderly disconnect.  Other connections carry on.
"""

from __future__ import annotations

import array
import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from ._errors import PayloadError
from ._fd import OwnedFd
from ._frames import Limits
from ._ids import NodeId, node_name
from ._node import (
    THREAD_HOP,
    LocalNode,
    ProtocolError,
    drop_owed_spin,
    owe_spin,
    owed_spins,
    watch_hops,
)
from ._wire import FrameDecoder, Inbound, ReadFrame, frame_prefix

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_BUFFER = 256 * 1024
WRITE_BATCH: Final = 256 * 1024
MAX_FDS_PER_SEND = 250  # the kernel's SCM_MAX_FD is 253
_MSG_CTRUNC: Final = int(socket.MSG_CTRUNC)  # a plain int: the flag enum's & is slow
LAZY_DELAY: Final = 0.001  # seconds housekeeping frames may wait for company
BURST_BACKSTOP: Final = 0.002  # seconds a blocked sender's queued frames may wait
HOME_CHECK = 0.002  # seconds the I/O thread looks away while the home loop reads
HOME_GRACE = 0.001  # seconds data may wait unread before the I/O thread reads it
REHOME_VOTES = 4  # reads in a row whose messages all woke one other loop: move there
# Bytes the kernel may hold for a connection in each direction (Linux caps it at
# net.core.wmem_max / rmem_max and doubles it for its bookkeeping).  The default,
# about 200 KiB, holds three 64 KiB messages: the writer and the reader then take
# turns waking each other.  Measured on a one-way stream of 64 KiB messages to a
# child: 57k -> 70k messages/s; small messages unchanged.  Memory is used only
# while messages wait in the socket.
SOCKET_BUFFER = 1 << 20
MAX_IOV: Final = 512  # below the kernel's IOV_MAX of 1024 buffers per sendmsg
_FD_SIZE: Final = array.array("i").itemsize
_ANC_SIZE: Final = socket.CMSG_SPACE(MAX_FDS_PER_SEND * _FD_SIZE)
_SMALL_FRAME: Final = 4096  # frames up to this size are copied behind their header
# A piece of a frame waiting to be written; see Connection._out.
_Buffer = bytes | memoryview  # memoryview: the unwritten rest of a piece written in part
_Piece = _Buffer | tuple[bytes, list[OwnedFd]]


# Spinning for an answer: see Connection._spin.  The budget comes from the
# environment, in microseconds; 0 turns spinning off.
SPIN_ENV = "WORKMESH_SPIN_US"
SPIN_DEFAULT_US = 100
SPIN_MAX_US = 10_000
SPIN_BACKOFF_MAX: Final = 64  # writes a run of failed spins may make without spinning
# Polls between offers of the CPU to any other thread that is ready to run on it:
# with more busy processes than CPUs, a spinner may be holding the very CPU its
# peer needs to answer.  Measured, four children on two CPUs (quick runs, pure):
# p99 0.9-1.9 ms without, 0.47-0.52 ms with; a lone round trip unchanged.
SPIN_YIELD_EVERY: Final = 16
# Spins a coroutine may run in place (see Connection.spin_in_place) before the loop
# must take a turn.
IN_PLACE_RUN = 16


def spin_budget_ns(value: str | None, cpus: int) -> int:
    """The spin budget in ns from the environment's ``value`` (None: not set).

    No spinning with fewer than two CPUs to run on: the spinner would hold the very
    CPU its peer needs.  A value that is not a whole number of microseconds within
    0..SPIN_MAX_US is reported and the default used.
    """
    us = SPIN_DEFAULT_US
    if value is not None and value.strip():
        try:
            us = int(value)
        except ValueError:
            us = -1
        if not 0 <= us <= SPIN_MAX_US:
            log.warning(
                "%s must be a whole number of microseconds from 0 to %d, got %r; using %d",
                SPIN_ENV,
                SPIN_MAX_US,
                value,
                SPIN_DEFAULT_US,
            )
            us = SPIN_DEFAULT_US
    return us * 1000 if cpus >= 2 else 0


SPIN_NS = 0


def spin_from_environment() -> None:
    """Set the spin budget from this process's environment as it is now: at import,
    and again in a child forked from a zygote once it has taken on its own
    environment (the zygote imported this module under the Mesh's)."""
    global SPIN_NS  # noqa: PLW0603 - one process-wide setting, read from the environment
    SPIN_NS = spin_budget_ns(os.environ.get(SPIN_ENV), len(os.sched_getaffinity(0)))


spin_from_environment()


def _raise_buffers(sock: socket.socket) -> None:
    """Ask for SOCKET_BUFFER each way, never for less than the socket has."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # best effort: the kernel may refuse or cap it
            if sock.getsockopt(socket.SOL_SOCKET, option) < 2 * SOCKET_BUFFER:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed (an optional speed-up)."""
    try:
        # An optional speed-up; without the extra installed, mypy cannot see it.
        import uvloop  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


_get_ident: Final = threading.get_ident  # (Final: no module lookups in the compiled build)


def _unwatch(loop: Any, fd: int, *, reading: bool) -> None:
    """Stop watching ``fd`` on ``loop`` for reading (else writing).

    The loop is typed ``Any`` on purpose: asyncio's ``remove_reader`` returns a
    bool, uvloop's returns None, and the compiled build checks the declared
    return type of every call -- even one whose result is dropped.
    """
    if reading:
        loop.remove_reader(fd)
    else:
        loop.remove_writer(fd)


class IoLoop:
    """A thread running the event loop that services this process's connections."""

    def __init__(self, name: str = "workmesh-io") -> None:
        self._ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()
        # on_loop() runs at every write, from any thread; reading Thread.ident (a
        # property in Python) made it about 1,400 instructions in the compiled build.
        ident = self.thread.ident
        assert ident is not None  # started
        self._ident: int = ident

    def _run(self) -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self.loop is not None
        return self.loop

    def on_loop(self) -> bool:
        return _get_ident() == self._ident

    def call(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop thread, soon."""
        if self.on_loop():
            self._loop.call_soon(fn, *args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def run(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call_sync(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the loop thread and wait for its result."""
        if self.on_loop():
            return fn()

        async def invoke() -> T:
            return fn()

        return self.run(invoke()).result(timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already closed
                self._loop.call_soon_threadsafe(self._loop.stop)
            if not self.on_loop():
                self.thread.join()


class Connection:
    """A node-to-node link over one connected Unix stream socket."""

    # The home loop's queue of ready callbacks, when it shows one (asyncio's loop
    # does, uvloop's does not), looked up once per home: in the compiled build a
    # getattr() with a default that finds nothing raises and catches an
    # AttributeError, twice per call on uvloop (measured: see performance.md).
    _home_queue: collections.deque[Any] | None = None

    def __init__(
        self,
        io: IoLoop,
        node: LocalNode,
        peer: NodeId,
        sock: socket.socket,
        *,
        expect_hello: bytes = b"",
        send_hello: bytes = b"",
        limits: Limits | None = None,
        on_closed: Callable[[Connection, BaseException | None], None] | None = None,
        on_eof: Callable[[Connection], None] | None = None,
    ) -> None:
        self.io = io
        self.node = node
        self.peer = peer
        self.sock = sock
        self.on_closed = on_closed
        # Who fails the node after an orderly end of stream (say, once a child's exit
        # status is known); by default it is failed at once as "disconnected".
        self.on_eof = on_eof
        self._hello = expect_hello
        self.limits = limits = limits if limits is not None else Limits()
        self._decoder = FrameDecoder(limits.max_frame, limits.max_fds)
        self._inbound = Inbound(limits)
        self._rbuf = bytearray(READ_BUFFER)
        self._rview = memoryview(self._rbuf)
        self._fds: deque[OwnedFd] = deque()
        # What waits to be written, in order: each piece of a frame as it is (bytes,
        # or a memoryview of the unwritten rest of the first), or ``(piece, fds)``
        # for a frame's first piece when descriptors go with it.  Plain immutable
        # pieces, not a container per piece: a fast sender can queue thousands of
        # frames here, and the garbage collector walks every container that lives
        # that long, again and again.  Measured on a one-way stream of 64 KiB
        # messages (the sending loop queues far ahead of the socket): see
        # docs/performance.md.
        self._out: deque[_Piece] = deque()
        if send_hello:
            self._out.append(send_hello)
        self._flush_scheduled = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._burst_loop: asyncio.AbstractEventLoop | None = None  # see _notify
        self._holding = False  # frames of this turn wait for it to end
        self._burst_ending = False  # _end_burst is scheduled on _burst_loop
        self._burst_mark = 0  # _home_reads when the burst began (home loop only)
        self._backstop_armed = False
        self._wlock = threading.RLock()
        self._writing = False  # the I/O thread waits for the socket to drain
        # Reading, decoding and delivering happen under _rlock, on the I/O thread or
        # on the home loop (lock order: _rlock before _wlock).  See adopt().  Only
        # writers may hold _wlock: a flush turned away while it is held is repeated
        # by the holder, and the node does not ask twice.
        self._rlock = threading.RLock()
        self._broken = False  # a read failed on the home loop; close() is on its way
        self._home: asyncio.AbstractEventLoop | None = None
        self._home_thread = ""  # the name of the thread running the home loop
        self._base: asyncio.AbstractEventLoop | None = None  # the loop that adopted it
        self._moving: asyncio.AbstractEventLoop | None = None  # _take_home is on its way
        self._vote_for: object = None  # the loop the last reads' messages woke
        self._votes = 0
        self._home_watching = False  # the home loop's selector has the socket
        self._home_reads = 0  # turns of the home loop that looked at the socket
        self._home_lazy: asyncio.TimerHandle | None = None
        self._io_watching = False  # the I/O loop's selector has the socket
        self._io_seen = 0  # _home_reads when the I/O thread last looked
        self._io_suspect = False  # data waited once already with no home progress
        self._io_pause: asyncio.TimerHandle | None = None
        self._spin_due = False  # a spin for an answer is due on the home loop
        self._spin_queued_on: asyncio.AbstractEventLoop | None = None  # _spin_turn's loop
        self._in_place_run = 0  # spins run in place since that loop's last turn for us
        self._spin_skips = 0  # writes left to make without spinning (backing off)
        self._spin_backoff = 0
        self._spin_mark = 0  # _home_reads when the spin became due
        self._probe: Any = None  # a poll object on the socket, made at the first spin
        # Diagnostics: spins begun, those that found data, and those that a
        # coroutine about to park ran in place.
        self.spins = self.spin_reads = self.spins_in_place = 0
        self.closed = False
        self.error: BaseException | None = None

    @property
    def home(self) -> asyncio.AbstractEventLoop | None:
        """The loop that reads this connection in the I/O thread's place, if any."""
        return self._home

    @property
    def read_on(self) -> str:
        """The name of the thread that reads this connection now (diagnostics)."""
        return self._home_thread if self._home is not None else self.io.thread.name

    @property
    def base(self) -> asyncio.AbstractEventLoop | None:
        """The loop that adopted this connection (it may read elsewhere for a while)."""
        return self._base

    @property
    def queued_segments(self) -> int:
        """Pieces of frames waiting to be written (diagnostics)."""
        return len(self._out)

    def __repr__(self) -> str:
        return f"<Connection to {node_name(self.peer)}{' closed' if self.closed else ''}>"

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Begin servicing the socket (call on the loop thread)."""
        self.sock.setblocking(False)
        _raise_buffers(self.sock)
        self._io_watch()
        self.node.listen_homes(self._home_withdrawn)
        self.node.connect(
            self.peer, self._notify, self._notify_lazy, max_frame=self.limits.max_frame
        )
        if self._out:
            self._flush()

    def close(self, error: BaseException | None = None) -> None:
        """Cut the connection (loop thread).  ``error`` None means an orderly end."""
        # Any read in progress on the home loop finishes first (lock order: _rlock,
        # then _wlock), and no thread may be inside sendmsg on this socket meanwhile.
        with self._rlock, self._wlock:
            if self.closed:
                return
            self.closed = True
            self.error = error
            self.node.listen_homes(self._home_withdrawn, stop=True)
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            if self._io_pause is not None:
                self._io_pause.cancel()
                self._io_pause = None
            fd = self.sock.fileno()
            if fd >= 0:
                if self._io_watching:
                    _unwatch(self.io._loop, fd, reading=True)
                    self._io_watching = False
                _unwatch(self.io._loop, fd, reading=False)
            self._close_socket()
            for piece in self._out:
                if isinstance(piece, tuple):
                    for owned in piece[1]:
                        owned.close()
            self._out.clear()
            while self._fds:
                self._fds.popleft().close()
        if error is None:
            if self.on_eof is not None:
                self.on_eof(self)
            else:
                self.node.disconnect(self.peer)
        else:
            log.error("connection to %s cut: %s", node_name(self.peer), error)
            self.node.fail_node(self.peer, f"connection failed: {error}", error)
        if self.on_closed is not None:
            self.on_closed(self, error)

    def _close_socket(self) -> None:
        """Close the socket, or have the home loop close it once it has let go of it.

        A selector must not watch a descriptor that is closed under it (the number
        could be reused), and only the home loop's own thread may unregister it.
        """
        home = self._home
        if home is not None and self._home_watching:
            # Until then the peer must still see the end of the stream at once.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            try:
                home.call_soon_threadsafe(self._home_close)
            except RuntimeError:  # the home loop is closed, and its selector with it
                self.sock.close()
            return
        self._home = None  # no loop watches the socket: nobody reads it any more
        self.sock.close()

    def drain_blocking(self, timeout: float) -> bool:
        """Write out everything queued, blocking up to ``timeout`` s (process exit)."""
        with self._wlock:
            if self.closed:
                return True
            self._take_outbox()
            self.sock.settimeout(timeout)
            try:
                while self._out:
                    self._send_batch()
            except OSError as exc:
                log.warning("could not flush to %s before exit: %s", node_name(self.peer), exc)
                return False
            finally:
                self.sock.setblocking(False)
            return True

    # ----------------------------------------------------------------- writing
    # Frames are written by the thread that produced them, so a request costs no hop
    # to the I/O thread.  One thread writes at a time (the write lock); a thread that
    # finds it taken leaves its frames in the node's outbox, and the writer looks
    # again after letting go, so none is stranded.  Frames produced on the I/O thread
    # itself (acknowledgements, forwarded events) are flushed once per loop turn.
    # When the socket is full, the I/O thread waits for it to drain and takes over.

    def _notify(self) -> None:
        """The node has frames for the peer (called on any thread)."""
        if self.io.on_loop():
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.io.call(self._flush)
            return
        loop = asyncio._get_running_loop()
        if loop is None:  # a plain thread: write now
            self._flush()
            return
        # A coroutine that sends several messages in one turn of its loop (a
        # stream) gets one write for all of them: the first is written at once (a
        # lone request waits for nothing), the rest wait for the turn to end.
        # Measured on a small-message stream: one write per ~hundreds of messages
        # instead of one each.  Should the loop block before its turn ends, the
        # I/O thread writes them after BURST_BACKSTOP.
        #
        # On the home loop the end of the turn is only scheduled once a frame is
        # held: a read of this link on that loop since the burst began proves a
        # new turn (a request after its predecessor's reply), which writes at once.
        # Measured on a small Rpc round trip, that spares a loop turn per message
        # on each side.
        burst = self._burst_loop
        if burst is loop:
            if (
                not self._burst_ending
                and self._home is loop
                and self._burst_mark != self._home_reads
            ):
                self._burst_mark = self._home_reads
                self._flush()
                self._spin_soon(loop)
                return
            if self._holding:  # the node says the held batch has grown: write it
                self._holding = False
                self._flush()
                return
            self._holding = True
            if not self._burst_ending:
                self._burst_ending = True
                loop.call_soon(self._end_burst)
            if not self._backstop_armed:
                self._backstop_armed = True
                self.io._loop.call_soon_threadsafe(self._arm_backstop)
            return
        self._flush()
        # Take the burst over unless another loop has frames held for its turn's end
        # (a home loop that only marked its burst holds nothing).
        if burst is None or not self._burst_ending or burst.is_closed():
            self._burst_loop = loop
            if self._home is loop:
                self._burst_mark = self._home_reads
            else:
                self._burst_ending = True
                loop.call_soon(self._end_burst)
        if self._home is loop:
            self._spin_soon(loop)

    # ----------------------------------------------------------------- spinning
    # A frame written from the home loop is most often a request or an answer, and
    # what comes back (the answer, the next request) usually follows within tens of
    # microseconds.  Left alone, the loop would block in its selector and be woken by
    # the kernel when it arrives -- which, when the peer runs on another CPU, costs
    # more than the whole exchange: ~17 µs each way on the project's 2-CPU machine
    # (a blocking socketpair ping-pong takes 42 µs across CPUs, 9 µs with both
    # processes on one).  So, once the loop has nothing else ready, it polls this
    # socket for up to SPIN_NS before letting the loop block, and reads what arrives
    # at once.  Measured, a small call to a child: 77 -> 30 µs compiled, 100 -> 53
    # µs pure, at the price of the waiting side's CPU while it spins.
    #
    # A spin that finds nothing backs off: the next 1, 3, 7 ... SPIN_BACKOFF_MAX
    # writes do not spin, until one finds its answer in time.  So a link whose
    # answers come slowly, or whose peer cannot run because the CPUs are taken,
    # costs a spin now and then, not one per message.  The loop's other work waits
    # for the spin: no longer than SPIN_NS, and never when callbacks are already
    # ready (asyncio's loop says so; uvloop's does not, and gets the bound alone).
    # Every SPIN_YIELD_EVERY polls the spinner offers its CPU to other threads.

    def _spin_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        """A frame just went out from the home loop ``loop``: spin for the answer?"""
        if SPIN_NS == 0 or (self._spin_due and self._spin_queued_on is loop):
            return
        if self._spin_skips:
            self._spin_skips -= 1
            return
        self._spin_due = True
        self._spin_mark = self._home_reads
        if self._home_queue is not None:
            # A coroutine that parks on this loop first may run it: on a loop that
            # shows what is ready only (see spin_in_place).  On uvloop's, owing it
            # would cost each receive about to park a check for nothing.
            owe_spin(self)
        if self._spin_queued_on is not loop:
            self._spin_queued_on = loop
            loop.call_soon(self._spin_turn, loop)

    def _may_spin(self, loop: asyncio.AbstractEventLoop) -> bool:
        return not self.closed and not self._broken and self._home is loop and self._home_watching

    def _spin_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop's turn for the spin _spin_soon made due (unless one ran in place)."""
        if self._spin_queued_on is not loop:
            return  # reading moved to another loop, which has a turn of its own
        self._spin_queued_on = None
        self._in_place_run = 0
        if owed_spins:
            drop_owed_spin(self)
        if self._spin_due:
            self._spin(loop)

    def _spin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._spin_due = False
        if not self._may_spin(loop):
            return
        if self._home_queue:  # other callbacks are ready: they go first
            return
        self._spin_now(loop)

    # A coroutine about to park on a channel runs the due spin in its place
    # (spin_before_park in _node): one whose answer comes within the spin then goes
    # on at once, where the loop would have taken a turn to spin and another to run
    # it.  Measured (callgrind, the calling thread of a small call to a plain child,
    # pure build): see docs/performance.md.  Only on a loop that shows its queue of
    # ready callbacks (asyncio's; uvloop's does not), only while nothing but the
    # loop's own turn for the spin waits there, and at most IN_PLACE_RUN times
    # between two turns of the loop for this connection: a coroutine whose every
    # call is answered in place would otherwise keep the loop from its timers and
    # its other sockets.

    def spin_in_place(self) -> None:
        """A coroutine on the home loop is about to park: run the due spin now?"""
        loop = self._home
        if (
            not self._spin_due
            or self._in_place_run >= IN_PLACE_RUN
            or loop is None
            or asyncio._get_running_loop() is not loop
        ):
            return
        ready = self._home_queue
        if ready is None or len(ready) > (1 if self._spin_queued_on is loop else 0):
            # Other work is ready (besides the loop's turn for this spin), or the
            # loop does not say (uvloop's): let the coroutine park.
            return
        self._spin_due = False
        if not self._may_spin(loop):
            return
        self._in_place_run += 1
        if self._spin_now(loop):
            self.spins_in_place += 1

    def _spin_now(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Poll the socket for the answer, reading what comes; whether a spin began."""
        if self._home_reads != self._spin_mark:
            return False  # the loop has read from the socket since the write: no need
        if self._holding:
            # Frames of this turn wait for its end (_end_burst, scheduled after this
            # spin): an answer to them cannot come before they go.  That write spins.
            return False
        probe = self._probe
        if probe is None:
            probe = self._probe = select.poll()
            probe.register(self.sock.fileno(), select.POLLIN)
        self.spins += 1
        clock = time.monotonic_ns
        deadline = clock() + SPIN_NS
        polls = 0
        found = False
        while True:
            while not probe.poll(0):
                polls += 1
                if polls % SPIN_YIELD_EVERY == 0:
                    os.sched_yield()
                if clock() >= deadline:
                    if not found:
                        self._spin_backoff = min(2 * self._spin_backoff + 1, SPIN_BACKOFF_MAX)
                        self._spin_skips = self._spin_backoff
                    return True
            if not found:
                found = True
                self.spin_reads += 1
                self._spin_backoff = 0
            self._home_readable()
            # A large frame read in part: its rest is being written now, so keep
            # polling for it rather than sleep until it has all come -- unless what
            # was read moved reading elsewhere or ended the connection.
            if not self._decoder.pending or not self._may_spin(loop):
                return True

    def _end_burst(self) -> None:
        """The sending loop finished the turn in which it wrote: write the rest."""
        loop = self._burst_loop
        self._burst_loop = None
        self._burst_ending = False
        self._holding = False
        self._flush()
        if loop is not None and self._home is loop:
            self._spin_soon(loop)  # as after a lone write

    def _arm_backstop(self) -> None:
        if not self.closed:
            self.io._loop.call_later(BURST_BACKSTOP, self._backstop)

    def _backstop(self) -> None:
        self._backstop_armed = False
        self._holding = False
        self._flush()

    def _notify_lazy(self) -> None:
        """Only housekeeping frames wait: send them with the next frame, or soon.

        In a request/reply exchange the acknowledgements and close echoes that the
        I/O thread produces ride along with the next request instead of costing a
        write (and a wake-up of the peer's I/O thread) each: measured, a third of
        the writes of a cross-process call.  A timer bounds the wait.
        """
        if self.io.on_loop():
            if self._lazy_timer is None and not self.closed:
                self._lazy_timer = self.io._loop.call_later(LAZY_DELAY, self._lazy_flush)
            return
        home = self._home
        if home is not None and asyncio._get_running_loop() is home:
            if self._home_lazy is None and not self.closed:
                self._home_lazy = home.call_later(LAZY_DELAY, self._home_lazy_flush)
            return
        self._flush()

    def _lazy_flush(self) -> None:
        self._lazy_timer = None
        self._flush()

    def _home_lazy_flush(self) -> None:
        self._home_lazy = None
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._wlock.acquire(blocking=False):
            try:
                self._flush_locked()
            finally:
                self._wlock.release()
            if self.closed or self._writing or not self.node.has_outbox(self.peer):
                return

    def _flush_locked(self) -> None:
        if self.closed:
            return
        self._take_outbox()
        if not self._writing:
            self._write()

    def _take_outbox(self) -> None:
        out = self._out
        for data, fds in self.node.take_outbox(self.peer):
            if isinstance(data, tuple):  # a large value left in place: its pieces go as they are
                before, value, after = data
                size = len(before) + len(value) + len(after)
                first = frame_prefix(size, len(fds), len(before)) + before
                out.append((first, fds) if fds else first)
                out.append(value)
                out.append(after)
                continue
            header = frame_prefix(len(data), len(fds))
            if len(data) <= _SMALL_FRAME:
                first = header + data
                out.append((first, fds) if fds else first)
            else:
                out.append((header, fds) if fds else header)
                out.append(data)

    def _write(self) -> None:
        """Send what is queued (write lock held); hand over to the I/O thread if full."""
        try:
            while self._out:
                if self._send_batch() == 0:
                    break
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.io.call(self._end_after_reading)  # the peer went away: an end, not a failure
            return
        except OSError as exc:
            self.io.call(self.close, exc)
            return
        if self._out:
            self._writing = True
            self.io.call(self._start_writer)

    def _end_after_reading(self) -> None:
        """The peer went away while we wrote to it: take in what it sent, then end.

        Everything it sent before going is queued on our side of the socket by now;
        closing at once would drop it (a child's last messages -- the close of a
        channel, say -- lost because a write of ours found it gone first).
        """
        self._read_available(to_the_end=True)
        if not self.closed and not self._broken:
            self.close(None)

    def _start_writer(self) -> None:
        if not self.closed:
            self.io._loop.add_writer(self.sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        with self._wlock:
            if self.closed:
                return
            self._take_outbox()
            self._writing = False
            _unwatch(self.io._loop, self.sock.fileno(), reading=False)
            self._write()
        # As in _flush: frames queued while we held the lock had their flush turned
        # away, and the node signals only when its outbox was empty; look again.
        if not self._writing and self.node.has_outbox(self.peer):
            self._flush()

    def _send_batch(self) -> int:
        """One sendmsg of as many queued pieces as fit; returns bytes written."""
        out = self._out
        buffers: list[_Buffer] = []
        fds: list[OwnedFd] = []
        size = count = 0
        data: _Buffer
        for piece in out:
            if size >= WRITE_BATCH or count >= MAX_IOV:
                break
            if isinstance(piece, tuple):
                data, more = piece
                if len(fds) + len(more) > MAX_FDS_PER_SEND:
                    break
                fds += more
            else:
                data = piece
            buffers.append(data)
            size += len(data)
            count += 1
        anc = []
        if fds:
            numbers = array.array("i", [fd.fileno() for fd in fds])
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, numbers.tobytes())]
        sent = self.sock.sendmsg(buffers, anc)
        if fds:
            # The descriptors went with this call, even if not all of the data did;
            # the kernel holds its own references now.
            for owned in fds:
                owned.close()
            for index in range(count):
                out[index] = buffers[index]
        self._consume(sent)
        return sent

    def _consume(self, sent: int) -> None:
        out = self._out
        while sent and out:
            piece = out[0]
            assert not isinstance(piece, tuple)  # its descriptors went with this call
            if len(piece) <= sent:
                sent -= len(piece)
                out.popleft()
            else:
                out[0] = memoryview(piece)[sent:]
                sent = 0

    # ----------------------------------------------------------------- home loop
    # Without a home loop the I/O thread reads every frame and hands each message to
    # the loop or thread waiting for it: a thread hop per message, on each side of a
    # round trip.  adopt() moves reading to the loop that does the messaging.  The
    # I/O thread still watches the socket, but once it sees the home loop making
    # progress it looks away, and looks again at the progress every HOME_CHECK
    # without watching meanwhile, for as long as the home loop keeps reading; a
    # check that finds none has it watch again.  If data then waits HOME_GRACE with
    # no home progress (the loop is blocked, or stopped between runs), it reads in
    # its place until the home loop comes back.  (Watching again at every check
    # instead woke the I/O thread for the next frame each time and cost two
    # changes to its watch list: measured on small round trips to a child, the
    # I/O threads' CPU per call fell to a third without it; see
    # docs/performance.md.)  Either reader holds _rlock, so frames are
    # decoded and delivered once and in order.  Measured on a small Rpc round trip to
    # a child whose worker is asyncio, with both ends homed: see docs/performance.md.
    #
    # Reading follows the messages.  A home loop that delivers message after message
    # to a coroutine parked on another loop wakes that loop through its selector each
    # time (a thread hop: ~25 µs of a round trip to an asyncio worker, whose loop
    # runs on its own thread).  So each read notes where its wakes went (note_hop):
    # after REHOME_VOTES reads in a row that woke one other loop and nothing else,
    # reading moves there, if that loop offered to read (LocalNode.offer_home: a
    # worker's loop, while the worker runs) or is the adopting loop (the base).
    # Reads whose messages all woke plain threads (sync workers) move it back to the
    # base.  A loop that withdraws gives reading back to the base, or to the I/O
    # thread.

    def adopt(self) -> None:
        """Read on the running loop (call on its thread) instead of the I/O thread.

        The loop's owner must call :meth:`leave_home` on it before the loop stops
        for good; until then, the socket is only closed on that loop.
        """
        loop = asyncio.get_running_loop()
        with self._rlock:
            if self.closed or self._base is not None:
                return
            self._base = loop
            if self._home is None:
                self._watch_home(loop)

    def leave_home(self) -> None:
        """The adopting loop lets go (call on its thread): reading goes to the I/O thread."""
        loop = asyncio.get_running_loop()
        with self._rlock:
            if self._base is loop:
                self._base = None
        self._let_go(loop)

    def _home_withdrawn(self, loop: object) -> None:
        """A loop withdrew its offer to read (node listener, on that loop's thread)."""
        if loop is self._home or loop is self._moving:
            assert isinstance(loop, asyncio.AbstractEventLoop)
            self._let_go(loop)

    def _let_go(self, loop: asyncio.AbstractEventLoop) -> None:
        """``loop`` (the running one) stops reading: back to the base, or the I/O thread."""
        with self._rlock:
            base = self._base
            if self._home is not loop:
                if self._moving is loop:  # it was about to read: _take_home will decline
                    self._moving = None
                    if self._home is None and base is not None and base is not loop:
                        self._move_to(base)
                return
            waited = self._release_home()
            if self.closed:
                self.sock.close()  # close() left it to us
                return
        self.io.call(self._io_watch)
        if waited:
            self._flush()  # housekeeping frames that waited on this loop's timer
        if base is not None and base is not loop:
            self._move_to(base)

    def _release_home(self) -> bool:
        """The home loop stops reading (on its thread, _rlock held).  True when
        housekeeping frames waited on its timer: the caller sends them."""
        self._home_unwatch()
        self._home = None
        if owed_spins:
            drop_owed_spin(self)  # a coroutine parking here later has nothing to run
        lazy, self._home_lazy = self._home_lazy, None
        if lazy is None:
            return False
        lazy.cancel()
        return True

    def _may_read(self, loop: object) -> bool:
        """Whether ``loop`` may be given reading: the adopting loop, or one that offered."""
        return loop is self._base or self.node.home_offered(loop)

    def _watch_home(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop`` (the running one) the reader (_rlock held, no home yet)."""
        self._home = loop
        self._home_thread = threading.current_thread().name
        self._home_queue = getattr(loop, "_ready", None)  # asyncio's queue of ready callbacks
        loop.add_reader(self.sock.fileno(), self._home_readable)
        self._home_watching = True

    def _vote(self, hops: list[object]) -> None:
        """A read's messages woke loops elsewhere (``hops``): move reading there? (_rlock)"""
        target = hops[0]
        for other in hops:
            if other is not target:
                self._votes = 0
                return
        if target is THREAD_HOP:
            # Messages for plain threads (sync workers): no thread can read in their
            # place, and the adopting loop reads fastest (it is uvloop's in a child).
            target = self._base
            if target is None or target is self._home:
                self._votes = 0
                return
        if not self._may_read(target):
            self._votes = 0
            return
        if target is self._vote_for:
            self._votes += 1
            if self._votes < REHOME_VOTES:
                return
        else:
            self._vote_for, self._votes = target, 1
            return
        self._vote_for, self._votes = None, 0  # holding no loop that may close
        assert isinstance(target, asyncio.AbstractEventLoop)
        home = self._home
        if home is not None:
            if asyncio._get_running_loop() is not home:
                return  # the I/O thread reads in place of a blocked home: stay
            if self._release_home():
                self.io.call(self._flush)
            self.io.call(self._io_watch)
        self._move_to(target)

    def _move_to(self, target: asyncio.AbstractEventLoop) -> None:
        """Have ``target`` take reading over when it next runs (any thread)."""
        with self._rlock:
            moving = self._moving
            if moving is not None and not moving.is_closed():
                return  # on its way already (a closed loop dropped its callback)
            if self.closed:
                return
            if not self._may_read(target):
                # It withdrew since it was chosen (its loop may close before it could
                # decline): the base reads instead, if there is one.
                if self._base is None:
                    self._moving = None
                    return
                target = self._base
            self._moving = target
        try:
            target.call_soon_threadsafe(self._take_home, target)
        except RuntimeError:  # that loop is closed: the I/O thread reads meanwhile
            with self._rlock:
                if self._moving is target:
                    self._moving = None

    def _take_home(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._rlock:
            if self._moving is loop:
                self._moving = None
            if self.closed or self._broken or self._home is not None:
                return
            if not self._may_read(loop):
                return  # it withdrew meanwhile
            self._watch_home(loop)

    def _home_close(self) -> None:
        """The connection closed while the home loop watched it (home loop)."""
        with self._rlock:
            self._home_unwatch()
            self._home = None
            self.sock.close()

    def _home_readable(self) -> None:
        self._home_reads += 1
        if self._broken or self.closed:
            self._home_unwatch()
            return
        self._read_available()

    def _home_unwatch(self) -> None:
        with self._rlock:
            if self._home_watching and self._home is not None:
                _unwatch(self._home, self.sock.fileno(), reading=True)
                self._home_watching = False

    def _io_watch(self) -> None:
        """The I/O thread watches the socket (again)."""
        if self._io_pause is not None:
            self._io_pause.cancel()  # a look-away cut short (the home loop let go)
            self._io_pause = None
        if not self.closed and not self._io_watching:
            self.io._loop.add_reader(self.sock.fileno(), self._io_readable)
            self._io_watching = True

    def _io_look_away(self, delay: float) -> None:
        """Stop watching the socket; look at the home loop's progress after ``delay``."""
        _unwatch(self.io._loop, self.sock.fileno(), reading=True)
        self._io_watching = False
        self._io_pause = self.io._loop.call_later(delay, self._io_look_again)

    def _io_look_again(self) -> None:
        """The end of a look-away: while the home loop reads, stay away; else watch."""
        self._io_pause = None
        if (
            not self.closed
            and self._home is not None
            and self._home_watching
            and self._home_progressed()  # it read meanwhile: no need to watch
        ):
            self._io_pause = self.io._loop.call_later(HOME_CHECK, self._io_look_again)
            return
        self._io_watch()

    def _home_progressed(self) -> bool:
        """Whether the home loop has read since the I/O thread last looked; if so,
        the I/O thread notes how far it got and trusts it again."""
        reads = self._home_reads
        if reads == self._io_seen:
            return False
        self._io_seen = reads
        self._io_suspect = False
        return True

    def _io_readable(self) -> None:
        if self._home is not None and self._home_watching:
            if self._home_progressed():  # the home loop is reading: leave it to it
                self._io_look_away(HOME_CHECK)
                return
            if not self._io_suspect:  # it may be about to: give it a grace period
                self._io_suspect = True
                self._io_look_away(HOME_GRACE)
                return
            # Data has waited a grace period with no home progress: read it here.
        self._read_available()

    # ----------------------------------------------------------------- reading
    def _read_available(self, *, to_the_end: bool = False) -> None:
        """Read what the socket holds: a burst, or everything up to the end of stream."""
        with self._rlock:
            if self.closed or self._broken:
                return
            try:
                if to_the_end:
                    while self._read_once() > 0 and not self.closed:
                        pass
                    return
                for _ in range(16):  # drain a burst, but let other connections run too
                    n = self._read_once()
                    if n < len(self._rbuf):
                        break
            except BlockingIOError:
                pass
            except (ProtocolError, PayloadError) as exc:
                self._cut(exc)
            except ConnectionResetError:
                self._cut(None)
            except OSError as exc:
                self._cut(exc)

    def _cut(self, error: BaseException | None) -> None:
        """Close for a read's outcome: here on the I/O thread, else by it, soon."""
        if self.io.on_loop():
            self.close(error)
            return
        self._broken = True  # no more reads: the stream is at its end or corrupt
        self._home_unwatch()  # a level-triggered end of stream would spin the loop
        self.io.call(self.close, error)

    def _read_once(self) -> int:
        decoder = self._decoder
        room = decoder.room()
        if room is None:
            n, ancdata, flags, _addr = self.sock.recvmsg_into([self._rview], _ANC_SIZE)
        else:  # the rest of a large frame goes straight into its own buffer
            n, ancdata, flags, _addr = self.sock.recvmsg_into([room, self._rview], _ANC_SIZE)
        self._take_fds(ancdata)
        if flags & _MSG_CTRUNC:
            raise ProtocolError("descriptors were lost in transit (control data truncated)")
        if n == 0:
            if decoder.pending:
                raise ProtocolError("stream ended inside a frame")
            self._cut(None)
            return 0
        frames = []
        rest = n
        if room is not None:
            direct = min(n, len(room))
            room.release()
            frames = decoder.filled(direct)
            rest = n - direct
        if rest:
            data = self._rview[:rest]
            if self._hello:
                data = self._check_hello(data)
            frames += decoder.feed(data)
        if frames:
            self._deliver(frames)
        if decoder.failed is not None:
            raise decoder.failed
        return n

    def _take_fds(self, ancdata: list[tuple[int, int, bytes]]) -> None:
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                numbers = array.array("i")
                numbers.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
                self._fds.extend(OwnedFd(fd) for fd in numbers)

    def _check_hello(self, data: memoryview) -> memoryview:
        want = self._hello
        got = bytes(data[: len(want)])
        if not want.startswith(got):
            raise ProtocolError(
                f"peer {node_name(self.peer)} did not present the expected invitation secret"
            )
        self._hello = want[len(got) :]
        return data[len(got) :]

    def _deliver(self, frames: list[tuple[ReadFrame, int]]) -> None:
        batch: list[tuple[ReadFrame, list[OwnedFd]]] = []
        for data, nfds in frames:
            if nfds > len(self._fds):
                for _data, fds in batch:  # the frames before the bad one go nowhere
                    for fd in fds:
                        fd.close()
                raise ProtocolError(
                    f"frame from {node_name(self.peer)} names {nfds} descriptors "
                    f"but only {len(self._fds)} arrived"
                )
            # Most frames carry no descriptor: a fresh empty list costs far less
            # than a comprehension over an empty range.
            batch.append((data, [self._fds.popleft() for _ in range(nfds)] if nfds else []))
        inbound = self._inbound
        hops: list[object] = []
        watch_hops(hops)
        try:
            self.node.receive_many(self.peer, batch, inbound)
        finally:
            watch_hops(None)
        if hops:
            self._vote(hops)
        elif self._votes:
            self._votes = 0
        pending = inbound.pending()
        if pending > inbound.max_pending:
            raise ProtocolError(
                f"{node_name(self.peer)} has sent {pending} bytes that wait unread here, "
                f"above the limit of {inbound.max_pending} pending bytes per connection"
            )
