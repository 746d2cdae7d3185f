"""The ``workmesh`` command, end to end in subprocesses."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workmesh", *args],
        capture_output=True,
        text=True,
        timeout=50,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_demo_runs_and_shows_each_part() -> None:
    proc = run("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "received in order: hello from a thread" in out
    assert "running total 5" in out
    assert "caller got RemoteError: cannot place 0 x cake" in out
    assert "remote type ValueError" in out
    assert "delivered [0, 1, 2]" in out
    assert proc.stderr == ""


@pytest.mark.parametrize("command", [[], ["demo"], ["bench"]])
def test_help(command: list[str]) -> None:
    proc = run(*command, "--help")
    assert proc.returncode == 0
    assert "usage: workmesh" in proc.stdout


def test_bench_passes_its_options_through() -> None:
    proc = run("bench", "--list")
    assert proc.returncode == 0, proc.stderr
    assert "inproc-loop-rtt" in proc.stdout


def test_unknown_command_is_a_usage_error() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr
    assert "Traceback" not in proc.stderr
