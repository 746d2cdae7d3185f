"""A mesh parent run as its own process, for a test to kill with SIGKILL.

It starts cold children, warm children (forked by its zygote) and a warm worker
host running a worker, then prints one JSON line naming every process it made
(the zygote included) and waits until its stdin closes -- or it is killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

import workmesh as wm

from .chaos_children import Call, CallHolder, FamilyParams, ServeParams

ENTRY = "tests.helpers.chaos_children:report_family_and_wait"


async def main() -> None:
    async with wm.Mesh("doomed-parent") as mesh:
        processes: dict[str, int] = {}
        holds = []
        for n, warm in enumerate([False, True, False, True, True]):
            reply, family = wm.channel(tuple[int, int])
            hold, held = wm.channel(int)
            await mesh.spawn(f"child{n}", ENTRY, FamilyParams(reply, held), warm=warm)
            pid, ppid = await family.recv()
            processes[f"child{n}"] = pid
            if warm:
                processes["zygote"] = ppid
            holds.append(hold)
        host = await mesh.launch_host("host", imports=["tests.helpers.chaos_children"], warm=True)
        calls, requests = wm.channel(Call)
        handle = await host.launch_worker(CallHolder, ServeParams(requests, 0))
        del requests
        processes["host"], _ = await calls.call(Call, 0)
        print(json.dumps(processes), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        handle.stop()


if __name__ == "__main__":
    asyncio.run(main())
