"""``workmesh demo``: what workmesh does, in one run, with readable output."""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import workmesh as wm
from workmesh._process import Mesh

from ._demo_workers import Account, AccountParams, Auditor, Deposit, Empty

DEMO_MODULE = "workmesh._cli._demo_workers"
CLIENTS = 3
DEPOSITS_PER_CLIENT = 400


def say(text: str = "") -> None:
    print(text, flush=True)


def step(number: int, title: str) -> None:
    say(f"\n{number}. {title}")


async def channels_between_task_and_thread() -> None:
    step(1, "Typed channels between an asyncio task and a plain thread")
    tx, rx = wm.channel(str)

    def producer() -> None:
        with tx:
            for word in ("hello", "from", "a", "thread"):
                tx.send(word)

    thread = threading.Thread(target=producer)
    thread.start()
    words = [word async for word in rx]
    thread.join()
    say(f"   received in order: {' '.join(words)}; then the channel closed")


async def deposit_stream(
    client: wm.Sender[Deposit], count: int, halfway: asyncio.Event
) -> list[tuple[int, int]]:
    calls = []
    for i in range(count):
        calls.append(asyncio.ensure_future(client.call(Deposit, 1)))
        if i == count // 2:
            halfway.set()
        await asyncio.sleep(0)  # give the other clients a turn
    return list(await asyncio.gather(*calls))


async def hot_restart(mesh: Mesh) -> None:
    step(2, "A stateful worker in a child process, serving clients")
    host = await mesh.launch_host("bank-1", imports=[DEMO_MODULE])
    client, requests = wm.channel(Deposit)
    handle = await host.launch_worker(Account, AccountParams(requests, opening_balance=1000))
    del requests
    old_pid, balance = await client.call(Deposit, 0)
    say(f"   'demo-account' runs in pid {old_pid} (the demo itself is pid {os.getpid()})")
    say(f"   opening balance {balance}")

    step(3, "Live hot restart into a fresh process, while clients keep calling")
    new_host = await mesh.launch_host("bank-2", imports=[DEMO_MODULE])
    senders = [client.clone() for _ in range(CLIENTS)]
    halfway = [asyncio.Event() for _ in senders]
    streams = [
        asyncio.ensure_future(deposit_stream(s, DEPOSITS_PER_CLIENT, h))
        for s, h in zip(senders, halfway, strict=True)
    ]
    await halfway[0].wait()
    handle.restart(new_host)
    answers = [answer for stream in streams for answer in await stream]
    event = await handle.next_event()
    sent = CLIENTS * DEPOSITS_PER_CLIENT
    pids = sorted({pid for pid, _ in answers}, key=[pid for pid, _ in answers].index)
    balances = sorted(b for _, b in answers)
    lost = sent - len(answers)
    twice = len(balances) - len(set(balances))
    say(f"   sent {sent}, answered {len(answers)}, lost {lost}, applied twice {twice}")
    say(f"   served by pid {' then pid '.join(map(str, pids))}")
    say(f"   the handle saw {type(event).__name__}: the worker runs on, with its state")
    _pid, balance = await client.call(Deposit, 0)
    say(f"   balance after the restart: {balance} (1000 + {sent})")
    host.close()
    handle.stop()
    await handle.join()
    new_host.close()
    for s in senders:
        s.close()
    client.close()


async def failures(mesh: Mesh) -> None:
    step(4, "Failures cross processes as data, with the remote traceback")
    host = await mesh.launch_host("audit", imports=[DEMO_MODULE])
    handle = await host.launch_worker(Auditor, Empty())
    try:
        await handle.join()
    except wm.RemoteError as err:
        frame = err.chain[0]
        last = (frame.traceback or "").strip().splitlines()[-2].strip()
        say(f"   the worker failed: {err} ({frame.type_name})")
        say(f"   remote traceback, last frame: {last}")
    client, requests = wm.channel(Deposit)
    victim = await host.launch_worker(Account, AccountParams(requests))
    del requests
    pid, _ = await client.call(Deposit, 1)
    (child,) = [c for c in mesh.children.values() if c.pid == pid]
    child.kill()
    event = await victim.next_event()
    say(f"   killed pid {pid} with SIGKILL; its handle saw: {type(event).__name__}")
    if isinstance(event, wm.Failed):
        say(f"   {event.error}")
    host.close()
    client.close()


async def inspect_everything(mesh: Mesh) -> None:
    step(5, "One inspection reaches every process and worker of the mesh")
    host = await mesh.launch_host("bank-3", imports=[DEMO_MODULE])
    client, requests = wm.channel(Deposit)
    handle = await host.launch_worker(Account, AccountParams(requests, opening_balance=42))
    del requests
    await client.call(Deposit, 8)
    worker = await wm.inspect(handle, timeout=2)
    say(f"   the worker itself: {worker.format()}")
    tree = await wm.inspect(mesh, timeout=2)
    for line in tree.format(pretty=True).splitlines():
        say(f"   {line}")
    host.close()
    handle.stop()
    await handle.join()
    client.close()


async def demo() -> None:
    say("workmesh demo: isolated, hot-upgradable parts that talk by message passing")
    await channels_between_task_and_thread()
    async with Mesh("demo") as mesh:
        await hot_restart(mesh)
        await failures(mesh)
        await inspect_everything(mesh)
    say("\nAll child processes have exited; nothing is left running.")


def main() -> int:
    # The demo reports every failure itself, including the one it causes on purpose.
    logging.getLogger("workmesh").setLevel(logging.ERROR)
    asyncio.run(demo())
    return 0
