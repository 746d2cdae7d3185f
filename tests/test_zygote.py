"""Warm children: forked by the Mesh's zygote, and otherwise like cold ones.

Real processes throughout.  Every test leaves no descriptor, thread or child
process behind (the autouse fixture checks), and nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

import workmesh as wm
from workmesh._process import ChildProcess, Mesh
from workmesh._process._runtime import acquire_runtime, release_runtime
from workmesh._process._zygote import WarmPopen, _await

from .helpers.children import BounceParams, EchoParams, PidParams

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
CHILDREN = "tests.helpers.children"
HERE = "tests.test_zygote"
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- entries run by children
class ReportParams(msgspec.Struct):
    reply: wm.Sender[dict[str, Any]]


def _fd_kinds() -> list[str]:
    kinds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the directory listing's own descriptor
            continue
        kinds.append(target.split(":[")[0] if ":[" in target else "file")
    return sorted(kinds)


async def report_process(message: wm.Message) -> None:
    """Tell the parent what this process looks like from the inside."""
    params = message.parse(ReportParams)
    params.reply.send(
        {
            "pid": os.getpid(),
            "env": os.environ.get("WM_ZYGOTE_TEST"),
            "cwd": os.getcwd(),
            "own_group": os.getpgid(0) == os.getpid(),
            "argv": sys.argv[1:],
            "fds": _fd_kinds(),
            "stderr": os.readlink("/proc/self/fd/2"),
            "threads": threading.active_count(),
        }
    )


# ----------------------------------------------------------------- helpers
def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


async def within(awaitable: Awaitable[T], seconds: float = 10) -> T:
    return await asyncio.wait_for(awaitable, seconds)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def is_gone(pidfd: int, timeout: float = 0.0) -> bool:
    ready, _, _ = select.select([pidfd], [], [], timeout)
    return bool(ready)


async def warm_mesh_ready(mesh: Mesh, *preload: str) -> int:
    """Start the zygote and return its pid."""
    assert await within(mesh._warm_up([CHILDREN, *preload]))
    assert mesh._zygote is not None
    return mesh._zygote.pid


async def spawn_echo(
    mesh: Mesh, *, warm: bool = True
) -> tuple[ChildProcess, wm.Sender[Any], wm.Receiver[Any]]:
    req_tx, req_rx = wm.channel()
    rep_tx, rep_rx = wm.channel()
    child = await mesh.spawn("echo", f"{CHILDREN}:echo", EchoParams(req_rx, rep_tx), warm=warm)
    return child, req_tx, rep_rx


async def spawn_holding(mesh: Mesh) -> tuple[ChildProcess, wm.Sender[int]]:
    """A warm child that reports its pid and stays until ``hold`` closes."""
    tx, rx = wm.channel(int)
    hold_tx, hold_rx = wm.channel(int)
    child = await mesh.spawn(
        "held", f"{CHILDREN}:report_pid_and_wait", PidParams(tx, hold_rx), warm=True
    )
    assert await within(rx.recv()) == child.pid
    return child, hold_tx


@pytest.fixture(scope="module", autouse=True)
def _process_wide_state() -> None:
    """Create what a process creates once, on its first mesh, before counting descriptors:
    libuv (when uvloop is installed) opens a process-wide pipe with its first loop."""
    acquire_runtime()
    release_runtime()


@pytest.fixture(autouse=True)
def _no_leaks(_process_wide_state: None) -> Iterator[None]:
    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    yield
    assert threading.active_count() == threads, f"threads leaked: {threading.enumerate()}"
    assert len(os.listdir("/proc/self/fd")) == fds, "descriptors leaked"
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child process left, not even a zombie


# ----------------------------------------------------------------- tests
def test_warm_child_is_forked_by_the_zygote_and_carries_channels() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            zygote = await warm_mesh_ready(mesh)
            child, tx, rx = await spawn_echo(mesh)
            assert isinstance(child._proc, WarmPopen)
            assert parent_of(child.pid) == zygote
            for i in range(500):
                tx.send({"n": i})
            assert [(await within(rx.recv()))["n"] for _ in range(500)] == list(range(500))
            # Endpoints travel through a warm child and keep working.
            in_tx, in_rx = wm.channel()
            out_tx, out_rx = wm.channel()
            bounce = await mesh.spawn(
                "bounce", f"{CHILDREN}:bounce", BounceParams(in_rx, out_tx), warm=True
            )
            data_tx, data_rx = wm.channel(str)
            data_tx.send("before")
            in_tx.send({"rx": data_rx})
            back = await within(out_rx.recv())
            data_tx.send("after")
            assert await within(back["rx"].recv()) == "before"
            assert await within(back["rx"].recv()) == "after"
            data_tx.close()
            with pytest.raises(wm.ChannelClosed):
                await within(back["rx"].recv())
            for sender in (tx, in_tx):
                sender.close()
            with pytest.raises(wm.ChannelClosed):
                await within(rx.recv())
            assert await within(child.wait()) == 0
            assert await within(bounce.wait()) == 0
            assert child.returncode == 0

    run(main)


def test_first_warm_spawn_starts_cold_while_the_zygote_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            first, tx1, rx1 = await spawn_echo(mesh)
            assert not isinstance(first._proc, WarmPopen)
            assert parent_of(first.pid) == os.getpid()
            assert mesh._zygote is not None
            # Later warm spawns wait for the zygote rather than starting cold.
            second, tx2, rx2 = await spawn_echo(mesh)
            assert isinstance(second._proc, WarmPopen)
            assert parent_of(second.pid) == mesh._zygote.pid
            for tx, rx in ((tx1, rx1), (tx2, rx2)):
                tx.send("ping")
                assert await within(rx.recv()) == "ping"
                tx.close()
            assert await within(first.wait()) == 0
            assert await within(second.wait()) == 0

    with caplog.at_level(logging.INFO, logger="workmesh._process._mesh"):
        run(main)
    assert any("starts cold while the zygote starts" in r.getMessage() for r in caplog.records)


def test_exit_status_of_warm_children() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            await warm_mesh_ready(mesh)
            tx, rx = wm.channel(str)
            ok = await mesh.spawn("ok", f"{CHILDREN}:sync_entry", tx, warm=True)
            del tx
            assert await within(rx.recv()) == "from a sync entry"
            assert await within(ok.wait()) == 0

            failing = await mesh.spawn(
                "fail", f"{CHILDREN}:fail", None, stderr=subprocess.DEVNULL, warm=True
            )
            assert isinstance(failing._proc, WarmPopen)
            assert await within(failing.wait()) == 1

            killed, _hold = await spawn_holding(mesh)
            killed.kill()
            assert await within(killed.wait()) == -signal.SIGKILL
            assert killed.wait_blocking(0) == -signal.SIGKILL
            assert "killed by SIGKILL" in repr(killed)
            killed.kill()  # reaped: a no-op, and no signal can reach a recycled pid
            for child in (ok, failing, killed):
                with pytest.raises(ProcessLookupError):
                    os.kill(child.pid, 0)  # reaped by the zygote: the pid is free

    run(main)


def test_warm_child_gets_what_a_cold_child_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Environment, working directory, process group, argv, stderr, and exactly the
    same kinds of descriptors (so nothing of the zygote's leaks into it)."""

    async def report(mesh: Mesh, *, warm: bool) -> dict[str, Any]:
        tx, rx = wm.channel(dict[str, Any])
        env = {**os.environ, "WM_ZYGOTE_TEST": "given"}
        child = await mesh.spawn(
            "report",
            f"{HERE}:report_process",
            ReportParams(tx),
            env=env,
            stderr=subprocess.DEVNULL,
            warm=warm,
        )
        del tx
        got: dict[str, Any] = await within(rx.recv())
        assert got["pid"] == child.pid
        assert isinstance(child._proc, WarmPopen) == warm
        assert await within(child.wait()) == 0
        return got

    async def main() -> None:
        async with Mesh("test") as mesh:
            await warm_mesh_ready(mesh, HERE)
            monkeypatch.chdir(tmp_path)  # after the zygote started: the child follows
            warm = await report(mesh, warm=True)
            cold = await report(mesh, warm=False)
            assert warm == {**cold, "pid": warm["pid"]}
            assert warm["env"] == "given"
            assert warm["cwd"] == str(tmp_path)
            assert warm["own_group"]
            assert warm["argv"] == ["report"]
            assert warm["stderr"] == "/dev/null"

    run(main)


