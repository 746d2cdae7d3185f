"""Inputs of the seeded fuzzing loop that once found a defect, kept as regressions.

Each is rebuilt from its seed (see ``one_input``) and must now pass its checks.
"""

from __future__ import annotations

import pytest

from ._kit import one_input

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("kind", "seed"),
    [
        ("node", 67487),  # a closed port's early message kept a port open
        ("node", 176636),  # a closed port's early message kept a descriptor open
    ],
)
def test_found_seed_passes(kind: str, seed: int) -> None:
    assert one_input(kind, seed) in {"accepted", "cut"}
