"""The benchmark model: cases, their registry, settings, and the round runner.

A *case* measures one workmesh operation and, usually, the same work done by a
*peer* (``asyncio.Queue``, ``queue.Queue``, later the cross-process floor).  Both
sides are measured in the same process, in alternating rounds, so that clock
drift, thermal throttling or a noisy neighbour hits both alike; the reported
number is the median over rounds and the ratio is ours / peer.

A case's ``run`` function receives the :class:`Settings` and returns an
:class:`Outcome`, built with :func:`measure_latency` or :func:`measure_throughput`
from per-round functions (or from :class:`Series` a case computes itself).  Cases
are added with :func:`register`.

Four kinds of figure exist: latency (µs, lower is better), throughput (msg/s,
higher is better), bandwidth (GB/s, higher is better) and memory (bytes, lower
is better).  A case may have a :class:`Target` (a bound on the ratio to its peer)
and a :class:`Bound` (a bound on its own median, such as "at most 10 ms"), and
may carry named extra figures in its :class:`Outcome`.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

LATENCY: Final = "latency"
THROUGHPUT: Final = "throughput"
BANDWIDTH: Final = "bandwidth"
MEMORY: Final = "memory"
Kind = Literal["latency", "throughput", "bandwidth", "memory"]
UNITS: Final[dict[str, str]] = {
    LATENCY: "us",
    THROUGHPUT: "msg/s",
    BANDWIDTH: "GB/s",
    MEMORY: "bytes",
}
LOWER_IS_BETTER: Final = frozenset({LATENCY, MEMORY})
TIMES: Final = "\N{MULTIPLICATION SIGN}"  # named, so it cannot be mistaken for an x

R = TypeVar("R")

# One latency round: one duration (ns) per operation.
LatencyRound = Callable[[], list[int]]
# One throughput round: (operations done, elapsed ns for all of them).
ThroughputRound = Callable[[], tuple[int, int]]


class CaseSkipped(Exception):
    """Raised by a case that cannot run here (say, uvloop is not installed)."""


@dataclass(frozen=True)
class Target:
    """A goal on the ratio ours / peer: ``"<="`` for latency, ``">="`` for throughput."""

    relation: Literal["<=", ">="]
    ratio: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.ratio if self.relation == "<=" else ratio >= self.ratio

    def __str__(self) -> str:
        sign = "≤" if self.relation == "<=" else "≥"
        return f"{sign} {self.ratio:.3g}{TIMES}"


@dataclass(frozen=True)
class Bound:
    """A goal on the case's own median, in the case's unit (say, at most 10 ms).

    ``text`` is how the goal reads in the table ("≤ 10 ms"), since the unit the
    median is kept in (µs) is not always the one the goal is stated in.
    """

    relation: Literal["<=", ">="]
    value: float
    text: str

    def met(self, median: float) -> bool:
        return median <= self.value if self.relation == "<=" else median >= self.value

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Settings:
    """How long to measure.  ``scale`` multiplies every case's operation counts."""

    rounds: int = 7
    warmup_rounds: int = 1
    scale: float = 1.0

    def ops(self, base: int, minimum: int = 5) -> int:
        """Operations per round for a case whose full-size count is ``base``."""
        return max(minimum, round(base * self.scale))

    def warmup_ops(self, base: int) -> int:
        """Untimed operations at the start of each round (caches, allocator, branch state)."""
        return max(1, self.ops(base) // 10)


@dataclass(frozen=True)
class Series:
    """One side's result: per-op latency in µs, or throughput in operations per second."""

    median: float
    p99: float | None  # latency only: the median over rounds of each round's p99
    rounds: tuple[float, ...]  # each round's median (latency) or rate (throughput)
    ops_per_round: int


Figure = int | float | str | bool  # an extra figure of a case, shown and stored as it is


@dataclass(frozen=True)
class Outcome:
    ours: Series
    peer: Series | None = None
    # Named extra figures of the case (say, bytes per channel at each count), in
    # the order they should be shown; the keys say their unit.
    figures: Mapping[str, Figure] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """ours / peer on the medians (for throughput > 1 means we are faster)."""
        if self.peer is None or self.peer.median == 0:
            return None
        return self.ours.median / self.peer.median


@dataclass(frozen=True)
class Case:
    """One benchmark: what it measures, against whom, and the goal from performance.md."""

    name: str
    description: str
    kind: Kind
    run: Callable[[Settings], Outcome]
    peer: str | None = None
    target: Target | None = None
    bound: Bound | None = None

    @property
    def unit(self) -> str:
        return UNITS[self.kind]


_REGISTRY: dict[str, Case] = {}


def register(case: Case) -> Case:
    """Add a case; the table lists cases in registration order."""
    if case.name in _REGISTRY:
        raise ValueError(f"benchmark case {case.name!r} is registered twice")
    if case.target is not None and case.peer is None:
        raise ValueError(f"case {case.name!r} has a target but no peer to compare with")
    _REGISTRY[case.name] = case
    return case


def registered() -> list[Case]:
    return list(_REGISTRY.values())


# ------------------------------------------------------------------------------ timing


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Collect, then keep the cyclic collector off so its pauses land in no sample."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _alternate(settings: Settings, sides: list[Callable[[], R]]) -> list[list[R]]:
    """Run every side once per round, flipping the order each round; drop warm-ups."""
    results: list[list[R]] = [[] for _ in sides]
    for index in range(settings.warmup_rounds + settings.rounds):
        order = list(range(len(sides)))
        if index % 2:
            # Whoever runs second inherits the first one's warm caches; flip to share that.
            order.reverse()
        for side in order:
            with paused_gc():
                value = sides[side]()
            if index >= settings.warmup_rounds:
                results[side].append(value)
    return results


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _latency_series(rounds: list[list[int]]) -> Series:
    medians: list[float] = []
    p99s: list[float] = []
    for samples in rounds:
        ordered = sorted(samples)
        medians.append(percentile(ordered, 0.5) / 1e3)
        p99s.append(percentile(ordered, 0.99) / 1e3)
    return Series(
        median=statistics.median(medians),
        p99=statistics.median(p99s),
        rounds=tuple(medians),
        ops_per_round=len(rounds[0]),
    )


def _throughput_series(rounds: list[tuple[int, int]]) -> Series:
    rates = [ops * 1e9 / max(elapsed, 1) for ops, elapsed in rounds]
    return Series(
        median=statistics.median(rates),
        p99=None,
        rounds=tuple(rates),
        ops_per_round=rounds[0][0],
    )


def measure_latency(
    settings: Settings, ours: LatencyRound, peer: LatencyRound | None = None
) -> Outcome:
    """Alternate rounds of ``ours`` and ``peer``; each round returns per-op ns samples."""
    sides = [ours] if peer is None else [ours, peer]
    results = _alternate(settings, sides)
    series = [_latency_series(rounds) for rounds in results]
    return Outcome(series[0], series[1] if peer is not None else None)


def measure_throughput(
    settings: Settings, ours: ThroughputRound, peer: ThroughputRound | None = None
) -> Outcome:
    """Alternate rounds of ``ours`` and ``peer``; each round returns (ops, elapsed ns)."""
    sides = [ours] if peer is None else [ours, peer]
    results = _alternate(settings, sides)
    series = [_throughput_series(rounds) for rounds in results]
    return Outcome(series[0], series[1] if peer is not None else None)