def test_concurrent_warm_spawns_and_kill_cycles_leave_nothing() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            zygote = await warm_mesh_ready(mesh)
            spawned = await within(asyncio.gather(*(spawn_echo(mesh) for _ in range(8))))
            assert len({child.pid for child, _, _ in spawned}) == 8
            for n, (child, tx, rx) in enumerate(spawned):
                assert parent_of(child.pid) == zygote
                tx.send(n)
                assert await within(rx.recv()) == n
                tx.close()
                assert await within(child.wait()) == 0
            for _ in range(20):
                child, _hold = await spawn_holding(mesh)
                child.kill()
                assert await within(child.wait()) == -signal.SIGKILL

    run(main)


def test_killing_the_mesh_parent_kills_warm_children_and_the_zygote() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.warm_parent"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pidfds: list[int] = []
    try:
        assert proc.stdout is not None
        zygote, *children = (int(p) for p in proc.stdout.readline().split())
        assert len(children) == 2
        pidfds = [os.pidfd_open(pid) for pid in (zygote, *children)]
        assert parent_of(zygote) == proc.pid
        assert all(parent_of(pid) == zygote for pid in children)
        proc.kill()
        proc.wait(10)
        gone = [is_gone(fd, 1.0) for fd in pidfds]
        assert all(gone), f"outlived the Mesh parent by over 1 s: {gone} (zygote, children)"
    finally:
        for fd in pidfds:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def test_zygote_and_children_are_gone_when_the_mesh_exits() -> None:
    pidfds: list[int] = []

    async def main() -> tuple[int, list[ChildProcess]]:
        async with Mesh("test") as mesh:
            zygote = await warm_mesh_ready(mesh)
            pidfds.append(os.pidfd_open(zygote))
            children = []
            holds = []
            for _ in range(3):
                child, hold = await spawn_holding(mesh)
                pidfds.append(os.pidfd_open(child.pid))
                children.append(child)
                holds.append(hold)
        return zygote, children

    try:
        zygote, children = run(main)
        assert [c.returncode for c in children] == [0, 0, 0]  # asked to leave, and left
        assert all(is_gone(fd) for fd in pidfds)
        with pytest.raises(ChildProcessError):
            os.waitpid(zygote, os.WNOHANG)  # reaped by the Mesh
    finally:
        for fd in pidfds:
            os.close(fd)


