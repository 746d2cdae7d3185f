"""The ``workmesh`` command (also ``python -m workmesh``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections.abc import Sequence

import msgspec

import workmesh as wm
from workmesh._channel._mpsc import sender_from_port, sender_to_port


def _say(text: str) -> None:
    print(text, flush=True)


class Order(msgspec.Struct):
    item: str
    qty: int


class PlaceOrder(msgspec.Struct):
    rpc: wm.FailableRpc[Order, int]


def _kitchen(orders: wm.Receiver[PlaceOrder]) -> None:
    """A plain thread that serves requests; a bad order fails with an exception."""
    total = 0
    for request in orders:

        def place(order: Order) -> int:
            nonlocal total
            if order.qty <= 0:
                raise ValueError(f"cannot place {order.qty} x {order.item}")
            total += order.qty
            return total

        request.rpc.handle_failable_sync(place)


async def _demo_channels() -> None:
    _say("1. A channel between an asyncio task and a plain thread")
    tx, rx = wm.channel(str)

    def producer() -> None:
        with tx:
            for word in ("hello", "from", "a", "thread"):
                tx.send(word)

    thread = threading.Thread(target=producer)
    thread.start()
    words = [word async for word in rx]
    thread.join()
    _say(f"   received in order: {' '.join(words)}; then the channel closed")


async def _demo_rpc() -> None:
    _say("2. Request/response: a thread serves typed requests, a task calls it")
    tx, rx = wm.channel(PlaceOrder)
    kitchen = threading.Thread(target=_kitchen, args=(rx,))
    kitchen.start()
    del rx
    try:
        for qty in (2, 3):
            total = await tx.call_failable(PlaceOrder, Order("tea", qty))
            _say(f"   placed {qty} x tea -> running total {total}")
        _say("3. Errors travel back as data, with the remote traceback")
        try:
            await tx.call_failable(PlaceOrder, Order("cake", 0))
        except wm.RemoteError as err:
            _say(f"   caller got RemoteError: {err}")
            frame = err.chain[0]
            last = (frame.traceback or "").strip().splitlines()[-1]
            _say(f"   remote type {frame.type_name}; its traceback ends: {last}")
    finally:
        tx.close()
        kitchen.join()


async def _demo_promotion() -> None:
    _say("4. Endpoints inside messages: the channel is promoted to ports and keeps order")
    tx, rx = wm.channel(wm.Sender[int])
    port_backed = sender_from_port(sender_to_port(tx), wm.Sender[int])
    reply_tx, reply_rx = wm.channel(int)
    port_backed.send(reply_tx)  # the Sender travels encoded, as it would to another process
    arrived = await rx.recv()
    for n in range(3):
        arrived.send(n)
    arrived.close()
    got = [n async for n in reply_rx]
    _say(f"   the Sender that travelled delivered {got}")
    port_backed.close()


async def _demo() -> None:
    _say("workmesh demo: typed channels, RPC and errors as data (in one process)\n")
    await _demo_channels()
    await _demo_rpc()
    await _demo_promotion()
    _say("\nCross-process meshes, workers and hot restart arrive in the next milestones.")


def _cmd_demo(args: argparse.Namespace) -> int:
    asyncio.run(_demo())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ._run import UsageError, run_worker  # noqa: PLC0415 - loaded only for run

    try:
        return asyncio.run(run_worker(args.worker, args.params, args.thread))
    except UsageError as exc:
        print(f"workmesh run: error: {exc}", file=sys.stderr)
        return 2


def _cmd_bench(args: argparse.Namespace) -> int:
    from workmesh._bench import main as bench_main  # noqa: PLC0415 - loaded only for bench

    return bench_main(args.bench_args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workmesh",
        description="Isolated, hot-upgradable program parts that talk by message passing.",
    )
    parser.add_argument("--version", action="version", version=f"workmesh {wm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="show what workmesh does", description="Run the showcase.")
    demo.set_defaults(func=_cmd_demo)
    run = sub.add_parser(
        "run",
        help="run one worker; SIGHUP hot-restarts it with fresh code",
        description="Run one registered worker. SIGHUP hot-restarts it (state kept) "
        "with its module imported afresh; Ctrl-C or SIGTERM stop it.",
    )
    run.add_argument("worker", metavar="MODULE:WorkerClass", help="the worker class to run")
    run.add_argument("--params", metavar="JSON", help="the worker's parameters, as JSON")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--thread", action="store_true", help="run it on a thread of this process")
    where.add_argument(
        "--process", action="store_true", help="run it in a child process (the default)"
    )
    run.set_defaults(func=_cmd_run)
    bench = sub.add_parser(
        "bench",
        help="run the benchmarks against their peers",
        description="Run the benchmark suite; arguments after 'bench' go to the suite.",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the suite")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The suite has its own options (and --help); hand it everything after 'bench'.
        rest = argv[1:]
        return _cmd_bench(argparse.Namespace(bench_args=rest[1:] if rest[:1] == ["--"] else rest))
    args = _parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
