"""The worker bench cases end to end at a tiny scale: round trips, launch, hot restart.

Each test starts real child hosts (``mesh.launch_host``), real workers in them and
real peers; the shared leak check (conftest) then finds no process, thread or
descriptor left, and these tests also look for temporary files.  Speed is never
asserted: only structure, sanity, and what the cases check themselves (a restart
under load that lost, doubled or reordered a message fails its case).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.bench_checks import (
    BENCH_EXTRA,
    by_name,
    check_case,
    check_skipped_peer,
    check_target,
    no_temp_files_left,
    run_bench,
)
from workmesh._bench import _restart
from workmesh._bench._workers_child import TallyReport

pytestmark = pytest.mark.timeout(120)

PEERS = {  # suffix: (the module it needs, what its note says to run)
    "mp.Pipe": (None, ""),
    "mp.Queue": (None, ""),
    "zmq": ("zmq", BENCH_EXTRA),
    "Pyro5": ("Pyro5", BENCH_EXTRA),
    "Ray": ("ray", "pip install ray"),
    "asyncio": (None, ""),  # the yardstick: asyncio's own transport, no package needed
}


def installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def test_round_trips_to_async_and_sync_workers_beside_the_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ray, when installed, is tested in a process of its own (test_bench_xproc).
    monkeypatch.setitem(sys.modules, "ray", None)
    names = []
    for size in ("small", "64k"):
        first = f"worker-rpc-rtt-{size}"
        names += [first, *(f"{first}/{p}" for p in PEERS), f"{first}[sync]", f"{first}[sync]/async"]
    with no_temp_files_left(tmp_path / "tmp"):
        doc = run_bench(tmp_path, *names)

    cases = by_name(doc)
    assert list(cases) == names
    for size, floor_target in (("small", 1.5), ("64k", 1.3)):
        first = f"worker-rpc-rtt-{size}"
        main, sync = cases[first], cases[f"{first}[sync]"]
        check_case(main)
        check_case(sync)
        assert main["peer"].startswith("floor") and sync["peer"] == main["peer"]
        check_target(main, ("<=", floor_target))
        check_target(sync, ("<=", floor_target))
        # Two workers, two measurements of the same rounds: the floor is shared.
        assert sync["ours"] != main["ours"] and sync["peer_result"] == main["peer_result"]
        versus = cases[f"{first}[sync]/async"]
        check_case(versus)
        assert versus["peer"] == "asyncio worker" and versus["peer_result"] == main["ours"]
        for suffix, (module, hint) in PEERS.items():
            case = cases[f"{first}/{suffix}"]
            if suffix != "Ray" and installed(module):
                check_case(case)
                assert case["ours"] == main["ours"]
            else:
                check_skipped_peer(case, "not installed", hint)
    check_target(cases["worker-rpc-rtt-small/mp.Pipe"], ("<=", 1.0))
    check_target(cases["worker-rpc-rtt-small/Pyro5"], ("<=", 1 / 3))
    check_target(cases["worker-rpc-rtt-small/Ray"], ("<=", 1 / 25))
    check_target(cases["worker-rpc-rtt-64k/mp.Pipe"], None)
    for size in ("small", "64k"):
        yardstick = cases[f"worker-rpc-rtt-{size}/asyncio"]
        assert yardstick["peer"] == "asyncio BufferedProtocol"
        check_target(yardstick, None)  # a measure of the loop's own cost, not a goal

    out = capsys.readouterr().out
    for first in ("worker-rpc-rtt-small", "worker-rpc-rtt-64k[sync]"):
        line = out.split(f"{first} -- where the time goes: ", 1)[1].splitlines()[0]
        assert "worker thread" in line and "CPU µs per call" in line


def test_launching_a_host_cold_and_warm(tmp_path: Path) -> None:
    doc = run_bench(
        tmp_path, "worker-launch-cold", "worker-launch-cold/import-entry", "worker-launch-warm"
    )

    cold, entry, warm = doc["cases"]
    for case in (cold, entry, warm):
        check_case(case)
        assert case["ours"]["ops_per_round"] == 1
    assert cold["peer"] == warm["peer"] == 'python -c "import workmesh"'
    assert entry["peer"] == 'python -c "import workmesh._bench._workers_child"'
    check_target(cold, ("<=", 1.2))
    check_target(warm, None)
    assert warm["bound"] == {"relation": "<=", "value": 10_000.0, "text": "≤ 10 ms"}
    assert warm["meets_bound"] is (warm["ours"]["median"] <= 10_000.0)
    assert cold["bound"] is None and cold["meets_bound"] is None
    figures = cold["figures"]
    assert figures["cold launch_host ms"] > 0 and figures["cold launch_worker ms"] > 0
    # Every measured warm launch was forked by the zygote: warm is not cold in disguise.
    forked, _, count = warm["figures"]["forked by the zygote"].partition(" of ")
    assert forked == count and int(count) == 2 * 1  # rounds x launches per round
    assert entry["figures"] == {}  # shown once per side, on its first row


def test_restart_under_load_loses_nothing(tmp_path: Path) -> None:
    doc = run_bench(
        tmp_path, "worker-restart-gap", "worker-restart-gap/no-restart", "worker-restart-gap[idle]"
    )

    gap, burst, idle = doc["cases"]
    for case in (gap, burst, idle):
        check_case(case)
    assert gap["peer"] == idle["peer"] == "cold launch"
    assert burst["peer"] == "same burst, no restart"
    check_target(gap, ("<=", 1.3))
    figures = gap["figures"]
    assert figures["queued per restart"] == 20  # 10k at full scale, times 0.002
    assert figures["lost"] == figures["delivered twice"] == figures["out of order"] == 0
    assert 0 < figures["median normal gap µs"] <= gap["ours"]["median"]
    assert 0 < figures["restart() -> Started ms"] < figures["new host + restart -> Started ms"]
    assert idle["figures"]["restart() -> Started ms"] > 0


def test_a_lost_doubled_or_reordered_message_is_reported() -> None:
    pid, crc = os.getpid(), 1234
    assert _restart.delivery_problems(TallyReport(20, 0, crc, pid), 20, crc, pid) == []
    lost = _restart.delivery_problems(TallyReport(17, 0, crc, pid), 20, crc, pid)
    assert lost == ["17 of 20 queued messages arrived (3 lost)"]
    twice = _restart.delivery_problems(TallyReport(21, 2, crc, pid), 20, crc, pid)
    assert twice == [
        "21 of 20 queued messages arrived (1 delivered twice)",
        "2 arrived out of order",
    ]
    wrong = _restart.delivery_problems(TallyReport(20, 0, crc + 1, pid + 1), 20, crc, pid)
    assert wrong == [
        "the 1 KiB state arrived damaged",
        f"answered by pid {pid + 1}, not the host's {pid}",
    ]


def test_state_hand_off_rates(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "worker-handoff-memfd", "worker-handoff-bytes")

    memfd, as_bytes = doc["cases"]
    check_case(memfd)
    assert memfd["unit"] == "GB/s" and memfd["peer"] == "memfd write + read, one process"
    assert memfd["bound"]["relation"] == ">=" and memfd["bound"]["value"] == 1.0
    assert memfd["meets_bound"] is (memfd["ours"]["median"] >= 1.0)
    assert memfd["figures"]["state"] == "1.0 MiB"  # the smallest state the case uses
    assert memfd["figures"]["restart() -> Started ms"] > 0
    _, why_not = _restart._limits_for(1 << 20)
    if why_not is None:
        check_case(as_bytes)
        assert as_bytes["peer_result"] == memfd["peer_result"]
    else:
        assert "Limits" in why_not or "limits=" in why_not
        check_skipped_peer(as_bytes, why_not)
