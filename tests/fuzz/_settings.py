"""Hypothesis settings shared by the fuzz tests, scaled by WORKMESH_STRESS."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from ..chaos._scale import STRESS, scale
from ._kit import MUTATION_OPS, Mutation

# Shrinking a failure can take minutes on two cores, far more than the default run
# may spend; there a failure is reported as found (the Bug it raises names the
# exception and where it came from).  The stress run shrinks.
PHASES = tuple(Phase) if STRESS else (Phase.explicit, Phase.reuse, Phase.generate)


def fuzz_settings(*, short: int, long: int) -> settings:
    """``max_examples`` by the scale; no per-example deadline (the machine is shared)."""
    return settings(
        max_examples=scale(short=short, long=long),
        deadline=None,
        phases=PHASES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


randoms = st.randoms(use_true_random=False)  # draws hypothesis controls (and shrinks)

mutations: st.SearchStrategy[list[Mutation]] = st.lists(
    st.tuples(st.integers(0, MUTATION_OPS - 1), st.integers(0, 1 << 16), st.integers(0, 1 << 16)),
    min_size=1,
    max_size=4,
)


class Tally:
    """Counts the inputs a test tried and how each ended."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}

    def add(self, outcome: object) -> None:
        key = str(outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def line(self, what: str) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
        return f"{what}: {self.total} inputs ({parts})"
