"""The channel conformance cases again, with the two ends in two real processes.

One parametrized fixture places each channel's sender in a child process, or its
receiver, or (as the control) keeps both here.  The end that lives in the child is
worked through an agent (tests.helpers.children.agent) on command, so every test
reads the same whichever way the channel is split.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import workmesh as wm
from workmesh._process import ChildProcess, Mesh

from .helpers.children import Clone, Close, Command, Hold, IsClosed, Recv, Send

pytestmark = pytest.mark.timeout(60)

PLACES = ["both-here", "sender-in-child", "receiver-in-child"]


class Agent:
    def __init__(self, child: ChildProcess, commands: wm.Sender[Command]) -> None:
        self.child = child
        self.commands = commands
        self.slots = itertools.count()

    def hold(self, endpoint: Any) -> int:
        slot = next(self.slots)
        self.commands.send(Hold(slot, endpoint))
        return slot


class RemoteSender:
    """Drives a Sender that lives in the agent's process."""

    def __init__(self, agent: Agent, slot: int) -> None:
        self.agent, self.slot = agent, slot

    def send(self, value: Any) -> None:
        self.agent.commands.send(Send(self.slot, value))

    def clone(self) -> RemoteSender:
        new = next(self.agent.slots)
        self.agent.commands.send(Clone(self.slot, new))
        return RemoteSender(self.agent, new)

    def close(self) -> None:
        self.agent.commands.send(Close(self.slot))

    async def is_closed(self) -> bool:
        result: bool = await self.agent.commands.call(
            lambda rpc: IsClosed(self.slot, rpc), None, reply_type=bool
        )
        return result


class RemoteReceiver:
    """Drives a Receiver that lives in the agent's process; errors come back as they were."""

    def __init__(self, agent: Agent, slot: int) -> None:
        self.agent, self.slot = agent, slot

    async def recv(self) -> Any:
        try:
            return await self.agent.commands.call_failable(lambda rpc: Recv(self.slot, rpc), None)
        except wm.RemoteError as err:
            name = err.chain[0].type_name
            if name.endswith("ChannelClosed"):
                raise wm.ChannelClosed() from err
            if name.endswith("ChannelFailed"):
                kind = (
                    wm.ChannelErrorKind.CORRUPTION
                    if "corruption" in str(err)
                    else wm.ChannelErrorKind.NODE_FAILURE
                )
                raise wm.ChannelFailed(kind, err) from err
            raise

    def close(self) -> None:
        self.agent.commands.send(Close(self.slot))


class Split:
    """Makes channels split as the test's parameter says."""

    def __init__(self, place: str, agent: Agent | None) -> None:
        self.place, self.agent = place, agent

    def channel(self, tp: Any = object) -> tuple[Any, Any]:
        tx, rx = wm.channel(tp)
        if self.place == "sender-in-child":
            assert self.agent is not None
            return RemoteSender(self.agent, self.agent.hold(tx)), rx
        if self.place == "receiver-in-child":
            assert self.agent is not None
            return tx, RemoteReceiver(self.agent, self.agent.hold(rx))
        return tx, LocalReceiver(rx)


class LocalReceiver:
    def __init__(self, rx: wm.Receiver[Any]) -> None:
        self.rx = rx

    async def recv(self) -> Any:
        return await self.rx.recv()

    def close(self) -> None:
        self.rx.close()


async def local_is_closed(tx: Any) -> bool:
    if isinstance(tx, RemoteSender):
        return await tx.is_closed()
    return bool(tx.is_closed())


