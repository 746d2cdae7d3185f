"""Entry functions for the liveness tests' child processes."""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec

import workmesh as wm


class BusyParams(msgspec.Struct):
    seconds: float
    burst: float
    done: wm.Sender[str]


def _spin(until: float) -> int:
    """Pure Python work that never waits: holds the interpreter as much as it may."""
    n = 0
    while time.monotonic() < until:
        n += 1
    return n


async def busy(message: wm.Message) -> None:
    """Keep a thread spinning and the event loop blocked in bursts, then report.

    Busy, but healthy: a liveness check must not take this for a hung process.
    """
    params = message.parse(BusyParams)
    until = time.monotonic() + params.seconds
    spinner = threading.Thread(target=_spin, args=(until,), name="spinner")
    spinner.start()
    bursts = 0
    while time.monotonic() < until:
        _spin(min(until, time.monotonic() + params.burst))  # blocks this loop
        bursts += 1
        await asyncio.sleep(0)
    spinner.join()
    params.done.send(f"done after {bursts} bursts")


class HoldParams(msgspec.Struct):
    calls: wm.Receiver[wm.Rpc[int, int]]
    received: wm.Sender[int]


async def hold_calls(message: wm.Message) -> None:
    """Take calls and never answer them; report each one's input as it arrives."""
    params = message.parse(HoldParams)
    held = []
    async for rpc in params.calls:
        held.append(rpc)
        params.received.send(rpc.input)
