"""The cross-process bench cases end to end at a tiny scale: structure, never speed.

Every xproc case starts real child processes (a Mesh child, the floor's socketpair
child, multiprocessing children), so the tests also check that the bench leaves
nothing behind: no child to reap, no thread, no descriptor.  Timing numbers vary
with the machine, so nothing here compares them with a target; only the stored
ratio is checked against the stored medians.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workmesh._bench import main

pytestmark = pytest.mark.timeout(120)

# One operation count of at least 5 (1 per spawn side), two rounds after one warm-up.
TINY = ["--quick", "--scale", "0.002", "--rounds", "2"]

GROUPS = {
    "xproc-rpc-rtt-small": ["xproc-rpc-rtt-small/mp.Pipe"],
    "xproc-rpc-rtt-64k": ["xproc-rpc-rtt-64k/mp.Pipe"],
    "xproc-oneway-small": ["xproc-oneway-small/mp.Pipe"],
    "xproc-oneway-64k": ["xproc-oneway-64k/mp.Pipe"],
    "xproc-spawn": ["xproc-spawn/import-entry", "xproc-spawn/mp-spawn", "xproc-spawn/mp-fork"],
}
ALL = [name for first, rest in GROUPS.items() for name in (first, *rest)]
TARGETS = {  # from docs: performance.md, "Targets"
    "xproc-rpc-rtt-small": ("<=", 1.5),
    "xproc-rpc-rtt-small/mp.Pipe": ("<=", 1.0),
    "xproc-rpc-rtt-64k": ("<=", 1.3),
    "xproc-oneway-small": (">=", 1.0),
    "xproc-oneway-64k": (">=", 0.9),
    "xproc-spawn": ("<=", 1.2),
}


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _warm_uvloop() -> None:
    """Let libuv open its process-wide pipe now, if uvloop is there.

    workmesh's I/O thread runs uvloop when it is installed, and libuv keeps a pipe
    (its signal lock) for the life of the process from the first loop on: that is
    not something a test left behind.
    """
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return
    uvloop.new_event_loop().close()


@pytest.fixture
def nothing_left_behind() -> Iterator[None]:
    """No child to reap, no new thread and no new descriptor once the test is done."""
    _warm_uvloop()
    threads, fds = set(threading.enumerate()), _fd_count()
    yield
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    assert set(threading.enumerate()) <= threads, f"threads left: {threading.enumerate()}"
    assert _fd_count() == fds, f"descriptors left: {sorted(os.listdir('/proc/self/fd'))}"


def run_bench(tmp_path: Path, *cases: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    argv = [*TINY, "--json", str(out)]
    for name in cases:
        argv += ["--case", name]
    assert main(argv) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def check_case(case: dict[str, Any]) -> None:
    """A measured case: both series present, the ratio is ours / peer from the JSON."""
    assert case["status"] == "ok", case["note"]
    ours, peer = case["ours"], case["peer_result"]
    assert ours["median"] > 0 and peer["median"] > 0
    assert len(ours["rounds"]) == 2 and len(peer["rounds"]) == 2
    assert case["ratio"] == pytest.approx(ours["median"] / peer["median"])
    if case["kind"] == "latency":
        assert case["unit"] == "us"
        assert ours["p99"] >= ours["median"] and peer["p99"] >= peer["median"]
    else:
        assert case["unit"] == "msg/s" and ours["p99"] is None and peer["p99"] is None


def check_target(case: dict[str, Any]) -> None:
    expected = TARGETS.get(case["name"])
    if expected is None:
        assert case["target"] is None and case["meets_target"] is None
        return
    relation, ratio = expected
    assert (case["target"]["relation"], case["target"]["ratio"]) == (relation, ratio)
    met = case["ratio"] <= ratio if relation == "<=" else case["ratio"] >= ratio
    assert case["meets_target"] is met


def test_every_xproc_case_runs_beside_its_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nothing_left_behind: None
) -> None:
    doc = run_bench(tmp_path, *ALL)

    cases = {case["name"]: case for case in doc["cases"]}
    assert list(cases) == ALL  # registry order: each group's first case, then the others
    for name, case in cases.items():
        if name == "xproc-spawn/mp-fork" and case["status"] == "skipped":
            assert "threads" in case["note"]  # fork is refused while threads run
        else:
            check_case(case)
        check_target(case)
    for first, others in GROUPS.items():
        # One measurement per group: its cases share our side and differ in the peer.
        peers = [cases[name]["peer"] for name in (first, *others)]
        assert len(set(peers)) == len(peers)
        for name in others:
            assert cases[name]["ours"] == cases[first]["ours"]
            assert first in cases[name]["description"]
    assert cases["xproc-rpc-rtt-small"]["peer"].startswith("floor")
    assert cases["xproc-rpc-rtt-small/mp.Pipe"]["peer"] == "multiprocessing.Pipe"
    assert cases["xproc-spawn"]["peer"] == 'python -c "import workmesh"'

    out = capsys.readouterr().out
    for first in GROUPS:
        assert f"{first} -- where the time goes: " in out  # one line per group
    assert "xproc-oneway-64k/mp.Pipe" in out and "\N{MULTIPLICATION SIGN}" in out


def test_a_peer_case_alone_measures_its_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], nothing_left_behind: None
) -> None:
    first = run_bench(tmp_path, "xproc-oneway-small/mp.Pipe")
    second = run_bench(tmp_path, "xproc-oneway-small/mp.Pipe")

    for doc in (first, second):
        (case,) = doc["cases"]
        assert case["name"] == "xproc-oneway-small/mp.Pipe"
        assert case["peer"] == "multiprocessing.Pipe"
        check_case(case)
        check_target(case)
    # A new run measures anew (and says where the time went again): nothing is reused.
    assert capsys.readouterr().out.count("xproc-oneway-small -- where the time goes") == 2
