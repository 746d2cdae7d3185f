"""Channels across real child processes: order, close, failure, fds, limits, cleanup.

Every child is started through a Mesh from ``sys.executable``; every test leaves no
child, thread or descriptor behind (the conftest fixtures check).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import workmesh as wm
from workmesh._process import ChildFailedToStart, Mesh
from workmesh._transport import REHOME_VOTES

from .helpers.aio import run, within
from .helpers.children import (
    BounceParams,
    Calc,
    CountParams,
    EchoParams,
    FdParams,
    ForwardParams,
    PidParams,
    SinkParams,
    TypedParams,
)
from .helpers.workers import Counter, CounterParams, Incr

pytestmark = pytest.mark.timeout(60)

CHILDREN = "tests.helpers.children"
HERE = "tests.test_process"
ROOT = Path(__file__).resolve().parent.parent


def write_garbage_when_told(message: wm.Message) -> None:
    """Break the protocol on purpose, once told: raw bytes on the link to the parent.

    Not before: the parent must first have read that this child is ready.
    """
    from workmesh._process._runtime import acquire_runtime  # noqa: PLC0415

    hold = message.parse(wm.Receiver[Any])
    hold.recv_blocking()
    runtime = acquire_runtime()
    (conn,) = runtime.connections.values()
    conn.sock.setblocking(True)
    conn.sock.sendall(b"\xff" * 64)
    hold.recv_blocking()


async def spawn_echo(mesh: Mesh) -> tuple[Any, wm.Sender[Any], wm.Receiver[Any]]:
    req_tx, req_rx = wm.channel()
    rep_tx, rep_rx = wm.channel()
    child = await mesh.spawn("echo", f"{CHILDREN}:echo", EchoParams(req_rx, rep_tx))
    return child, req_tx, rep_rx


def test_round_trip_keeps_order_and_close() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            child, tx, rx = await spawn_echo(mesh)
            for i in range(1000):
                tx.send({"n": i, "blob": b"x" * (i % 7)})
            got = [await within(rx.recv()) for _ in range(1000)]
            assert [g["n"] for g in got] == list(range(1000))
            tx.close()
            with pytest.raises(wm.ChannelClosed):
                await within(rx.recv())
            assert await within(child.wait()) == 0

    run(main)


def test_large_bytes_cross_both_ways_whole_and_in_order() -> None:
    """Values large enough to be sent by reference, streamed both ways (the child
    echoes each one), beside small ones and past the socket buffer's size."""
    sizes = [16 << 10, 64 << 10, 1 << 20, 8 << 20] * 3

    async def main() -> None:
        async with Mesh("test") as mesh:
            child, tx, rx = await spawn_echo(mesh)
            values = [os.urandom(size) for size in sizes]
            for value in values:
                tx.send(value)
                tx.send(len(value))
            got = [await within(rx.recv(), 30) for _ in range(2 * len(values))]
            assert got == [x for v in values for x in (v, len(v))]
            tx.close()
            assert await within(child.wait()) == 0

    run(main)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="allocator tuning is glibc's")
def test_a_child_keeps_freed_memory_for_reuse() -> None:
    """glibc would give 16 freed blocks of 1 MiB back at once (each its own mapping);
    a Mesh child keeps them, so the next large messages do not fault pages in again."""

    async def main() -> list[int]:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(list[int])
            child = await mesh.spawn("rss", f"{CHILDREN}:free_memory_and_report_rss", tx)
            del tx
            got = await within(rx.recv())
            assert await within(child.wait()) == 0
            return got

    before, after = run(main)
    assert after > before - (4 << 20), f"resident size fell from {before} to {after} bytes"


def test_typed_payloads_and_many_senders_keep_per_sender_order() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            child, tx, rx = await spawn_echo(mesh)
            clones = [tx.clone() for _ in range(3)]
            for i in range(100):
                for k, c in enumerate(clones):
                    c.send((k, i))
            seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
            for _ in range(300):
                k, i = await within(rx.recv())
                seen[k].append(i)
            assert all(v == list(range(100)) for v in seen.values())
            for c in [tx, *clones]:
                c.close()
            await within(child.wait())

    run(main)


def test_endpoints_bounce_through_a_child_and_keep_working() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            in_tx, in_rx = wm.channel()
            out_tx, out_rx = wm.channel()
            child = await mesh.spawn("bounce", f"{CHILDREN}:bounce", BounceParams(in_rx, out_tx))
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
            in_tx.close()
            await within(child.wait())

    run(main)


