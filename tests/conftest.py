"""Shared fixtures: running a coroutine, and checking that a test leaked no thread or fd."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

# The channel suite promises that every endpoint, thread and descriptor it creates is
# gone when a test ends.  Other suites (processes, transports) may start process-wide
# machinery on first use, so the check is limited to these files.
_LEAK_CHECKED = {
    "test_bridge.py",
    "test_facade.py",
    "test_mpsc.py",
    "test_oneshot.py",
    "test_rpc.py",
    "test_threads.py",
}


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.path.name not in _LEAK_CHECKED:
        yield
        return
    threads, fds = threading.active_count(), _fd_count()
    yield
    assert threading.active_count() == threads, f"threads leaked: {threading.enumerate()}"
    assert _fd_count() == fds, f"fds leaked: {sorted(os.listdir('/proc/self/fd'))}"


@pytest.fixture
def arun() -> Callable[[Coroutine[Any, Any, T]], T]:
    """``arun(coro)`` runs ``coro`` to completion on a fresh event loop."""
    return asyncio.run
