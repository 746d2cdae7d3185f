"""A mesh's Limits, applied on every link: the parent's, each child's, and the links
children make between themselves.

Real child processes, cold and warm.  Nothing waits by sleeping, and nothing is
left behind (the conftest fixture checks).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

import workmesh as wm
from workmesh._process import Mesh
from workmesh._process._runtime import acquire_runtime

from .helpers.aio import run, within
from .helpers.children import EchoParams

pytestmark = pytest.mark.timeout(60)

CHILDREN = "tests.helpers.children"
HERE = "tests.test_limits_process"
MAX_FRAME = 64 * 1024
BIG = 100_000  # bytes: a frame well above MAX_FRAME
LIMITS = wm.Limits(max_frame=MAX_FRAME)


# ----------------------------------------------------------------- entries run by children
class BigParams(msgspec.Struct):
    out: wm.Sender[bytes]
    hold: wm.Receiver[int]


async def send_big(message: wm.Message) -> None:
    """On the first message on ``hold``, send one above the mesh's frame limit."""
    params = message.parse(BigParams)
    async for _ in params.hold:
        params.out.send(b"x" * BIG)


async def send_big_and_hang(message: wm.Message) -> None:
    """As send_big, then block the event loop: this child cannot notice anything."""
    params = message.parse(BigParams)
    async for _ in params.hold:
        params.out.send(b"x" * BIG)
        threading.Event().wait(3600)  # blocks this loop; killed long before


class SendParams(msgspec.Struct):
    commands: wm.Receiver[int]
    data: wm.Sender[str]


async def send_on_command(message: wm.Message) -> None:
    """For each number n: send "n<n>" on ``data``; for -1, a string above the limit."""
    params = message.parse(SendParams)
    async for n in params.commands:
        params.data.send("z" * BIG if n < 0 else f"n{n}")


class LinkParams(msgspec.Struct):
    data: wm.Receiver[str]
    sibling: bytes  # the node id of the child that sends on ``data``
    replies: wm.Sender[tuple[str, int | None, int | None]]


async def report_links(message: wm.Message) -> None:
    """For each message on ``data``: it, and the frame limit of this process's links
    to its parent and to the sibling (None while there is no such link).  When the
    channel fails, report why."""
    params = message.parse(LinkParams)
    runtime = acquire_runtime()
    while True:
        try:
            text = await params.data.recv()
        except wm.ChannelClosed:
            return
        except wm.ChannelFailed as exc:
            params.replies.send((f"failed: {chain(exc)}", None, None))
            return
        links = {bytes(peer): conn.limits.max_frame for peer, conn in runtime.connections.items()}
        sibling = links.pop(params.sibling, None)
        parent = next(iter(links.values()), None)
        params.replies.send((text[:20], parent, sibling))


