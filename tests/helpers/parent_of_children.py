"""A mesh parent run as its own process, so a test can kill it with SIGKILL.

Prints the pids of its two children on one line, then waits until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

import workmesh as wm
from workmesh._process import Mesh

from .children import PidParams


async def main() -> None:
    async with Mesh("parent") as mesh:
        pids = []
        holds = []
        for n in range(2):
            tx, rx = wm.channel(int)
            hold_tx, hold_rx = wm.channel(int)
            entry = "tests.helpers.children:report_pid_and_wait"
            await mesh.spawn(f"child{n}", entry, PidParams(tx, hold_rx))
            pids.append(await rx.recv())
            holds.append(hold_tx)
        print(" ".join(map(str, pids)), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
