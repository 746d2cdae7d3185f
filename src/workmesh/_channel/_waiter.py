"""Wake-up objects: how a sender on any thread wakes a receiver on any thread or loop.

A waiter carries no message.  The message stays in the channel's queue until the
receiver takes it itself, so a receive that is cancelled while waiting can never
lose one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Protocol

from .._node import THREAD_HOP, note_hop


class Waiter(Protocol):
    def wake(self) -> None: ...


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AsyncWaiter:
    """Wakes a coroutine waiting on its own loop; cheap when woken from that loop."""

    __slots__ = ("fut", "loop", "thread")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.fut: asyncio.Future[None] = self.loop.create_future()
        self.thread = threading.get_ident()

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            fut = self.fut  # _resolve's steps, inline: one call fewer per wake-up
            if not fut.done():
                fut.set_result(None)
            return
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_resolve, self.fut)
            note_hop(self.loop)  # a connection's reader may move to that loop


class ThreadWaiter:
    """Blocks a plain thread until woken (a pre-acquired lock, released to wake)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # already woken
            self._lock.release()
            note_hop(THREAD_HOP)  # a connection read on a worker's loop may go home

    def wait(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))