def test_when_the_zygote_dies_its_children_die_and_spawns_go_cold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            zygote = await warm_mesh_ready(mesh)
            child, _hold = await spawn_holding(mesh)
            os.kill(zygote, signal.SIGKILL)  # our child, not yet reaped: the pid is its own
            # Its status died with the zygote; its death signal did not.
            assert await within(child.wait()) == -signal.SIGKILL
            after, tx, rx = await spawn_echo(mesh)
            assert not isinstance(after._proc, WarmPopen)
            assert parent_of(after.pid) == os.getpid()
            tx.send("cold and fine")
            assert await within(rx.recv()) == "cold and fine"
            tx.close()
            assert await within(after.wait()) == 0

    with caplog.at_level(logging.INFO):
        run(main)
    messages = [r.getMessage() for r in caplog.records]
    assert any("warm start unavailable" in m and "SIGKILL" in m for m in messages), messages
    assert any("starts cold" in m for m in messages), messages


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("import threading\nthreading.Thread(target=threading.Event().wait).start()\n", "threads"),
        ("from workmesh._node import local_node\nNODE = local_node()\n", "workmesh node"),
    ],
    ids=["thread", "node"],
)
def test_zygote_refuses_to_fork_an_unsafe_process(
    body: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "unsafe_at_import.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))  # for the zygote only: we never import it

    async def main() -> None:
        async with Mesh("test") as mesh:
            assert not await within(mesh._warm_up(["unsafe_at_import"]))
            child, tx, rx = await spawn_echo(mesh)
            assert not isinstance(child._proc, WarmPopen)
            tx.send("still served")
            assert await within(rx.recv()) == "still served"
            tx.close()
            assert await within(child.wait()) == 0

    with caplog.at_level(logging.INFO):
        run(main)
    assert "unsafe_at_import" not in sys.modules
    assert any(problem in r.getMessage() for r in caplog.records)


def test_cancelled_warm_spawn_kills_the_child_it_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            zygote = await warm_mesh_ready(mesh)
            assert mesh._zygote is not None
            os.kill(zygote, signal.SIGSTOP)  # it cannot answer: the spawn must be cancelled
            try:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(spawn_echo(mesh), 0.2)
            finally:
                os.kill(zygote, signal.SIGCONT)
            # Requests are answered in order: once this one is, the abandoned child
            # has been forked and handed to the Mesh, which killed it.
            child, tx, rx = await spawn_echo(mesh)
            killed = [r for r in caplog.records if "the spawn that asked for it" in r.message]
            assert len(killed) == 1
            abandoned = [c for c in mesh._zygote._children.values() if c.pid != child.pid]
            for other in abandoned:
                assert await within(_await(other._exit)) == -signal.SIGKILL
            tx.send("after")
            assert await within(rx.recv()) == "after"
            tx.close()
            assert await within(child.wait()) == 0

    with caplog.at_level(logging.DEBUG, logger="workmesh._process._zygote"):
        run(main)


def test_warm_start_is_much_faster_than_cold(capsys: pytest.CaptureFixture[str]) -> None:
    """Spawn -> first message echoed back, median of 20 each (printed for the record)."""

    async def first_message(mesh: Mesh, *, warm: bool) -> float:
        started = time.perf_counter()
        child, tx, rx = await spawn_echo(mesh, warm=warm)
        tx.send("first")
        assert await within(rx.recv()) == "first"
        elapsed = time.perf_counter() - started
        assert isinstance(child._proc, WarmPopen) == warm
        tx.close()
        await within(child.wait())
        return elapsed

    async def main() -> tuple[float, float]:
        async with Mesh("test") as mesh:
            await warm_mesh_ready(mesh)
            warm = [await first_message(mesh, warm=True) for _ in range(20)]
            cold = [await first_message(mesh, warm=False) for _ in range(20)]
            return statistics.median(warm), statistics.median(cold)

    warm, cold = run(main)
    with capsys.disabled():
        print(
            f"\nspawn -> first message, median of 20: warm {warm * 1e3:.1f} ms, "
            f"cold {cold * 1e3:.1f} ms"
        )
    assert warm < cold / 2
