"""The counter worker's interface: ids and messages, without any implementation.

Both versions of the worker import this, and so can clients.
"""

from __future__ import annotations

import msgspec

import workmesh as wm


class Incr(msgspec.Struct):
    """An application request: add ``by``; the reply says who counted and the total."""

    rpc: wm.Rpc[int, tuple[int, int]]  # input: by; reply: (pid, new total)


class CounterParams(msgspec.Struct):
    requests: wm.Receiver[Incr]
    start: int = 0


class CounterState(msgspec.Struct):
    requests: wm.Receiver[Incr]
    count: int


COUNTER: wm.WorkerId[CounterParams] = wm.WorkerId("counter")
