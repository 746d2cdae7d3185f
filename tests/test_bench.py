"""``workmesh bench`` end to end at a tiny scale: the JSON and the table, never speed.

Timing numbers vary with the machine, so nothing here compares them with a
target; the tests check that every case runs, that the stored ratio is ours /
peer from the stored medians, and that the machine is described.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from workmesh._bench import main
from workmesh._build import build_description

pytestmark = pytest.mark.timeout(60)

# About 40 round trips per round, two rounds: the whole file runs in about a second.
TINY = ["--quick", "--scale", "0.002", "--rounds", "2"]


def run_bench(tmp_path: Path, *cases: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    argv = [*TINY, "--json", str(out)]
    for name in cases:
        argv += ["--case", name]
    assert main(argv) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def test_peer_cases_store_medians_and_the_ratio_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    threads_before = set(threading.enumerate())
    doc = run_bench(tmp_path, "inproc-thread-rtt", "inproc-loop-rtt")

    assert set(threading.enumerate()) <= threads_before  # every bench thread was joined
    # Registry order, not command-line order.
    assert [case["name"] for case in doc["cases"]] == ["inproc-loop-rtt", "inproc-thread-rtt"]
    for case in doc["cases"]:
        ours, peer = case["ours"], case["peer_result"]
        assert case["status"] == "ok" and case["kind"] == "latency" and case["unit"] == "us"
        assert ours["median"] > 0 and peer["median"] > 0
        assert ours["p99"] >= ours["median"] and peer["p99"] >= peer["median"]
        assert len(ours["rounds"]) == 2 and ours["ops_per_round"] >= 5
        assert case["ratio"] == pytest.approx(ours["median"] / peer["median"])
        assert case["target"]["relation"] == "<="
        assert case["meets_target"] is (case["ratio"] <= case["target"]["ratio"])
    assert doc["cases"][0]["peer"] == "asyncio.Queue"
    assert doc["cases"][1]["peer"] == "queue.Queue"

    out, err = capsys.readouterr()
    assert "[1/2] inproc-loop-rtt" in err and "[2/2] inproc-thread-rtt" in err
    assert "inproc-thread-rtt" in out and "queue.Queue" in out and "\N{MULTIPLICATION SIGN}" in out


def test_machine_and_settings_are_described(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "channel_rt")

    machine = doc["machine"]
    for key in ("python_version", "implementation", "platform", "cpu_count", "date"):
        assert machine[key]
    assert isinstance(machine["uvloop"]["available"], bool)
    assert machine["workmesh_build"] == build_description()
    assert doc["settings"] == {"quick": True, "rounds": 2, "warmup_rounds": 1, "scale": 0.002}


def test_throughput_ratio_and_a_case_without_peer(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "inproc-loop-throughput", "channel_rt_through_ports")

    stream, ports = doc["cases"]
    assert stream["unit"] == "msg/s" and stream["ours"]["p99"] is None
    assert stream["ours"]["median"] > 0 and stream["peer_result"]["median"] > 0
    assert stream["ratio"] == pytest.approx(
        stream["ours"]["median"] / stream["peer_result"]["median"]
    )
    assert ports["status"] == "ok" and ports["ours"]["median"] > 0
    assert ports["peer"] is None and ports["peer_result"] is None and ports["ratio"] is None
    assert "encode" in ports["description"]


def test_uvloop_variant_runs_or_says_why_not(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "inproc-loop-rtt[uvloop]")

    (case,) = doc["cases"]
    if doc["machine"]["uvloop"]["available"]:
        assert case["status"] == "ok" and case["ratio"] > 0
    else:
        assert case["status"] == "skipped" and "uvloop" in case["note"]


def test_every_ported_rust_scenario_runs(tmp_path: Path) -> None:
    names = [
        "channel_rt",
        "channel_rt_large",
        "channel_rt_through_ports_force_serialize",
        "channel_and_rt",
        "oneshot_rt",
        "oneshot_rt_through_ports",
        "oneshot_and_rt",
    ]
    doc = run_bench(tmp_path, *names)

    assert [case["name"] for case in doc["cases"]] == names
    assert all(case["status"] == "ok" and case["ours"]["median"] > 0 for case in doc["cases"])


def test_unknown_case_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--case", "no-such-case"]) == 2
    assert "no-such-case" in capsys.readouterr().err


def test_list_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "inproc-loop-rtt vs asyncio.Queue, target" in listed and "oneshot_and_rt" in listed
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_compare_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = run_bench(tmp_path, "inproc-loop-rtt", "channel_rt")
    del old["machine"]["workmesh_build"]  # as if recorded before builds were (pure)
    (tmp_path / "old.json").write_text(json.dumps(old))
    new = run_bench(tmp_path, "inproc-loop-rtt", "oneshot_rt")
    new["machine"]["cpus_usable"] = 64  # as if run elsewhere
    new["machine"]["workmesh_build"] = "compiled (mypyc)"
    (tmp_path / "new.json").write_text(json.dumps(new))
    capsys.readouterr()

    assert main(["--compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0

    out = capsys.readouterr().out
    assert "note: cpus_usable differs" in out and "compare the ratios" in out
    assert "note: workmesh's build differs (pure Python -> compiled (mypyc))" in out
    names = ("inproc-loop-rtt", "oneshot_rt", "channel_rt")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(names)}
    assert list(rows) == list(names)  # the new run's cases, then those only in the old one
    ratio = f"{new['cases'][0]['ratio']:.2f}\N{MULTIPLICATION SIGN}"
    assert rows["inproc-loop-rtt"].rstrip().endswith(ratio)
    assert " - " in rows["channel_rt"]  # not in the new run


def test_compare_refuses_what_is_not_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text("[1, 2]")
    assert main(["--compare", str(bogus), str(bogus)]) == 2
    err = capsys.readouterr().err
    assert "is not a 'workmesh bench --json' result" in err and "got list" in err
    assert main(["--compare", str(tmp_path / "missing.json"), str(bogus)]) == 2
    assert "cannot read" in capsys.readouterr().err
