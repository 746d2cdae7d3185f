"""Shared fixtures: running a coroutine, and checking that no test leaves anything behind.

Every test is checked: no thread, file descriptor or child process it started may
outlive it.  (A check that fails names what was left.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _children_left() -> str | None:
    """A description of a child process still here (running or unreaped), or None."""
    try:
        pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return None
    if pid == 0:
        return "a child process is still running"
    return f"child {pid} exited (status {status}) but nobody reaped it"


@pytest.fixture(scope="session", autouse=True)
def _warm_process_wide_state() -> None:
    """Things the first user of a library opens once per process, not leaks.

    libuv (under uvloop) keeps a pipe from its first loop on.
    """
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - optional

        uvloop.new_event_loop().close()


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    before, fds = set(threading.enumerate()), _fd_count()
    yield
    # A thread whose work is over may still be returning (a worker thread closes its
    # event stream as its last act): wait for each to end, and fail on any that
    # does not.
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        thread.join(timeout=5)
    alive = [t for t in started if t.is_alive()]
    assert not alive, f"threads leaked: {alive}"
    assert _fd_count() == fds, f"fds leaked: {sorted(os.listdir('/proc/self/fd'))}"
    left = _children_left()
    assert left is None, left


@pytest.fixture
def arun() -> Callable[[Coroutine[Any, Any, T]], T]:
    """``arun(coro)`` runs ``coro`` to completion on a fresh event loop."""
    return asyncio.run
