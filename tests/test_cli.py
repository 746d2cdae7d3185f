"""The ``workmesh`` command, end to end in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

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
    assert "sent 1200, answered 1200, lost 0, applied twice 0" in out
    assert "balance after the restart: 2200 (1000 + 1200)" in out
    assert "the worker failed: the ledger does not balance (ValueError)" in out
    assert "killed by SIGKILL" in out
    assert "the worker itself: {balance: 50, pid: " in out
    assert "worker-host: {" in out
    assert "nothing is left running" in out
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


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """``workmesh bench --list | head -1``: the closed pipe is not our error."""
    import fcntl  # noqa: PLC0415 - Linux only, as the project is

    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)  # smaller than the listing
    proc = subprocess.Popen(
        [sys.executable, "-m", "workmesh", "bench", "--list"],
        stdout=write_end,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert reader.readline().startswith(b"inproc-loop-rtt")
    _out, err = proc.communicate(timeout=50)
    assert "Traceback" not in err, err
    assert "BrokenPipeError" not in err, err
    assert proc.returncode == 1


def test_unknown_command_is_a_usage_error() -> None:
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr
    assert "Traceback" not in proc.stderr


def _await_output(proc: subprocess.Popen[str], *needles: str) -> str:
    """Read the command's output until every needle has appeared (in any order)."""
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if all(needle in seen for needle in needles):
            return seen
    raise AssertionError(f"output ended before {needles!r}: {seen!r}")


def _pid_of(text: str, generation: int) -> str:
    line = next(x for x in text.splitlines() if f"ticker generation {generation}" in x)
    return line.split("pid ")[1]


@pytest.mark.parametrize("mode", ["--process", "--thread"])
def test_run_restarts_on_sighup_keeping_state_and_stops_on_sigterm(mode: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workmesh",
            "run",
            "tests.helpers.cli_workers:Ticker",
            "--params",
            '{"start": 5}',
            mode,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = _await_output(proc, "generation 0 count 5", "started worker ticker")
        proc.send_signal(signal.SIGHUP)
        second = _await_output(proc, "generation 1 count 6", "the worker restarted")
        if mode == "--process":
            assert _pid_of(first, 0) != _pid_of(second, 1), "a fresh process"
        proc.send_signal(signal.SIGTERM)
        _await_output(proc, "the worker stopped")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope_module:X"], "cannot import module 'nope_module'"),
        (["tests.helpers.cli_workers"], "expected MODULE:WorkerClass"),
        (["tests.helpers.cli_workers:Missing"], "has no attribute 'Missing'"),
        (["tests.helpers.cli_workers:NotAWorker"], "is not a workmesh Worker class"),
        (
            ["tests.helpers.cli_workers:Ticker", "--params", '{"start": "x"}'],
            "Expected `int`, got `str` - at `$.start`",
        ),
        (["tests.helpers.cli_workers:Ticker", "--params", "{"], "invalid --params"),
    ],
)
def test_run_bad_arguments_one_line_and_status_2(args: list[str], message: str) -> None:
    proc = run("run", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr


def test_run_keeps_the_worker_when_new_code_does_not_load(tmp_path: Path) -> None:
    module = tmp_path / "ticking.py"
    module.write_text("from tests.helpers.cli_workers import Ticker  # registers the worker\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workmesh", "run", "ticking:Ticker", "--process"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        _await_output(proc, "generation 0", "started worker ticker")
        module.write_text("this is not python(\n")
        proc.send_signal(signal.SIGHUP)
        _await_output(proc, "restart failed, the worker keeps running: cannot load the code")
        proc.send_signal(signal.SIGTERM)
        _await_output(proc, "the worker stopped")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
