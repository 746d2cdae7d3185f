"""What the bench tests share: running cases at a tiny scale, and checking their results.

Timing numbers vary with the machine, so nothing here compares a number with a
target; the checks are on structure and sanity (positive numbers, the stored ratio
is ours / peer from the stored medians, a skipped peer says why).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from workmesh._bench import main

ROUNDS = 2
# At least 5 operations per round (1 for the start-up cases), two rounds after one warm-up.
TINY = ["--quick", "--scale", "0.002", "--rounds", str(ROUNDS)]
UNITS = {"latency": "us", "throughput": "msg/s", "bandwidth": "GB/s", "memory": "bytes"}
BENCH_EXTRA = "pip install -e '.[bench]'"


def run_bench(tmp_path: Path, *cases: str) -> dict[str, Any]:
    """Run ``workmesh bench`` on ``cases`` at the tiny scale; the JSON document."""
    out = tmp_path / "bench.json"
    argv = [*TINY, "--json", str(out)]
    for name in cases:
        argv += ["--case", name]
    assert main(argv) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {case["name"]: case for case in doc["cases"]}


def check_case(case: dict[str, Any], *, peer: bool = True) -> None:
    """A measured case: a real series (and its peer's), the ratio is ours / peer."""
    assert case["status"] == "ok", case["note"]
    assert case["unit"] == UNITS[case["kind"]]
    ours = case["ours"]
    assert ours["median"] > 0 and len(ours["rounds"]) == ROUNDS
    assert all(value > 0 for value in ours["rounds"])
    if case["kind"] == "latency":
        assert ours["p99"] >= ours["median"]
    else:
        assert ours["p99"] is None
    if not peer:
        assert case["peer"] is None and case["peer_result"] is None and case["ratio"] is None
        return
    theirs = case["peer_result"]
    assert theirs["median"] > 0 and len(theirs["rounds"]) == ROUNDS
    assert case["ratio"] == pytest.approx(ours["median"] / theirs["median"])


def check_target(case: dict[str, Any], expected: tuple[str, float] | None) -> None:
    """The case's goal on its ratio is ``expected``, and meets_target agrees with it."""
    if expected is None:
        assert case["target"] is None and case["meets_target"] is None
        return
    relation, ratio = expected
    assert case["target"]["relation"] == relation
    assert case["target"]["ratio"] == pytest.approx(ratio)
    if case["ratio"] is None:
        assert case["meets_target"] is None
        return
    met = case["ratio"] <= ratio if relation == "<=" else case["ratio"] >= ratio
    assert case["meets_target"] is met


def check_skipped_peer(case: dict[str, Any], *hints: str) -> None:
    """A peer that could not run: reported as skipped, with a note that says how to fix it."""
    assert case["status"] == "skipped"
    assert case["ours"] is None and case["peer_result"] is None
    for hint in hints:
        assert hint in case["note"], case["note"]


@contextmanager
def no_temp_files_left(folder: Path) -> Iterator[None]:
    """Temporary files made in this process go to ``folder``, which must be empty afterwards.

    (The peers' ipc:// and Unix socket files live in temporary directories.)  A
    folder of the test's own, so that a bench running elsewhere on the machine at
    the same time cannot be mistaken for this one.
    """
    folder.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved
    left = sorted(os.listdir(folder))
    assert not left, f"left behind in the temporary folder: {left}"
