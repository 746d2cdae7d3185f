"""Callers that keep pipelined calls in flight until told to stop, on tasks and threads.

Each caller owns one clone of the sender, so each is its own ordered stream.  It
keeps ``depth`` calls outstanding; when the test stops it, it issues no more, says
so, and waits for every call it made to end, one way or another.  Every call
records when it was issued and how it ended, so the test can hold the calls that
were pending at the moment of a kill to account.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import workmesh as wm

from ..helpers.chaos_children import Call


@dataclass
class Ended:
    """How one call ended: its answer, or the exception, and when (time.monotonic)."""

    issued: float
    ended: float
    answer: tuple[int, int] | None = None
    error: BaseException | None = None


@dataclass
class Record:
    """Every call's end, and a count of answers (for waiting on progress)."""

    calls: list[Ended] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ended: Ended) -> None:
        with self.lock:
            self.calls.append(ended)


class _Caller:
    """One caller: keeps ``depth`` calls in flight on its sender until stopped.

    Stopping is a handshake: ``request_stop()`` (from any thread) wakes the caller
    on its own loop; it then issues nothing more and says so (``on_quiet``), and
    only after that does it wait for the calls it made.  So once every caller is
    quiet, no call can be issued any more -- a kill that follows finds every call
    it will fail already made.
    """

    def __init__(
        self,
        sender: wm.Sender[Call],
        depth: int,
        record: Record,
        on_answer: Callable[[], None],
        on_quiet: Callable[[], None],
    ) -> None:
        self.sender = sender
        self.depth = depth
        self.record = record
        self.on_answer = on_answer
        self.on_quiet = on_quiet
        self._lock = threading.Lock()
        self._stop_wanted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Future[None] | None = None

    def request_stop(self) -> None:
        with self._lock:
            if self._stop_wanted:
                return
            self._stop_wanted = True
            loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(_settle, stopping)

    async def _one(self, n: int) -> None:
        issued = time.monotonic()
        try:
            answer = await self.sender.call(Call, n)
        except BaseException as exc:  # every ending is recorded; the test judges it
            self.record.add(Ended(issued, time.monotonic(), error=exc))
            if not isinstance(exc, Exception):
                raise
        else:
            self.record.add(Ended(issued, time.monotonic(), answer=answer))
            self.on_answer()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._loop, self._stopping = loop, stopping
            if self._stop_wanted:
                stopping.set_result(None)
        inflight: set[asyncio.Future[None]] = set()
        counter = 0
        try:
            while not stopping.done():
                while len(inflight) < self.depth:
                    task = asyncio.ensure_future(self._one(counter))
                    counter += 1
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                await asyncio.wait({*inflight, stopping}, return_when=asyncio.FIRST_COMPLETED)
            self.on_quiet()
            if inflight:
                await asyncio.wait(set(inflight))
        finally:
            self.sender.close()


class Traffic:
    """``tasks`` callers on this event loop and ``threads`` on threads of their own."""

    def __init__(self, sender: wm.Sender[Call], *, tasks: int, threads: int, depth: int) -> None:
        self.record = Record()
        self._loop = asyncio.get_running_loop()
        self._answers = 0
        self._wanted = 0
        self._enough = asyncio.Event()
        self._callers: list[_Caller] = []
        self._quiet: list[asyncio.Future[None]] = []
        self._done: list[asyncio.Future[None]] = []
        self._threads: list[threading.Thread] = []
        for n in range(tasks + threads):
            quiet: asyncio.Future[None] = self._loop.create_future()
            self._quiet.append(quiet)
            on_thread = n >= tasks
            caller = _Caller(
                sender.clone(),
                depth,
                self.record,
                self._from_thread(self._answered) if on_thread else self._answered,
                self._from_thread(_settle, quiet) if on_thread else partial(_settle, quiet),
            )
            self._callers.append(caller)
            if not on_thread:
                self._done.append(asyncio.ensure_future(caller.run()))
                continue
            done: asyncio.Future[None] = self._loop.create_future()
            self._done.append(done)
            thread = threading.Thread(
                target=self._thread_main, args=(caller, done), name=f"chaos-caller-{n}"
            )
            self._threads.append(thread)
            thread.start()

    def _from_thread(self, fn: Callable[..., None], *args: Any) -> Callable[[], None]:
        """``fn(*args)``, to be called from another thread: run on this loop."""

        def call() -> None:
            self._loop.call_soon_threadsafe(fn, *args)

        return call

    def _thread_main(self, caller: _Caller, done: asyncio.Future[None]) -> None:
        try:
            asyncio.run(caller.run())
        finally:
            self._loop.call_soon_threadsafe(_settle, done)

    def _answered(self) -> None:
        self._answers += 1
        if self._answers >= self._wanted:
            self._enough.set()

    async def answers(self, count: int) -> None:
        """Wait until ``count`` more calls have been answered."""
        self._wanted = self._answers + count
        self._enough.clear()
        if self._answers < self._wanted:
            await self._enough.wait()

    async def stop(self) -> None:
        """Stop issuing calls; returns once no caller will issue another."""
        for caller in self._callers:
            caller.request_stop()
        await asyncio.wait_for(asyncio.gather(*self._quiet), 10)

    async def finish(self, within: float) -> list[Ended]:
        """Wait for every call to end; a call still pending after ``within`` s is a hang."""
        await self.stop()
        try:
            await asyncio.wait_for(asyncio.gather(*self._done), within)
        except TimeoutError:
            pending = sum(not d.done() for d in self._done)
            raise AssertionError(
                f"{pending} caller(s) still had calls pending {within} s after the stop: a hang"
            ) from None
        for thread in self._threads:
            thread.join()
        return self.record.calls


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