def test_failable_rpc_across_processes() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(Calc)
            child = await mesh.spawn("calc", f"{CHILDREN}:calc_server", rx)
            del rx
            assert await within(tx.call_failable(Calc, 21)) == 42
            with pytest.raises(wm.RemoteError) as info:
                await within(tx.call_failable(Calc, -1))
            err = info.value
            assert str(err) == "negative input -1"
            assert err.chain[0].type_name == "ValueError"
            assert "in double" in (err.chain[0].traceback or "")
            tx.close()
            await within(child.wait())

    run(main)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: nothing spins")
def test_a_forked_child_spins_as_its_own_environment_says() -> None:
    """WORKMESH_SPIN_US given to a warm child is the one it follows, though the
    zygote it is forked from imported workmesh under the Mesh's environment."""

    def parent_of(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rpartition(")")[2].split()[1])

    async def main() -> None:
        base = {k: v for k, v in os.environ.items() if k != "WORKMESH_SPIN_US"}
        spins: dict[str, int] = {}
        forked: dict[str, bool] = {}
        async with Mesh("test") as mesh:
            # The first warm spawn starts cold while the zygote starts; the others fork.
            for name, env in (
                ("first", base),
                ("off", {**base, "WORKMESH_SPIN_US": "0"}),
                ("on", base),
            ):
                tx, rx = wm.channel(Calc)
                child = await mesh.spawn(name, f"{CHILDREN}:calc_server", rx, warm=True, env=env)
                del rx
                forked[name] = parent_of(child.pid) != os.getpid()
                for i in range(20):
                    assert await within(tx.call_failable(Calc, i)) == 2 * i
                tree = (await wm.inspect(mesh, timeout=5)).to_dict()
                (link,) = tree["children"][f"{name}-{child.pid}"]["process"]["connections"].values()
                spins[name] = link["spins"]  # the child's loop, after writing its answers
                tx.close()
                assert await within(child.wait()) == 0
        assert forked == {"first": False, "off": True, "on": True}
        assert spins["off"] == 0
        assert spins["on"] >= 1
        assert spins["first"] >= 1

    run(main)


def test_kill_9_fails_every_pending_receive() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            child, tx, rx = await spawn_echo(mesh)
            tx.send("warm")
            assert await within(rx.recv()) == "warm"
            calls_tx, calls_rx = wm.channel(Calc)
            calc = await mesh.spawn("calc", f"{CHILDREN}:calc_server", calls_rx)
            del calls_rx
            pending = asyncio.ensure_future(rx.recv())
            calls = [asyncio.ensure_future(calls_tx.call_failable(Calc, i)) for i in range(5)]
            await within(asyncio.gather(*calls))
            hang = asyncio.ensure_future(tx.call(lambda rpc: rpc, 1))  # never answered
            child.kill()
            with pytest.raises(wm.ChannelFailed) as info:
                await within(pending, 1.0)
            assert info.value.kind is wm.ChannelErrorKind.NODE_FAILURE
            assert "communication with node N-" in str(info.value)
            with pytest.raises((wm.ChannelFailed, wm.ChannelClosed)):
                await within(hang, 1.0)
            assert await within(child.wait()) == -signal.SIGKILL
            assert tx.is_closed()
            calls_tx.close()
            await within(calc.wait())

    run(main)


def test_fds_cross_into_a_child_and_work_there() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            r, w = os.pipe()
            ours, theirs = socket.socketpair()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(f"\0workmesh-test-{os.getpid()}")
            listener.listen()
            done_tx, done_rx = wm.channel(str)
            params = FdParams(
                wm.OwnedFd(w),
                wm.OwnedFd(theirs.detach()),
                wm.OwnedFd(listener.detach()),
                done_tx,
            )
            child = await mesh.spawn("fds", f"{CHILDREN}:use_fds", params)
            del params, done_tx
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await asyncio.get_running_loop().run_in_executor(
                None, client.connect, f"\0workmesh-test-{os.getpid()}"
            )
            assert await within(done_rx.recv()) == "done"
            assert os.read(r, 100) == b"through the pipe"
            assert ours.recv(100) == b"on the socket"
            assert client.recv(100) == b"accepted in the child"
            for s in (ours, client):
                s.close()
            os.close(r)
            assert await within(child.wait()) == 0

    run(main)


