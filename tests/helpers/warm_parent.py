"""A mesh parent with a warm zygote, run as its own process so a test can SIGKILL it.

Prints the zygote's pid and the pids of its two warm children on one line, then
waits until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

import workmesh as wm
from workmesh._process import Mesh

from .children import PidParams


async def main() -> None:
    async with Mesh("warm-parent") as mesh:
        if not await mesh._warm_up(["tests.helpers.children"]):
            raise SystemExit("the zygote did not start")
        assert mesh._zygote is not None
        pids = []
        holds = []
        for n in range(2):
            tx, rx = wm.channel(int)
            hold_tx, hold_rx = wm.channel(int)
            entry = "tests.helpers.children:report_pid_and_wait"
            await mesh.spawn(f"child{n}", entry, PidParams(tx, hold_rx), warm=True)
            pids.append(await rx.recv())
            holds.append(hold_tx)
        print(mesh._zygote.pid, *pids, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
