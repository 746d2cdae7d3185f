"""Workers used by ``workmesh demo`` (imported by the demo's child processes)."""

from __future__ import annotations

import asyncio
import os

import msgspec

import workmesh as wm


class Deposit(msgspec.Struct):
    """Add ``amount`` to the balance; the answer is (pid that served it, new balance)."""

    rpc: wm.Rpc[int, tuple[int, int]]


class AccountParams(msgspec.Struct):
    requests: wm.Receiver[Deposit]
    opening_balance: int = 0


class AccountState(msgspec.Struct):
    requests: wm.Receiver[Deposit]
    balance: int
    served: int


@wm.register_worker
class Account(wm.Worker[AccountParams, AccountState]):
    """A stateful worker whose request channel travels inside its state."""

    ID = wm.WorkerId("demo-account")

    def __init__(self, requests: wm.Receiver[Deposit], balance: int, served: int) -> None:
        self.requests = requests
        self.balance = balance
        self.served = served

    def __inspect__(self, req: wm.InspectRequest) -> None:
        req.respond().field("balance", self.balance).field("served", self.served).field(
            "pid", os.getpid()
        )

    @classmethod
    def new(cls, params: AccountParams) -> Account:
        return cls(params.requests, params.opening_balance, 0)

    @classmethod
    def restart(cls, state: AccountState) -> Account:
        return cls(state.requests, state.balance, state.served)

    async def run(self, rpc: wm.Receiver[wm.WorkerRpc[AccountState]]) -> None:
        app = asyncio.ensure_future(self.requests.recv())
        ctl = asyncio.ensure_future(rpc.recv())
        try:
            while True:
                done, _ = await asyncio.wait({app, ctl}, return_when=asyncio.FIRST_COMPLETED)
                if app in done:
                    deposit = app.result()
                    self.balance += deposit.rpc.input
                    self.served += 1
                    deposit.rpc.complete((os.getpid(), self.balance))
                    app = asyncio.ensure_future(self.requests.recv())
                if ctl in done:
                    message = ctl.result()
                    if isinstance(message, wm.Inspect):
                        message.deferred.inspect(self)
                        ctl = asyncio.ensure_future(rpc.recv())
                        continue
                    if isinstance(message, wm.Restart):
                        app.cancel()  # a cancelled receive loses nothing
                        await asyncio.gather(app, return_exceptions=True)
                        message.complete(AccountState(self.requests, self.balance, self.served))
                    return
        except (wm.ChannelClosed, wm.ChannelFailed):
            return
        finally:
            app.cancel()
            ctl.cancel()
            await asyncio.gather(app, ctl, return_exceptions=True)


class Empty(msgspec.Struct):
    pass


def _audit(ledger: list[int]) -> int:
    if sum(ledger) < 0:
        raise ValueError("the ledger does not balance")
    return sum(ledger)


@wm.register_worker
class Auditor(wm.Worker[Empty, Empty]):
    """Fails while running: to show how a failure is reported."""

    ID = wm.WorkerId("demo-auditor")

    @classmethod
    def new(cls, params: Empty) -> Auditor:
        return cls()

    def run(self, rpc: wm.Receiver[wm.WorkerRpc[Empty]]) -> None:
        _audit([100, -250])
