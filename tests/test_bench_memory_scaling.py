"""The memory and scaling bench cases end to end at a tiny scale: structure, never speed.

The memory cases count real objects, threads and child processes; the scaling
cases start real children and call them from many tasks at once.  The shared leak
check (conftest) finds nothing left afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.bench_checks import by_name, check_case, run_bench
from workmesh._bench import _memory, _memory_child

pytestmark = pytest.mark.timeout(120)


def test_memory_per_idle_channel_worker_and_child_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [
        "memory-idle-channel",
        "memory-idle-worker",
        "memory-idle-worker[async]",
        "memory-child-host",
        "memory-child-host[warm]",
    ]
    doc = run_bench(tmp_path, *names)

    cases = by_name(doc)
    assert list(cases) == names
    for case in cases.values():
        check_case(case)
        assert case["unit"] == "bytes" and case["target"] is None and case["bound"] is None
    assert cases["memory-idle-channel"]["peer"] == "asyncio.Queue"
    assert cases["memory-idle-worker"]["peer"] == cases["memory-idle-worker[async]"]["peer"]
    assert cases["memory-idle-worker"]["peer"] == "idle thread"

    channel = cases["memory-idle-channel"]["figures"]
    assert channel["heap B each at 100"] > 0 and channel["heap B each at 1000"] > 0
    # The bytes per channel do not change with the count: growth is linear.
    assert channel["heap growth (1 = linear)"] == pytest.approx(1.0, rel=0.2)
    assert cases["memory-idle-channel"]["ours"]["median"] == channel["heap B each at 1000"]
    for name in ("memory-idle-worker", "memory-idle-worker[async]"):
        figures = cases[name]["figures"]
        assert figures["heap B each at 4"] > 0 and figures["RSS B each at 16"] > 0
        assert cases[name]["ours"]["median"] == figures["RSS B each at 16"]
    for name in ("memory-child-host", "memory-child-host[warm]"):
        figures = cases[name]["figures"]
        rss, pss, private = figures["Rss KiB"], figures["Pss KiB"], figures["Private KiB"]
        assert 0 < private <= rss and 0 < pss <= rss
        assert cases[name]["ours"]["median"] == pytest.approx(rss * 1024)
    out = capsys.readouterr().out
    for group in ("memory-idle-channel", "memory-idle-worker", "memory-child-host"):
        assert f"{group} -- where the time goes: " in out


def test_the_memory_child_counts_what_it_holds() -> None:
    found = _memory_child.measure("channel", (50, 200))
    assert len(found["heap"]) == len(found["rss"]) == 2
    assert all(each > 0 for each in found["heap"])
    with pytest.raises(ValueError, match="unknown kind 'socket': expected one of channel"):
        _memory_child.measure("socket", (1, 2))
    with pytest.raises(ValueError, match="positive and increasing"):
        _memory_child.measure("channel", (20, 10))
    mine = _memory.smaps(os.getpid())
    assert 0 < mine["Private"] <= mine["Rss"]


def test_scaling_with_channels_and_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = []
    for what, counts in (("channels", (1, 10, 100)), ("procs", (1, 2, 4, 8))):
        for suffix in ("", "/throughput"):
            names += [f"xproc-scale-{what}-{count}{suffix}" for count in counts]
    doc = run_bench(tmp_path, *names)

    cases = by_name(doc)
    assert list(cases) == names
    for name, case in cases.items():
        one = name.split("-")[-1].split("/")[0] == "1"
        check_case(case, peer=not one)
        assert case["kind"] == ("throughput" if name.endswith("/throughput") else "latency")
        if not one:
            first = name.rsplit("-", 1)[0] + "-1" + ("/throughput" if "/" in name else "")
            assert case["peer_result"] == cases[first]["ours"]  # against K = 1, same rounds
            assert case["peer"] in ("1 channel", "1 process")
    # Every configuration made the same number of calls in all (at least 5 per caller).
    assert cases["xproc-scale-channels-100/throughput"]["ours"]["ops_per_round"] == 500
    assert cases["xproc-scale-procs-8/throughput"]["ours"]["ops_per_round"] == 40
    out = capsys.readouterr().out
    assert "xproc-scale-channels -- where the time goes: " in out
    assert "with 8 processes: parent loop" in out
