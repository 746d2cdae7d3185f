"""Newer code for the ``counter`` worker: its restart converts the old state.

Import this *instead of* ``tests.helpers.workers`` in a host process to simulate
an upgrade; both register the id ``counter``.
"""

from __future__ import annotations

import os

import msgspec

import workmesh as wm

from .counter_api import COUNTER, CounterState, Incr


class CounterStateV2(msgspec.Struct):
    requests: wm.Receiver[Incr]
    count: int
    version: int = 2


@wm.register_worker
class CounterV2(wm.Worker[CounterState, CounterStateV2]):
    ID = COUNTER

    def __init__(self, requests: wm.Receiver[Incr], count: int) -> None:
        self.requests = requests
        self.count = count

    @classmethod
    def restart(cls, state: CounterStateV2) -> CounterV2:
        # The v1 state arrives without a version: the default says where it came from.
        return cls(state.requests, state.count * 1000)

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[CounterStateV2]]) -> None:
        async for request in self.requests:
            self.count += request.rpc.input
            request.rpc.complete((os.getpid(), self.count))