# ----------------------------------------------------------------- helpers
def chain(exc: BaseException | None) -> str:
    """Every message along the cause chain, outermost first."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__
    return " <- ".join(parts)


async def spawn_echo(mesh: Mesh, name: str, **kwargs: Any) -> tuple[Any, Any, Any]:
    req_tx, req_rx = wm.channel()
    rep_tx, rep_rx = wm.channel()
    child = await mesh.spawn(name, f"{CHILDREN}:echo", EchoParams(req_rx, rep_tx), **kwargs)
    return child, req_tx, rep_rx


# ----------------------------------------------------------------- tests
def test_a_child_that_sends_an_oversized_frame_is_cut_off_and_others_carry_on() -> None:
    async def main() -> None:
        async with Mesh("limits", limits=LIMITS) as mesh:
            good, tx, rx = await spawn_echo(mesh, "good")
            out, big_rx = wm.channel(bytes)
            hold, hold_rx = wm.channel(int)
            big = await mesh.spawn("big", f"{HERE}:send_big", BigParams(out, hold_rx))
            del out, hold_rx
            hold.send(1)
            with pytest.raises(wm.ChannelFailed) as info:
                await within(big_rx.recv())
            assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
            text = chain(info.value)
            assert f"exceeds the limit of {MAX_FRAME}" in text
            assert "frame of " in text
            # Cut off, it sees its link end and exits, as when its parent leaves.
            assert await within(big.wait()) == 0
            assert big.status.startswith("cut off: frame of ")
            assert big.status.endswith(f"exceeds the limit of {MAX_FRAME}; exited successfully")
            assert hold.is_closed()
            tx.send("still fine")
            assert await within(rx.recv()) == "still fine"
            assert good.failure is None
            tx.close()
            assert await within(good.wait()) == 0
            hold.close()

    run(main)


def test_a_cut_off_child_that_does_not_exit_is_killed() -> None:
    async def main() -> None:
        async with Mesh("limits", limits=LIMITS, shutdown_timeout=0.5) as mesh:
            out, big_rx = wm.channel(bytes)
            hold, hold_rx = wm.channel(int)
            big = await mesh.spawn("stuck", f"{HERE}:send_big_and_hang", BigParams(out, hold_rx))
            del out, hold_rx
            hold.send(1)
            with pytest.raises(wm.ChannelFailed):
                await within(big_rx.recv())
            # Its event loop is blocked: it cannot see its link end.  Once the
            # shutdown timeout has passed since the cut, the mesh kills it.
            assert await within(big.wait()) == -signal.SIGKILL
            assert big.status.startswith("cut off: frame of ")
            assert big.status.endswith("; killed by SIGKILL")
            hold.close()

    run(main)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_a_child_cuts_a_parent_that_sends_it_an_oversized_frame(warm: bool, tmp_path: Path) -> None:
    log_path = tmp_path / "child.log"

    async def main() -> None:
        async with Mesh("limits", limits=LIMITS) as mesh:
            if warm:
                assert await within(mesh._warm_up([CHILDREN]))
            other, other_tx, other_rx = await spawn_echo(mesh, "other", warm=warm)
            with log_path.open("wb") as log_file:
                child, tx, rx = await spawn_echo(mesh, "small", warm=warm, stderr=log_file)
            tx.send(b"fits")
            assert await within(rx.recv()) == b"fits"
            waiting = asyncio.ensure_future(rx.recv())
            tx.send(b"y" * BIG)  # the child's link applies the mesh's limit too
            with pytest.raises(wm.ChannelFailed) as info:
                await within(waiting)
            assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
            assert f"process 'small' (pid {child.pid}) exited with status 1" in str(info.value)
            assert await within(child.wait()) == 1
            assert tx.is_closed()
            other_tx.send("unaffected")
            assert await within(other_rx.recv()) == "unaffected"
            other_tx.close()
            assert await within(other.wait()) == 0

    run(main)
    logged = log_path.read_text()
    assert f"exceeds the limit of {MAX_FRAME}" in logged
    assert "its link to the parent was cut" in logged


def test_links_between_children_apply_the_mesh_limits() -> None:
    async def main() -> None:
        async with Mesh("limits", limits=LIMITS) as mesh:
            commands, commands_rx = wm.channel(int)
            data_tx, data_rx = wm.channel(str)
            sender = await mesh.spawn(
                "sender", f"{HERE}:send_on_command", SendParams(commands_rx, data_tx)
            )
            del commands_rx, data_tx
            replies_tx, replies = wm.channel(tuple[str, int | None, int | None])
            receiver = await mesh.spawn(
                "receiver",
                f"{HERE}:report_links",
                LinkParams(data_rx, sender.node_id, replies_tx),
            )
            del data_rx, replies_tx
            # Talk until the sender's messages come over a link of their own, which
            # the parent brokers once the sender learns where the receiver lives.
            for n in range(200):
                commands.send(n)
                text, parent_limit, sibling_limit = await within(replies.recv())
                assert text == f"n{n}"
                assert parent_limit == MAX_FRAME
                if sibling_limit is not None:
                    break
            assert sibling_limit == MAX_FRAME
            # Over that link, the receiving child applies the limit too.
            commands.send(-1)
            text, _, _ = await within(replies.recv())
            assert text.startswith("failed: ")
            assert f"exceeds the limit of {MAX_FRAME}" in text
            assert await within(receiver.wait()) == 0
            assert sender.returncode is None
            assert sender.failure is None
            commands.close()
            assert await within(sender.wait()) == 0

    run(main)


def test_limits_must_be_a_limits_struct() -> None:
    with pytest.raises(TypeError, match=r"Mesh\('m'\): limits must be a workmesh.Limits"):
        Mesh("m", limits={"max_frame": 1024})  # type: ignore[arg-type]
    assert Mesh("m").limits is None
    assert Mesh("m", limits=LIMITS).limits is LIMITS