@pytest.fixture(params=PLACES)
def place(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_split(place: str, body: Callable[[Split], Awaitable[None]]) -> None:
    async def main() -> None:
        async with split_for(place) as split:
            await asyncio.wait_for(body(split), 30)

    asyncio.run(main())


def split_for(place: str) -> Any:
    import contextlib  # noqa: PLC0415 - local helper

    @contextlib.asynccontextmanager
    async def manage() -> AsyncIterator[Split]:
        if place == "both-here":
            yield Split(place, None)
            return
        async with Mesh("conformance") as mesh:
            commands, inbox = wm.channel(Command)
            child = await mesh.spawn("agent", "tests.helpers.children:agent", inbox)
            del inbox
            agent = Agent(child, commands)
            yield Split(place, agent)
            commands.close()
            await asyncio.wait_for(child.wait(), 30)

    return manage()


# ------------------------------------------------------------------ the cases


def test_basic_then_closed(place: str) -> None:
    async def body(split: Split) -> None:
        tx, rx = split.channel(int)
        for i in range(3):
            tx.send(i)
        tx.close()
        assert [await rx.recv() for _ in range(3)] == [0, 1, 2]
        with pytest.raises(wm.ChannelClosed):
            await rx.recv()

    run_split(place, body)


def test_fifo_per_sender_with_clones(place: str) -> None:
    async def body(split: Split) -> None:
        tx, rx = split.channel()
        clones = [tx, tx.clone(), tx.clone()]
        for i in range(50):
            for k, c in enumerate(clones):
                c.send([k, i])
        for c in clones:
            c.close()
        seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
        for _ in range(150):
            k, i = await rx.recv()
            seen[k].append(i)
        assert all(v == list(range(50)) for v in seen.values())
        with pytest.raises(wm.ChannelClosed):
            await rx.recv()

    run_split(place, body)


def test_structs_and_endpoints_inside_messages(place: str) -> None:
    async def body(split: Split) -> None:
        tx, rx = split.channel()
        reply_tx, reply_rx = wm.channel(str)
        tx.send({"greeting": "hi", "reply": reply_tx})
        del reply_tx
        got = await rx.recv()
        got["reply"].send(got["greeting"] + " back")
        assert await reply_rx.recv() == "hi back"
        tx.close()

    run_split(place, body)


def test_wrong_type_is_corruption_and_terminates(place: str) -> None:
    if place == "receiver-in-child":
        pytest.skip("the agent holds its receivers untyped")

    async def body(split: Split) -> None:
        tx, rx = split.channel(int)
        # Promote the channel so that sends are encoded, also when both ends are here.
        if place == "both-here":
            far_tx, far_rx = wm.channel(int)
            far_tx.bridge(rx.rx)
            rx = LocalReceiver(far_rx)
        tx.send("not an int")
        with pytest.raises(wm.ChannelFailed) as info:
            await rx.recv()
        assert info.value.kind is wm.ChannelErrorKind.CORRUPTION

    run_split(place, body)


def test_receiver_gone_closes_the_sender(place: str) -> None:
    async def body(split: Split) -> None:
        tx, rx = split.channel()
        tx.send("probe")
        assert await rx.recv() == "probe"
        rx.close()
        if split.agent is not None:
            # The close and this round trip share one ordered link: once the answer
            # is back, the close has arrived wherever the sender lives.
            await RemoteSender(split.agent, split.agent.hold(wm.channel()[0])).is_closed()
        assert await local_is_closed(tx)
        tx.send("dropped")  # harmless

    run_split(place, body)


def test_cancelled_recv_loses_nothing(place: str) -> None:
    if place == "receiver-in-child":
        pytest.skip("the remote receive is a call; cancelling it does not cancel the recv")

    async def body(split: Split) -> None:
        tx, rx = split.channel(int)
        waiting = asyncio.ensure_future(rx.recv())
        await asyncio.sleep(0)  # one loop turn: the task starts and parks in recv()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        tx.send(7)
        assert await rx.recv() == 7
        tx.close()

    run_split(place, body)


def test_peer_process_killed_fails_the_channel() -> None:
    """sender-in-child only: the child dies and the receiver sees NODE_FAILURE."""

    async def body(split: Split) -> None:
        tx, rx = split.channel(int)
        tx.send(1)
        assert await rx.recv() == 1
        assert split.agent is not None
        split.agent.child.kill()
        with pytest.raises(wm.ChannelFailed) as info:
            await asyncio.wait_for(rx.recv(), 1.0)
        assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
        assert "killed by SIGKILL" in str(info.value)

    run_split("sender-in-child", body)
