"""Spawn/kill cycles leave nothing behind: no descriptor, no thread, no zombie.

Most children are forked warm (that is what makes a thousand cycles affordable);
every tenth starts cold, so both ways of starting and reaping are exercised.  Each
cycle waits until the child is reaped *and* the mesh has failed the channels into
it -- the point by which the child's link, pidfd and threads must all be gone --
and then counts.  Zombies are looked for with ``waitid(WNOWAIT)``, which reports
an unreaped child without reaping it (so the mesh's own reaper is not robbed).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

import workmesh as wm

from ..helpers.chaos_children import FamilyParams
from ._scale import figure, scale, timeout

pytestmark = pytest.mark.timeout(timeout(short=60, long=3600))

ENTRY = "tests.helpers.chaos_children:report_family_and_wait"


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def zombie() -> str | None:
    """A child of this process that has exited and is not reaped yet, if any."""
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    return None if info is None else f"pid {info.si_pid} (status {info.si_status})"


def test_spawn_kill_cycles_leak_no_fd_thread_or_zombie() -> None:
    cycles = scale(short=50, long=1000)
    fds_before, threads_before = fd_count(), set(threading.enumerate())
    steady: tuple[int, int] | None = None
    drift: list[str] = []

    async def cycle(mesh: wm.Mesh, n: int) -> None:
        reply, family = wm.channel(tuple[int, int])
        hold, held = wm.channel(int)
        child = await mesh.spawn(f"cycle-{n}", ENTRY, FamilyParams(reply, held), warm=n % 10 != 0)
        del reply, held
        pid, _ppid = await asyncio.wait_for(family.recv(), 10)
        assert pid == child.pid
        child.kill()
        assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL
        with pytest.raises(wm.ChannelFailed):  # the mesh has failed the child's node
            await asyncio.wait_for(family.recv(), 10)
        assert hold.is_closed()
        hold.close()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: the pid is gone
        assert zombie() is None, f"unreaped child after cycle {n}: {zombie()}"

    async def main() -> None:
        nonlocal steady
        async with wm.Mesh("cycles") as mesh:
            for n in range(cycles):
                await cycle(mesh, n)
                # The zygote and the first cold child open what stays open; from the
                # second cycle on, the counts must not move.
                now = (fd_count(), threading.active_count())
                if n == 1:
                    steady = now
                elif n > 1 and now != steady:
                    drift.append(f"cycle {n}: (fds, threads) {now} != {steady}")

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    assert not drift, drift[:5]
    assert fd_count() == fds_before, sorted(os.listdir("/proc/self/fd"))
    assert set(threading.enumerate()) == threads_before, threading.enumerate()
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child at all: none running, none unreaped
    figure(
        f"spawn/kill cycles: {cycles} cycles ({cycles - (cycles + 9) // 10} warm, "
        f"{(cycles + 9) // 10} cold) in {elapsed:.1f} s without a leaked fd, thread or zombie"
    )
