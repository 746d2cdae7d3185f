"""The ``workmesh bench`` command: options, running the cases, the table and the JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
import traceback
from pathlib import Path

from ._compare import CompareError, compare, load
from ._core import Case, CaseSkipped, Settings, registered
from ._report import CaseResult, document, figures, summary, table

# Imported for their register() calls; the table follows this order.
_CASE_MODULES = (
    "workmesh._bench._inproc",
    "workmesh._bench._ports",
    "workmesh._bench._xproc",
    "workmesh._bench._workers",
    "workmesh._bench._restart",
    "workmesh._bench._memory",
    "workmesh._bench._scaling",
)

FULL = Settings(rounds=7, warmup_rounds=1, scale=1.0)
QUICK = Settings(rounds=3, warmup_rounds=1, scale=0.1)


def _cases() -> dict[str, Case]:
    for module in _CASE_MODULES:
        importlib.import_module(module)
    return {case.name: case for case in registered()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workmesh bench",
        description="Measure workmesh against its peers in one run and print the ratios "
        "(ours / peer) next to the targets of the performance design.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run: fewer rounds, 1/10 the operations"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results as JSON")
    parser.add_argument(
        "--case",
        metavar="NAME",
        action="append",
        default=[],
        help="run only this case (repeatable; see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("OLD", "NEW"),
        type=Path,
        help="compare two --json results (medians and same-run ratios) and exit",
    )
    parser.add_argument(
        "--scale",
        type=float,
        metavar="X",
        help="multiply every case's operation count by X (default 1, or 0.1 with --quick)",
    )
    parser.add_argument(
        "--rounds", type=int, metavar="N", help="measured rounds per case (default 7, 3 quick)"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else FULL
    scale = base.scale if args.scale is None else args.scale
    rounds = base.rounds if args.rounds is None else args.rounds
    return Settings(rounds=rounds, warmup_rounds=base.warmup_rounds, scale=scale)


def _select(names: list[str], cases: dict[str, Case]) -> list[Case] | str:
    """The chosen cases in registry order, or an error message naming the unknown ones."""
    unknown = [name for name in names if name not in cases]
    if unknown:
        return f"unknown case(s): {', '.join(unknown)}; known: {', '.join(cases)}"
    if not names:
        return list(cases.values())
    return [case for name, case in cases.items() if name in names]


def _run_one(case: Case, settings: Settings) -> CaseResult:
    started = time.perf_counter()
    try:
        outcome = case.run(settings)
    except CaseSkipped as exc:
        return CaseResult(case, skipped=str(exc), seconds=time.perf_counter() - started)
    except Exception as exc:
        # One broken case must not hide the others' numbers; the traceback goes to stderr.
        error = f"{type(exc).__name__}: {exc}"
        return CaseResult(
            case, error=error, detail=traceback.format_exc(), seconds=time.perf_counter() - started
        )
    return CaseResult(case, outcome=outcome, seconds=time.perf_counter() - started)


def _run_all(cases: list[Case], settings: Settings) -> list[CaseResult]:
    """Run the cases in order, one progress line per case on stderr."""
    results: list[CaseResult] = []
    width = max(len(case.name) for case in cases)
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case.name.ljust(width)} ... ", end="", file=sys.stderr)
        sys.stderr.flush()
        result = _run_one(case, settings)
        tail = f"{result.seconds:.1f} s" if result.status == "ok" else result.status
        print(tail, file=sys.stderr, flush=True)
        if result.detail:
            print(result.detail, file=sys.stderr, end="", flush=True)
        results.append(result)
    return results


def _check_no_threads_left(before: set[threading.Thread]) -> None:
    # Every case joins what it starts; say so loudly if one ever forgets.
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    if left:
        print(f"warning: threads still running after the bench: {left}", file=sys.stderr)


def _list(cases: dict[str, Case]) -> None:
    for case in cases.values():
        versus = f" vs {case.peer}" if case.peer else ""
        goals = [str(goal) for goal in (case.target, case.bound) if goal is not None]
        target = f", target {'; '.join(goals)}" if goals else ""
        print(f"{case.name}{versus}{target}\n    {case.description}")


def _compare_files(old: Path, new: Path) -> int:
    try:
        text = compare(load(old), load(new))
    except CompareError as exc:
        print(f"workmesh bench: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``workmesh bench`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = _parser().parse_args(argv)
    if args.compare is not None:
        return _compare_files(*args.compare)
    cases = _cases()
    if args.list:
        _list(cases)
        return 0
    selected = _select(args.case, cases)
    if isinstance(selected, str):
        print(f"workmesh bench: {selected}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings.rounds < 1 or settings.scale <= 0:
        print("workmesh bench: --rounds must be >= 1 and --scale > 0", file=sys.stderr)
        return 2
    threads_before = set(threading.enumerate())
    results = _run_all(selected, settings)
    _check_no_threads_left(threads_before)
    print(summary(settings, args.quick))
    print()
    print(table(results))
    print()
    extra = figures(results)
    if extra:
        print("Figures (units in the names; same run):")
        print(extra)
        print()
    for result in results:
        print(f"  {result.case.name}: {result.case.description}")
    if args.json is not None:
        doc = document(results, settings, args.quick)
        args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 1 if any(result.status == "error" for result in results) else 0