def test_receiver_forwarded_through_two_children_then_middle_killed() -> None:
    """A sends a receiver to B, B forwards it to C; A and C then talk directly and
    killing B afterwards does not disturb them."""

    async def main() -> None:
        async with Mesh("test") as mesh:
            to_b_tx, to_b_rx = wm.channel(wm.Receiver[str])
            b_to_c_tx, b_to_c_rx = wm.channel(wm.Receiver[str])
            replies_tx, replies_rx = wm.channel(str)
            c = await mesh.spawn(
                "C", f"{CHILDREN}:echo_received_receiver", SinkParams(b_to_c_rx, replies_tx)
            )
            settled_tx, settled_rx = wm.channel(str)
            b = await mesh.spawn(
                "B",
                f"{CHILDREN}:forward_receiver",
                ForwardParams(to_b_rx, b_to_c_tx, settled_tx),
            )
            del b_to_c_rx, replies_tx, to_b_rx, b_to_c_tx, settled_tx
            data_tx, data_rx = wm.channel(str)
            data_tx.send("one")
            to_b_tx.send(data_rx)
            assert await within(replies_rx.recv()) == "C got one"
            # Until B's relay retires, A's messages still go through B: killing B
            # earlier would (rightly) fail the channel.
            assert await within(settled_rx.recv()) == "settled"
            b.kill()
            assert await within(b.wait()) == -signal.SIGKILL
            data_tx.send("two")
            assert await within(replies_rx.recv()) == "C got two"
            data_tx.close()
            with pytest.raises(wm.ChannelClosed):
                await within(replies_rx.recv())
            to_b_tx.close()
            assert await within(c.wait()) == 0

    run(main)


def test_wrong_type_from_child_is_corruption() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(int)
            child = await mesh.spawn("typed", f"{CHILDREN}:send_wrong_type", TypedParams(tx))
            del tx
            with pytest.raises(wm.ChannelFailed) as info:
                await within(rx.recv())
            assert info.value.kind is wm.ChannelErrorKind.CORRUPTION
            assert "Expected `int`, got `str`" in str(info.value)
            assert rx.is_terminated()
            await within(child.wait())

    run(main)


def test_malformed_bytes_cut_one_child_and_spare_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            good, tx, rx = await spawn_echo(mesh)
            hold_tx, hold_rx = wm.channel(int)
            bad = await mesh.spawn("bad", f"{HERE}:write_garbage_when_told", hold_rx)
            del hold_rx
            hold_tx.send(0)
            probe = asyncio.ensure_future(hold_tx.call(lambda rpc: rpc, 0))
            with pytest.raises((wm.ChannelFailed, wm.ChannelClosed)):
                await within(probe)
            tx.send("still fine")
            assert await within(rx.recv()) == "still fine"
            bad.kill()
            await within(bad.wait())
            tx.close()
            await within(good.wait())

    run(main)
    assert any("connection to N-" in r.message and "cut" in r.message for r in caplog.records)


async def report_home(message: wm.Message) -> None:
    """Say whether this child reads its link to the parent on the loop it runs on."""
    from workmesh._process._runtime import acquire_runtime  # noqa: PLC0415

    reply = message.parse(wm.Sender[bool])
    (conn,) = acquire_runtime().connections.values()
    reply.send(conn.home is asyncio.get_running_loop())
    reply.close()


def test_links_are_read_on_the_loops_that_use_them() -> None:
    """The parent reads a child's link on the Mesh's loop, the child on its main loop."""

    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(bool)
            child = await mesh.spawn("home", f"{HERE}:report_home", tx)
            assert await within(rx.recv()) is True
            link = mesh.runtime.connections[child.node_id]
            assert link.home is asyncio.get_running_loop()
            assert await within(child.wait()) == 0

    run(main)


def test_a_blocked_parent_loop_does_not_stall_other_threads() -> None:
    """While the Mesh's loop is blocked, a thread still gets its replies from a child."""

    async def main() -> None:
        async with Mesh("test") as mesh:
            child, tx, rx = await spawn_echo(mesh)
            got: list[Any] = []

            def ask() -> None:
                for i in range(20):
                    tx.send(i)
                    got.append(rx.recv_blocking(timeout=10))

            asker = threading.Thread(target=ask)
            asker.start()
            asker.join()  # blocks the Mesh's loop: the I/O thread reads in its place
            assert got == list(range(20))
            tx.close()
            assert await within(child.wait()) == 0

    run(main)


