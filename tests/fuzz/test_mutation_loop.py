"""The long run's bulk: a million seeded inputs through the same checks, no hypothesis.

Runs only with WORKMESH_STRESS=1 (the default run fuzzes through hypothesis).
Unlike a hypothesis test it does not stop at the first bug: it goes through every
input, groups what it finds, and fails at the end naming each kind of bug with a
seed that reproduces it (``one_input(kind, seed)`` in ``_kit``).
"""

from __future__ import annotations

import logging
import time

import pytest

from ..chaos._scale import STRESS, figure, scale
from ._kit import run_loop

pytestmark = [
    pytest.mark.skipif(not STRESS, reason="the long mutation loop runs with WORKMESH_STRESS=1"),
    pytest.mark.timeout(3600),
]

SHARE = {"stream": 0.4, "payload": 0.3, "node": 0.3}


@pytest.mark.parametrize("kind", list(SHARE))
def test_a_million_mutated_inputs(kind: str) -> None:
    count = int(scale(short=1_000, long=1_000_000) * SHARE[kind])
    started = time.monotonic()
    logging.disable(logging.WARNING)  # a corrupt message is logged; not a million times
    try:
        result = run_loop(kind, count)
    finally:
        logging.disable(logging.NOTSET)
    elapsed = time.monotonic() - started
    parts = ", ".join(f"{n} {k}" for k, n in sorted(result.outcomes.items()))
    figure(f"fuzz loop, {kind}: {result.inputs} inputs in {elapsed:.0f} s ({parts})")
    for key, (seen, seed, _text) in sorted(result.bugs.items(), key=lambda b: -b[1][0]):
        figure(f"  {seen} x seed {seed}: {key}")
    assert not result.bugs, "\n\n".join(
        f"{seen} inputs, e.g. one_input({kind!r}, {seed}):\n{text}"
        for seen, seed, text in result.bugs.values()
    )
