"""The cross-process bench cases end to end at a tiny scale: structure, never speed.

Every xproc case starts real child processes (a Mesh child, the floor's socketpair
child, multiprocessing children, the pyzmq and Pyro5 children), so the tests also
check that the bench leaves nothing behind: no child to reap, no thread, no
descriptor, no temporary file.  Timing numbers vary with the machine, so nothing
here compares them with a target; only the stored ratio is checked against the
stored medians.  A peer whose package is missing is skipped with a note.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.bench_checks import (
    BENCH_EXTRA,
    TINY,
    by_name,
    check_case,
    check_skipped_peer,
    check_target,
    no_temp_files_left,
    run_bench,
)

pytestmark = pytest.mark.timeout(120)

PEERS = ["mp.Queue", "zmq", "Pyro5", "Ray"]
GROUPS = {
    "xproc-rpc-rtt-small": ["mp.Pipe", *PEERS, "asyncio"],
    "xproc-rpc-rtt-64k": ["mp.Pipe", *PEERS, "asyncio"],
    "xproc-oneway-small": ["mp.Pipe", *PEERS],
    "xproc-oneway-64k": ["mp.Pipe", *PEERS],
    "xproc-spawn": ["import-entry", "mp-spawn", "mp-fork"],
}
ALL = [name for first, rest in GROUPS.items() for name in (first, *(f"{first}/{r}" for r in rest))]
TARGETS = {  # from docs: performance.md, "Targets"
    "xproc-rpc-rtt-small": ("<=", 1.5),
    "xproc-rpc-rtt-small/mp.Pipe": ("<=", 1.0),
    "xproc-rpc-rtt-small/zmq": ("<=", 1.0),
    "xproc-rpc-rtt-small/Pyro5": ("<=", 1 / 3),
    "xproc-rpc-rtt-small/Ray": ("<=", 1 / 25),
    "xproc-rpc-rtt-64k": ("<=", 1.3),
    "xproc-oneway-small": (">=", 1.0),
    "xproc-oneway-64k": (">=", 0.9),
    "xproc-spawn": ("<=", 1.2),
}
# The package each peer needs, and what its note tells the reader to run.
PACKAGES = {
    "mp.Queue": (None, ""),
    "zmq": ("zmq", BENCH_EXTRA),
    "Pyro5": ("Pyro5", BENCH_EXTRA),
    "Ray": ("ray", "pip install ray"),
}


def installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


@pytest.fixture
def without_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray, when installed, runs in a process of its own (below), not in the test's.

    After ``ray.shutdown()`` Ray keeps descriptors of its own open for the rest of
    the process, which the leak check would rightly report.  A None entry in
    sys.modules makes an import fail as if the package were absent.
    """
    monkeypatch.setitem(sys.modules, "ray", None)


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
def nothing_left_behind(tmp_path: Path) -> Iterator[None]:
    """No child to reap, no new thread, descriptor or temporary file once the test is done."""
    _warm_uvloop()
    threads, fds = set(threading.enumerate()), _fd_count()
    with no_temp_files_left(tmp_path / "tmp"):
        yield
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    assert set(threading.enumerate()) <= threads, f"threads left: {threading.enumerate()}"
    assert _fd_count() == fds, f"descriptors left: {sorted(os.listdir('/proc/self/fd'))}"