def test_leaving_the_mesh_shuts_children_down() -> None:
    async def main() -> list[Any]:
        async with Mesh("test") as mesh:
            children = []
            holds = []
            for _ in range(3):
                tx, rx = wm.channel(int)
                hold_tx, hold_rx = wm.channel(int)
                children.append(
                    await mesh.spawn("c", f"{CHILDREN}:report_pid_and_wait", PidParams(tx, hold_rx))
                )
                holds.append(hold_tx)
                await within(rx.recv())
        return [c.returncode for c in children]

    assert run(main) == [0, 0, 0]


@pytest.mark.timeout(180)  # a hundred cold starts: minutes on a machine that is busy
def test_spawn_kill_cycles_leave_no_zombie_and_no_fd() -> None:
    before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        async with Mesh("test") as mesh:
            for _ in range(100):
                tx, rx = wm.channel(int)
                _hold_tx, hold_rx = wm.channel(int)
                params = PidParams(tx, hold_rx)
                child = await mesh.spawn("c", f"{CHILDREN}:report_pid_and_wait", params)
                del hold_rx, tx, params
                assert await within(rx.recv()) == child.pid
                child.kill()
                assert await within(child.wait()) == -signal.SIGKILL
                with pytest.raises(ProcessLookupError):
                    os.kill(child.pid, 0)  # reaped: the pid no longer exists

    run(main)
    assert len(os.listdir("/proc/self/fd")) == before


def test_children_die_with_their_parent() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.parent_of_children"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        pidfds = [os.pidfd_open(pid) for pid in pids]
        proc.kill()
        proc.wait(10)
        deadline_ok = True
        for fd in pidfds:
            ready, _, _ = select.select([fd], [], [], 1.0)
            deadline_ok = deadline_ok and bool(ready)
            os.close(fd)
        assert deadline_ok, "a child outlived its parent by more than 1 s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def test_entry_that_fails_exits_1() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            child = await mesh.spawn("f", f"{CHILDREN}:fail", None, stderr=subprocess.DEVNULL)
            assert await within(child.wait()) == 1

    run(main)


def test_sync_entry_function() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, rx = wm.channel(str)
            child = await mesh.spawn("s", f"{CHILDREN}:sync_entry", tx)
            del tx
            assert await within(rx.recv()) == "from a sync entry"
            assert await within(child.wait()) == 0

    run(main)


def test_bad_entry_is_rejected_before_spawning() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            with pytest.raises(ValueError, match="module:function"):
                await mesh.spawn("x", "no_colon_here")

    run(main)


def test_mesh_must_be_entered() -> None:
    async def main() -> None:
        mesh = Mesh("test")
        with pytest.raises(RuntimeError, match="async with Mesh"):
            await mesh.spawn("x", "a:b")

    run(main)


def test_child_that_cannot_load_its_code_fails_the_spawn() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            with pytest.raises(ChildFailedToStart) as info:
                await mesh.spawn(
                    "x", f"{CHILDREN}:no_such_function", None, stderr=subprocess.DEVNULL
                )
            text = str(info.value)
            assert "could not load its code: AttributeError" in text
            assert "no_such_function" in text
            assert "exited with status 1" in text
            with pytest.raises(ChildFailedToStart, match="No module named 'nowhere_to_be_found'"):
                await mesh.spawn(
                    "y",
                    f"{CHILDREN}:echo",
                    None,
                    imports=["nowhere_to_be_found"],
                    stderr=subprocess.DEVNULL,
                )

    run(main)


def test_inspecting_the_mesh_reaches_every_child() -> None:
    async def main() -> None:
        async with Mesh("test") as mesh:
            host = await mesh.launch_host("inspected", imports=["tests.helpers.workers"])
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests))
            del requests
            pid, _ = await within(client.call(Incr, 1))
            tree = (await wm.inspect(mesh, timeout=5)).to_dict()
            assert tree["name"] == "test"
            assert tree["process"]["pid"] == os.getpid()
            (child,) = tree["children"].values()
            assert child["pid"] == pid
            assert child["status"] == "running"
            inside = child["process"]
            assert inside["pid"] == pid
            assert inside["name"] == "inspected"
            assert inside["worker-host"]["workers"] == {"counter": {"thread": "worker-counter"}}
            depth0 = (await wm.inspect(mesh, depth=0, timeout=5)).to_dict()
            assert depth0["children"] is None, "depth 0 leaves subdirectories unevaluated"
            host.close()
            handle.stop()
            await within(handle.join())
            client.close()

    run(main)


