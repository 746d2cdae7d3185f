"""kill -9 during continuous RPC traffic: every pending call fails, promptly and clearly.

Several callers (tasks on the test's loop, and one on a thread with a loop of its
own) each keep pipelined calls in flight on their own sender.  The server holds
back its latest calls, so some are certainly pending when it is killed.  Each
pending call must end with ``ChannelFailed`` of kind ``NODE_FAILURE`` whose text
names the process and ``killed by SIGKILL`` -- never hang, never end quietly --
within 100 ms of the kill, measured per call with ``time.monotonic``.  Children
are forked warm, so many kills fit in a short run.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time
from dataclasses import dataclass, field

import pytest

import workmesh as wm
from workmesh._process import ChildProcess

from ..helpers.chaos_children import Call, CallHolder, ServeParams
from ._scale import figure, scale, timeout
from ._traffic import Ended, Traffic

pytestmark = pytest.mark.timeout(timeout(short=60, long=3600))

CHILDREN = "tests.helpers.chaos_children"
DEADLINE = 0.100  # seconds from the kill to each pending call's failure
TASKS, THREADS = 3, 1  # callers
DEPTH = 12  # calls each caller keeps in flight
HOLD = 24  # calls the server keeps unanswered: at least this many are pending at a kill
ANSWERS = 100  # calls answered in each round before the kill


@dataclass
class Tally:
    """What the kills of one test did to the calls pending at each."""

    kills: int = 0
    failed: list[float] = field(default_factory=list)  # kill -> failure, seconds
    answered_late: int = 0  # pending at the kill, but the answer was already on its way
    misnamed: list[str] = field(default_factory=list)  # failures that do not say who died
    wrong: list[str] = field(default_factory=list)  # anything else: the test fails on these

    def judge(self, calls: list[Ended], kill_at: float, child: ChildProcess) -> None:
        self.kills += 1
        failed_here = 0
        for call in calls:
            if call.ended < kill_at:
                if call.error is not None:
                    self.wrong.append(f"a call failed before the kill: {call.error!r}")
                continue
            if call.issued >= kill_at:
                self.wrong.append(f"a call was issued after the callers stopped: {call!r}")
                continue
            if call.error is None:
                self.answered_late += 1
                continue
            error = call.error
            if not isinstance(error, wm.ChannelFailed):
                self.wrong.append(f"a pending call ended with {error!r}, not ChannelFailed")
                continue
            if error.kind is not wm.ChannelErrorKind.NODE_FAILURE:
                self.wrong.append(f"a pending call failed as {error.kind}: {error}")
                continue
            failed_here += 1
            self.failed.append(call.ended - kill_at)
            text = str(error)
            if f"process {child.name!r} (pid {child.pid}) killed by SIGKILL" not in text:
                self.misnamed.append(text)
        if failed_here < HOLD:
            self.wrong.append(
                f"only {failed_here} calls failed at a kill; the server held {HOLD} unanswered"
            )

    def report(self, what: str) -> None:
        lat = sorted(self.failed)
        assert lat, "no pending call was ever failed"
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        figure(
            f"{what}: {self.kills} kills, {len(lat)} pending calls failed "
            f"(+{self.answered_late} answered as the kill struck); kill -> failure "
            f"median {statistics.median(lat) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
            f"max {lat[-1] * 1e3:.1f} ms; {len(self.misnamed)} failures not naming the "
            "killed process"
        )

    def check(self) -> None:
        assert not self.wrong, f"{len(self.wrong)} wrong endings, first: {self.wrong[:3]}"
        late = [t for t in self.failed if t > DEADLINE]
        assert not late, (
            f"{len(late)} of {len(self.failed)} pending calls failed later than "
            f"{DEADLINE * 1e3:.0f} ms after the kill (worst {max(late) * 1e3:.1f} ms)"
        )
        assert not self.misnamed, (
            f"{len(self.misnamed)} of {len(self.failed)} failures do not name the killed "
            f"process and its signal, e.g. {self.misnamed[0]!r}"
        )


async def kill_during_traffic(child: ChildProcess, traffic: Traffic) -> tuple[list[Ended], float]:
    await traffic.answers(ANSWERS)
    await traffic.stop()  # every call that will be made has been made
    kill_at = time.monotonic()
    child.kill()
    calls = await traffic.finish(within=5.0)
    return calls, kill_at


def test_kill_9_of_servers_fails_every_pending_call_within_100ms() -> None:
    kills = scale(short=20, long=1000)
    tally = Tally()

    async def main() -> None:
        async with wm.Mesh("chaos") as mesh:
            for k in range(kills):
                sender, requests = wm.channel(Call)
                name = f"server-{k}"
                child = await mesh.spawn(
                    name, f"{CHILDREN}:serve_calls", ServeParams(requests, HOLD), warm=True
                )
                del requests
                traffic = Traffic(sender, tasks=TASKS, threads=THREADS, depth=DEPTH)
                sender.close()  # each caller holds a clone
                calls, kill_at = await kill_during_traffic(child, traffic)
                assert await asyncio.wait_for(child.wait(), 5) == -signal.SIGKILL
                tally.judge(calls, kill_at, child)

    asyncio.run(main())
    tally.report("kill -9 of call servers")
    tally.check()


def test_kill_9_of_worker_hosts_fails_calls_and_the_handle() -> None:
    kills = scale(short=6, long=200)
    tally = Tally()
    handle_errors: list[str] = []

    async def main() -> None:
        async with wm.Mesh("chaos") as mesh:
            for k in range(kills):
                name = f"host-{k}"
                host = await mesh.launch_host(name, imports=[CHILDREN], warm=True)
                sender, requests = wm.channel(Call)
                handle = await host.launch_worker(CallHolder, ServeParams(requests, HOLD))
                del requests
                host.close()
                child = list(mesh.children.values())[-1]  # the host just started
                assert child.name == name
                traffic = Traffic(sender, tasks=TASKS, threads=THREADS, depth=DEPTH)
                sender.close()
                calls, kill_at = await kill_during_traffic(child, traffic)
                event = await asyncio.wait_for(handle.next_event(), 5)
                assert isinstance(event, wm.Failed), event
                handle_errors.append(str(event.error))
                assert await asyncio.wait_for(handle.next_event(), 5) is None
                assert await asyncio.wait_for(child.wait(), 5) == -signal.SIGKILL
                tally.judge(calls, kill_at, child)

    asyncio.run(main())
    tally.report("kill -9 of worker hosts")
    assert all("killed by SIGKILL" in text for text in handle_errors), handle_errors[:3]
    tally.check()
