"""A Mesh in a process that cannot have pidfds: children still work, die and are reaped.

A kernel older than 5.3, a seccomp policy that refuses ``pidfd_open`` or a process
out of descriptors gives the Mesh no pidfd for a child.  It then waits for the
child's exit on a thread and signals it by pid (never once it is reaped), and its
warm spawns start cold.  The children here are real processes; only the parent's
``os.pidfd_open`` is made to fail.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from typing import Any, NoReturn

import pytest

import workmesh as wm
from workmesh._process import Mesh
from workmesh._process._zygote import WarmPopen

from .helpers.aio import run, within
from .helpers.children import EchoParams, PidParams

pytestmark = pytest.mark.timeout(60)

CHILDREN = "tests.helpers.children"


def refuse_pidfds(monkeypatch: pytest.MonkeyPatch, code: int) -> list[int]:
    """Make ``os.pidfd_open`` fail with ``code``; returns the pids it was asked for."""
    asked: list[int] = []

    def pidfd_open(pid: int, flags: int = 0) -> NoReturn:
        asked.append(pid)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    return asked


async def spawn_echo(mesh: Mesh, *, warm: bool = False) -> tuple[Any, Any, Any]:
    req_tx, req_rx = wm.channel()
    rep_tx, rep_rx = wm.channel()
    child = await mesh.spawn("echo", f"{CHILDREN}:echo", EchoParams(req_rx, rep_tx), warm=warm)
    return child, req_tx, rep_rx


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EPERM, errno.EMFILE])
def test_a_child_without_a_pidfd_is_killed_reported_and_reaped(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    asked = refuse_pidfds(monkeypatch, code)

    async def main() -> None:
        async with Mesh("test") as mesh:
            child, tx, rx = await spawn_echo(mesh)
            assert asked == [child.pid]  # the Mesh did ask, and was refused
            tx.send("hello")
            assert await within(rx.recv()) == "hello"
            pending = rx.recv()
            child.kill()
            with pytest.raises(wm.ChannelFailed) as info:
                await within(pending)
            assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
            assert await within(child.wait()) == -signal.SIGKILL
            assert child.status == "killed by SIGKILL"
            child.kill()  # after the reap: nothing to signal, and no error
            with pytest.raises(ProcessLookupError):
                os.kill(child.pid, 0)  # no zombie left

    run(main)


def test_children_without_pidfds_exit_when_the_mesh_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refuse_pidfds(monkeypatch, errno.ENOSYS)

    async def main() -> list[Any]:
        async with Mesh("test") as mesh:
            children, holds = [], []
            for _ in range(2):
                tx, rx = wm.channel(int)
                hold_tx, hold_rx = wm.channel(int)
                params = PidParams(tx, hold_rx)
                children.append(await mesh.spawn("c", f"{CHILDREN}:report_pid_and_wait", params))
                holds.append(hold_tx)
                assert await within(rx.recv()) == children[-1].pid
            terminated = children[1]
            terminated.terminate()
            assert await within(terminated.wait()) == -signal.SIGTERM
        return [c.returncode for c in children]

    assert run(main) == [0, -signal.SIGTERM]
    # The threads that waited for them are gone with the Mesh, not merely ending.
    assert not [t for t in threading.enumerate() if t.name.startswith("workmesh-wait-")]


def test_warm_spawns_start_cold_when_the_zygote_cannot_be_watched(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked = refuse_pidfds(monkeypatch, errno.ENOSYS)

    async def main() -> None:
        async with Mesh("test") as mesh:
            for n in range(3):
                child, tx, rx = await spawn_echo(mesh, warm=True)
                assert not isinstance(child._proc, WarmPopen)  # started cold
                tx.send(n)
                assert await within(rx.recv()) == n
                tx.close()
                assert await within(child.wait()) == 0
            assert mesh._zygote is None

    with caplog.at_level(logging.INFO, logger="workmesh"):
        run(main)
    said = [r.getMessage() for r in caplog.records]
    refusals = [m for m in said if "zygote could not start" in m]
    # Tried once (its process was started, refused a pidfd, and ended), not per spawn.
    assert len(asked) == 1 + 3
    assert sum("warm spawns start cold" in m for m in refusals) == 1
    assert sum("starts cold" in m for m in refusals) == 2  # the 2nd and 3rd spawn