def test_every_xproc_case_runs_beside_its_peers(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    nothing_left_behind: None,
    without_ray: None,
) -> None:
    doc = run_bench(tmp_path, *ALL)

    cases = by_name(doc)
    assert list(cases) == ALL  # registry order: each group's first case, then the others
    for name, case in cases.items():
        suffix = name.rpartition("/")[2]
        module, hint = PACKAGES.get(suffix, (None, ""))
        if name == "xproc-spawn/mp-fork" and case["status"] == "skipped":
            assert "threads" in case["note"]  # fork is refused while threads run
        elif suffix == "Ray" or not installed(module):
            check_skipped_peer(case, "not installed", hint)
        else:
            check_case(case)
        check_target(case, TARGETS.get(name))
    for first, others in GROUPS.items():
        # One measurement per group: its cases share our side and differ in the peer.
        names = [first, *(f"{first}/{other}" for other in others)]
        peers = [cases[name]["peer"] for name in names]
        assert len(set(peers)) == len(peers)
        for name in names[1:]:
            if cases[name]["status"] == "ok":
                assert cases[name]["ours"] == cases[first]["ours"]
            assert first in cases[name]["description"]
    assert cases["xproc-rpc-rtt-small"]["peer"].startswith("floor")
    assert cases["xproc-rpc-rtt-small/mp.Pipe"]["peer"] == "multiprocessing.Pipe"
    assert cases["xproc-rpc-rtt-small/mp.Queue"]["peer"] == "multiprocessing.Queue"
    assert cases["xproc-rpc-rtt-small/zmq"]["peer"].startswith("pyzmq PAIR ipc://")
    assert cases["xproc-rpc-rtt-64k/asyncio"]["peer"] == "asyncio BufferedProtocol"
    assert cases["xproc-oneway-64k/Pyro5"]["peer"] == "Pyro5 (msgpack serializer)"
    assert cases["xproc-spawn"]["peer"] == 'python -c "import workmesh"'
    peers = doc["machine"]["peers"]
    assert set(peers) == {"pyzmq", "Pyro5", "msgpack", "ray"}
    assert (peers["pyzmq"] is not None) == installed("zmq")

    out = capsys.readouterr().out
    for first in GROUPS:
        assert f"{first} -- where the time goes: " in out  # one line per group
    assert "xproc-oneway-64k/mp.Queue" in out and "\N{MULTIPLICATION SIGN}" in out


def test_a_missing_peer_package_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_left_behind: None
) -> None:
    for module in ("zmq", "Pyro5", "Pyro5.api", "ray"):
        monkeypatch.setitem(sys.modules, module, None)

    doc = run_bench(tmp_path, "xproc-rpc-rtt-small", *(f"xproc-oneway-small/{p}" for p in PEERS))

    cases = by_name(doc)
    check_case(cases["xproc-rpc-rtt-small"])  # the run went on
    check_case(cases["xproc-oneway-small/mp.Queue"])
    check_skipped_peer(cases["xproc-oneway-small/zmq"], "pyzmq is not installed", BENCH_EXTRA)
    check_skipped_peer(cases["xproc-oneway-small/Pyro5"], "Pyro5 is not installed", BENCH_EXTRA)
    check_skipped_peer(cases["xproc-oneway-small/Ray"], "Ray is not installed", "pip install ray")


def test_a_peer_case_alone_measures_its_group(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    nothing_left_behind: None,
    without_ray: None,
) -> None:
    first = run_bench(tmp_path, "xproc-oneway-small/mp.Pipe")
    second = run_bench(tmp_path, "xproc-oneway-small/mp.Pipe")

    for doc in (first, second):
        (case,) = doc["cases"]
        assert case["name"] == "xproc-oneway-small/mp.Pipe"
        assert case["peer"] == "multiprocessing.Pipe"
        check_case(case)
        check_target(case, None)
    # A new run measures anew (and says where the time went again): nothing is reused.
    assert capsys.readouterr().out.count("xproc-oneway-small -- where the time goes") == 2


@pytest.mark.skipif(not installed("ray"), reason="Ray is not installed (pip install ray)")
@pytest.mark.timeout(300)
def test_ray_peer_in_a_process_of_its_own(tmp_path: Path) -> None:
    out = tmp_path / "ray.json"
    cases = ["xproc-rpc-rtt-small/Ray", "xproc-oneway-small/Ray"]
    argv = [sys.executable, "-m", "workmesh", "bench", *TINY, "--json", str(out)]
    # Ray's session files go to the temporary folder too; its Unix socket paths must
    # stay under 108 bytes, so the folder is a short one of the system's.
    with tempfile.TemporaryDirectory(prefix="wm-") as temp:
        done = subprocess.run(
            [*argv, *(f"--case={case}" for case in cases)],
            env={**os.environ, "TMPDIR": temp},
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert not os.listdir(temp), f"left behind: {os.listdir(temp)}"
    doc = json.loads(out.read_text())
    for case in doc["cases"]:
        check_case(case)
        assert case["peer"] == "Ray actor"
    check_target(doc["cases"][0], ("<=", 1 / 25))
