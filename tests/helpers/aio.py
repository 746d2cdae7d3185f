"""Running a test's coroutine, and waiting with a bound: shared by the process tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``coro_fn()`` on a fresh event loop and return its result."""
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


async def within(awaitable: Awaitable[T], seconds: float = 10) -> T:
    """``await awaitable``, or TimeoutError after ``seconds``: no test waits forever."""
    return await asyncio.wait_for(awaitable, seconds)
