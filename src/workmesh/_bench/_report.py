"""Presenting results: the machine description, the text table and the JSON document.

Numbers are kept unrounded in JSON (so ``ratio`` can be recomputed from the two
medians stored next to it) and rounded only for the table.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

from .._build import build_description
from ._core import BANDWIDTH, LATENCY, MEMORY, TIMES, Case, Outcome, Series, Settings

SCHEMA_VERSION = 2  # 2: bandwidth and memory kinds, bounds, figures, peers' versions


@dataclass(frozen=True)
class CaseResult:
    """What happened to one case: an outcome, or the reason it was skipped or failed."""

    case: Case
    outcome: Outcome | None = None
    skipped: str | None = None
    error: str | None = None
    detail: str | None = None  # the traceback of an error
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "skipped" if self.skipped is not None else "ok"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """Enough about this machine to tell whether two result files are comparable."""
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    uvloop_version = _version("uvloop")
    return {
        "python_version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "python_build": " ".join(platform.python_build()),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "uvloop": {"available": uvloop_version is not None, "version": uvloop_version},
        "msgspec_version": _version("msgspec"),
        # The peers' packages (None: not installed, so that peer was skipped).
        "peers": {dist: _version(dist) for dist in ("pyzmq", "Pyro5", "msgpack", "ray")},
        "workmesh_version": _version("workmesh"),
        # Pure Python or compiled (WORKMESH_COMPILE=1): the per-call costs differ.
        "workmesh_build": build_description(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------------ JSON


def _series_doc(series: Series | None) -> dict[str, Any] | None:
    if series is None:
        return None
    return {
        "median": series.median,
        "p99": series.p99,
        "rounds": list(series.rounds),
        "ops_per_round": series.ops_per_round,
    }


def _case_doc(result: CaseResult) -> dict[str, Any]:
    case, outcome = result.case, result.outcome
    ratio = outcome.ratio if outcome is not None else None
    target, bound = case.target, case.bound
    median = outcome.ours.median if outcome is not None else None
    return {
        "name": case.name,
        "description": case.description,
        "kind": case.kind,
        "unit": case.unit,
        "peer": case.peer,
        "status": result.status,
        "note": result.skipped or result.error,
        "seconds": result.seconds,
        "ours": _series_doc(outcome.ours if outcome else None),
        "peer_result": _series_doc(outcome.peer if outcome else None),
        "ratio": ratio,
        "target": None
        if target is None
        else {"relation": target.relation, "ratio": target.ratio, "text": str(target)},
        "meets_target": None if target is None or ratio is None else target.met(ratio),
        "bound": None
        if bound is None
        else {"relation": bound.relation, "value": bound.value, "text": bound.text},
        "meets_bound": None if bound is None or median is None else bound.met(median),
        "figures": dict(outcome.figures) if outcome is not None else {},
    }


def document(results: list[CaseResult], settings: Settings, quick: bool) -> dict[str, Any]:
    """The whole run as one JSON-ready dict."""
    return {
        "schema": SCHEMA_VERSION,
        "machine": machine(),
        "settings": {
            "quick": quick,
            "rounds": settings.rounds,
            "warmup_rounds": settings.warmup_rounds,
            "scale": settings.scale,
        },
        "cases": [_case_doc(result) for result in results],
    }


# ------------------------------------------------------------------------------ table

_HEADERS = ("case", "median", "p99", "peer", "peer median", "peer p99", "ratio", "target", "")


def fmt_bytes(value: float) -> str:
    """A byte count for people: B, KiB, MiB or GiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == LATENCY:
        if value >= 10_000:
            return f"{value / 1e3:.1f} ms"
        return f"{value:.2f} µs" if value < 100 else f"{value:.0f} µs"
    if kind == BANDWIDTH:
        return f"{value:.2f} GB/s"
    if kind == MEMORY:
        return fmt_bytes(value)
    if value >= 1e6:
        return f"{value / 1e6:.2f}M msg/s"
    if value < 1e4:
        return f"{value / 1e3:.2f}k msg/s"
    return f"{value / 1e3:.0f}k msg/s"


def _goal(case: Case) -> str:
    """The target column: the goal on the ratio, the goal on the median, or both."""
    return "; ".join(str(goal) for goal in (case.target, case.bound) if goal is not None)


def _verdict(result: CaseResult) -> str:
    if result.status != "ok":
        return f"{result.status}: {result.skipped or result.error}"
    assert result.outcome is not None
    case, ratio = result.case, result.outcome.ratio
    met: list[bool] = []
    if case.target is not None and ratio is not None:
        met.append(case.target.met(ratio))
    if case.bound is not None:
        met.append(case.bound.met(result.outcome.ours.median))
    if not met:
        return ""
    return "ok" if all(met) else "MISSED"


def _row(result: CaseResult) -> tuple[str, ...]:
    case, outcome = result.case, result.outcome
    if outcome is None:
        return (case.name, "", "", case.peer or "", "", "", "", _goal(case))
    ours, peer, kind = outcome.ours, outcome.peer, case.kind
    ratio = outcome.ratio
    return (
        case.name,
        _fmt(ours.median, kind),
        _fmt(ours.p99, kind) if ours.p99 is not None else "",
        case.peer or "",
        _fmt(peer.median, kind) if peer else "",
        _fmt(peer.p99, kind) if peer and peer.p99 is not None else "",
        f"{ratio:.2f}{TIMES}" if ratio is not None else "",
        _goal(case),
    )


def table(results: list[CaseResult]) -> str:
    """An aligned text table: one row per case, the verdict last (it may be long)."""
    rows = [(*_row(result), _verdict(result)) for result in results]
    widths = [max(len(row[col]) for row in [_HEADERS, *rows]) for col in range(len(_HEADERS))]
    right = {1, 2, 4, 5, 6}  # numbers line up on the right

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            cell.rjust(width) if col in right else cell.ljust(width)
            for col, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths[:-1])
    return "\n".join([line(_HEADERS), rule, *(line(row) for row in rows)])


def _figure(name: str, value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{name} {text}"


def figures(results: list[CaseResult]) -> str:
    """One line per case that carries extra figures (empty when none does)."""
    lines = []
    for result in results:
        if result.outcome is not None and result.outcome.figures:
            shown = "; ".join(_figure(k, v) for k, v in result.outcome.figures.items())
            lines.append(f"  {result.case.name}: {shown}")
    return "\n".join(lines)


def summary(settings: Settings, quick: bool) -> str:
    """The lines printed above the table."""
    info = machine()
    loop = f"uvloop {info['uvloop']['version']}" if info["uvloop"]["available"] else "no uvloop"
    build = info["workmesh_build"]
    mode = "quick" if quick else "full"
    return (
        f"workmesh bench ({mode}: {settings.rounds} rounds + {settings.warmup_rounds} warm-up, "
        f"scale {settings.scale:g}) on {info['implementation']} {info['python_version']}, "
        f"{info['platform']}, {info['cpus_usable']}/{info['cpu_count']} CPUs, {loop}, "
        f"workmesh {build}\n"
        "Medians over rounds; ratio = ours / peer measured side by side in this run "
        "(latency and memory: lower is better; throughput and bandwidth: higher is better)."
    )
