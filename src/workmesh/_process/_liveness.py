"""Liveness checks: telling a stopped or wedged child from a busy one.

A child that is stopped (``SIGSTOP``), deadlocked, or stuck in native code that
never lets go of the interpreter would otherwise be waited on for ever: its
socket stays open, so nothing fails.  So the parent pings each child on a channel
of its own and expects an answer within the *deadline*.

* **Who answers.**  The child's I/O thread, not the thread that runs its entry
  function: a child whose code keeps its own event loop or a thread busy is alive
  and answers; a child that cannot run its I/O thread within the deadline cannot
  take part in the mesh either.
* **When.**  One ping at a time, about every quarter of the deadline (measured
  from one ping to the next).  Pinging starts once the child is ready.
* **Where.**  Both ends run on their process's I/O loop, so a busy event loop of
  the caller's delays neither the pings nor the verdict.
* **A stalled parent is not a dead child.**  If the parent's own loop checks a
  deadline much later than it was due (the parent was stopped, or starved), the
  ping is repeated instead: the child gets a fresh deadline.
* **The verdict.**  No answer within the deadline: the monitor calls its
  ``on_unresponsive`` with the reason; the Mesh kills the child and fails its
  node with that reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

from .._channel import Receiver, Sender
from .._errors import ChannelClosed, ChannelFailed
from .._transport import IoLoop
from ._protocol import Ping, Pong

log = logging.getLogger(__name__)

PINGS_PER_DEADLINE = 4


def unresponsive_reason(deadline: float) -> str:
    return f"unresponsive: no answer to a liveness check within {deadline:g} s"


class LivenessMonitor:
    """Pings one child from the I/O loop; reports it when it stops answering.

    ``start``, ``stop`` and ``wait_stopped`` may be called from any thread; the
    rest runs on the I/O loop.
    """

    def __init__(
        self,
        io: IoLoop,
        deadline: float,
        pings: Sender[Ping],
        pongs: Receiver[Pong],
        on_unresponsive: Callable[[str], None],
    ) -> None:
        self.deadline = deadline
        self.interval = deadline / PINGS_PER_DEADLINE
        self._io = io
        self._pings = pings
        self._pongs = pongs
        self._on_unresponsive = on_unresponsive
        self._seq = 0
        self.answers = 0  # pings answered in time (diagnostics)
        self._sent_at = 0.0
        self._answered = True
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False
        self.done: concurrent.futures.Future[None] = concurrent.futures.Future()

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self._io.loop is not None
        return self._io.loop

    # ------------------------------------------------------------ any thread
    def start(self) -> None:
        def begin() -> None:
            if self._stopped:
                return
            self._reader = self._loop.create_task(self._read())
            self._reader.add_done_callback(lambda _task: self._finish())
            self._ping()

        self._io.call(begin)

    def stop(self) -> None:
        """Stop pinging and let go of both channels (idempotent)."""
        self._io.call(self._stop)

    async def wait_stopped(self) -> None:
        """Wait until the monitor has let go of everything on the I/O loop."""
        await asyncio.wait([asyncio.wrap_future(self.done)])

    # ------------------------------------------------------------ I/O loop
    def _ping(self) -> None:
        if self._stopped:
            return
        self._seq += 1
        self._answered = False
        self._sent_at = self._loop.time()
        self._pings.send(Ping(self._seq))
        self._timer = self._loop.call_later(self.deadline, self._expired, self._seq)

    async def _read(self) -> None:
        try:
            while True:
                pong = await self._pongs.recv()
                self._pong(pong.seq)
        except (ChannelClosed, ChannelFailed):
            pass  # the child is gone, or stopped answering on purpose: nothing to watch
        finally:
            self._stop()

    def _pong(self, seq: int) -> None:
        if self._stopped or seq != self._seq or self._answered:
            return  # an answer to an earlier ping, repeated after a stall
        self._answered = True
        self.answers += 1
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self._sent_at + self.interval - self._loop.time())
        self._timer = self._loop.call_later(delay, self._ping)

    def _expired(self, seq: int) -> None:
        if self._stopped or seq != self._seq or self._answered:
            return
        late = self._loop.time() - (self._sent_at + self.deadline)
        if late > self.interval:
            # This loop ran late, not (only) the child: ask again before judging it.
            log.debug("liveness check ran %.3f s late; asking again", late)
            self._ping()
            return
        self._stop()
        self._on_unresponsive(unresponsive_reason(self.deadline))

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pings.close()
        reader = self._reader
        if reader is None:
            self._finish()  # never started
        elif asyncio.current_task(self._loop) is not reader:
            reader.cancel()  # parked in recv; it lets go of the receiver when it ends

    def _finish(self) -> None:
        self._pongs.close()
        if not self.done.done():
            self.done.set_result(None)


async def answer_pings(pings: Receiver[Ping], pongs: Sender[Pong]) -> None:
    """The child's side, run on its I/O loop: answer every ping until the parent stops."""
    try:
        while True:
            ping = await pings.recv()
            pongs.send(Pong(ping.seq))
    except (ChannelClosed, ChannelFailed):
        pass
    finally:
        pings.close()
        pongs.close()