def test_a_child_reads_its_link_on_the_loop_of_the_asyncio_worker_it_serves() -> None:
    """Requests for an asyncio worker are read on the worker's own loop (no hop
    through the child's main loop); once the worker is gone, the main loop reads
    again.  Seen through what inspecting the child shows for its link."""

    async def main() -> None:
        async with Mesh("test") as mesh:
            host = await mesh.launch_host("reader", imports=["tests.helpers.workers"])
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests))
            del requests
            for _ in range(20):
                await within(client.call(Incr, 1))

            async def read_on() -> str:
                tree = (await wm.inspect(mesh, timeout=5)).to_dict()
                (child,) = tree["children"].values()
                (link,) = child["process"]["connections"].values()
                # How often the reading loop spun for an answer, found it then,
                # and had the spin run by a coroutine about to park.
                assert 0 <= link["spin_reads"] <= link["spins"], link
                assert 0 <= link["spins_in_place"] <= link["spins"], link
                reader: str = link["read_on"]
                return reader

            assert await read_on() == "worker-counter"
            handle.stop()
            await within(handle.join())
            # The worker's loop hands reading back to the main loop as it goes.  Under
            # load the I/O thread has been seen reading for a while instead; then the
            # reads themselves (each inspection wakes the main loop) bring it back.
            readers = [await read_on()]
            while readers[-1] != "MainThread" and len(readers) < 2 * REHOME_VOTES:
                readers.append(await read_on())
            assert readers[-1] == "MainThread", readers
            host.close()
            client.close()

    run(main)


def test_diagnostics_socket_and_the_inspect_command(tmp_path: Path) -> None:
    sock_path = str(tmp_path / "diag.sock")

    async def main() -> None:
        async with Mesh("served") as mesh:
            child, tx, _rx = await spawn_echo(mesh)
            await mesh.serve_diagnostics(sock_path)
            assert os.stat(sock_path).st_mode & 0o777 == 0o600
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workmesh",
                "inspect",
                sock_path,
                "--json",
                "--timeout",
                "5",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
            out, err = await within(proc.communicate(), 30)
            assert proc.returncode == 0, err
            tree = json.loads(out)
            assert tree["name"] == "served"
            assert tree["children"][f"echo-{child.pid}"]["process"]["pid"] == child.pid
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workmesh",
                "inspect",
                sock_path,
                "process/pid",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
            out, _ = await within(proc.communicate(), 30)
            assert out.decode().strip() == str(os.getpid())
            tx.close()
            await within(child.wait())

    run(main)
    assert not os.path.exists(sock_path), "the socket goes with the mesh"


def test_inspect_command_without_a_mesh_fails_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workmesh", "inspect", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("workmesh inspect: cannot inspect")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_long_one_way_stream_arrives_whole_and_in_order() -> None:
    """A burst far larger than the socket buffer: the writer must hand over and resume."""
    n = 300_000

    async def main() -> None:
        async with Mesh("test") as mesh:
            tx, inbox = wm.channel(int)
            total_tx, total = wm.channel(int)
            child = await mesh.spawn(
                "counter", f"{CHILDREN}:count_until_closed", CountParams(inbox, total_tx)
            )
            del inbox, total_tx
            for i in range(n):
                tx.send(i)
            tx.close()
            assert await within(total.recv(), 60) == n
            assert await within(child.wait()) == 0

    run(main)


def test_blocked_sync_entry_does_not_keep_its_child_alive() -> None:
    async def main() -> int | None:
        async with Mesh("test", shutdown_timeout=20) as mesh:
            hold, inbox = wm.channel(int)
            child = await mesh.spawn("blocked", f"{CHILDREN}:block_until_closed", inbox)
            del inbox
        hold.close()
        return child.returncode

    assert run(main) == 0


def test_a_link_to_a_node_that_already_failed_is_dropped_quietly() -> None:
    """The leader may broker two links for one pair of children (each asked); if the
    first is cut before the second arrives, the second must be dropped, not raise."""
    from workmesh._ids import new_node_id  # noqa: PLC0415
    from workmesh._process._runtime import acquire_runtime, release_runtime  # noqa: PLC0415

    runtime = acquire_runtime()
    try:
        peer = new_node_id()
        runtime.node.fail_node(peer, "cut off earlier")
        ours, theirs = socket.socketpair()
        with theirs:
            assert runtime.attach(peer, ours) is None
            assert ours.fileno() == -1  # closed
            assert peer not in runtime.connections
            assert theirs.recv(16) == b""  # the far end sees the end at once
    finally:
        release_runtime()
