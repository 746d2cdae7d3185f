"""Workers for the ``workmesh run`` tests: they say what they do on stdout."""

from __future__ import annotations

import os
import sys

import msgspec

import workmesh as wm


class TickerParams(msgspec.Struct):
    start: int = 0


class TickerState(msgspec.Struct):
    count: int
    generation: int


@wm.register_worker
class Ticker(wm.Worker[TickerParams, TickerState]):
    """Keeps a count across hot restarts and reports each generation."""

    ID = wm.WorkerId("ticker")

    def __init__(self, count: int, generation: int) -> None:
        self.count = count
        self.generation = generation

    @classmethod
    def new(cls, params: TickerParams) -> Ticker:
        return cls(params.start, 0)

    @classmethod
    def restart(cls, state: TickerState) -> Ticker:
        return cls(state.count + 1, state.generation + 1)

    def run(self, rpc: wm.Receiver[wm.WorkerRpc[TickerState]]) -> None:
        line = f"ticker generation {self.generation} count {self.count} pid {os.getpid()}\n"
        sys.stdout.write(line)  # one write, so lines from two threads do not interleave
        sys.stdout.flush()
        for message in rpc:
            match message:
                case wm.Stop():
                    return
                case wm.Restart() as restart:
                    restart.complete(TickerState(self.count, self.generation))
                    return


class NotAWorker:
    pass
