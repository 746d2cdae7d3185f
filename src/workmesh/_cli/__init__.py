"""The ``workmesh`` command (also ``python -m workmesh``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import workmesh as wm


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import main as demo_main  # noqa: PLC0415 - loaded only for the demo

    return demo_main()


def _cmd_run(args: argparse.Namespace) -> int:
    from ._run import UsageError, run_worker  # noqa: PLC0415 - loaded only for run

    try:
        return asyncio.run(run_worker(args.worker, args.params, args.thread))
    except UsageError as exc:
        print(f"workmesh run: error: {exc}", file=sys.stderr)
        return 2


def _cmd_inspect(args: argparse.Namespace) -> int:
    from workmesh._process._diag import DiagRequest, query  # noqa: PLC0415

    request = DiagRequest(path=args.path, depth=args.depth, timeout=args.timeout)
    try:
        tree = asyncio.run(query(args.socket, request))
    except (OSError, RuntimeError, EOFError, asyncio.IncompleteReadError) as exc:
        print(f"workmesh inspect: cannot inspect {args.socket}: {exc}", file=sys.stderr)
        return 1
    print(tree.to_json() if args.json else tree.format(pretty=True))
    return 0


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
    insp = sub.add_parser(
        "inspect",
        help="print the inspection tree of a running mesh",
        description="Inspect a mesh that serves diagnostics (Mesh.serve_diagnostics).",
    )
    insp.add_argument("socket", metavar="SOCKET", help="the mesh's diagnostics socket")
    insp.add_argument("path", metavar="PATH", nargs="?", default="", help="a subtree, a/b/c")
    insp.add_argument("--depth", type=int, default=None, help="levels below PATH to show")
    insp.add_argument("--json", action="store_true", help="print JSON instead of text")
    insp.add_argument(
        "--timeout", type=float, default=1.0, help="seconds to wait for other processes"
    )
    insp.set_defaults(func=_cmd_inspect)
    bench = sub.add_parser(
        "bench",
        help="run the benchmarks against their peers",
        description="Run the benchmark suite; arguments after 'bench' go to the suite.",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the suite")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = _main(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # here, so that a closed pipe is caught below
    except BrokenPipeError:
        # Whoever read our output stopped early (`workmesh bench --list | head`):
        # not an error worth a traceback.  Later writes go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return result


def _main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:
        # The suite has its own options (and --help); hand it everything after 'bench'.
        rest = argv[1:]
        return _cmd_bench(argparse.Namespace(bench_args=rest[1:] if rest[:1] == ["--"] else rest))
    args = _parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
