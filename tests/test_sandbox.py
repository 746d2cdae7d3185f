"""Sandboxed children: limits, no_new_privs and the setup hook, in force before any
of the caller's code runs; failures to apply them fail the spawn.

Real child processes throughout, cold and warm.  Nothing is left behind (the
conftest fixture checks threads, descriptors and child processes).
"""

from __future__ import annotations

import os
import resource
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

import workmesh as wm
from workmesh._process import ChildFailedToStart, Mesh
from workmesh._process._zygote import WarmPopen

from .helpers.aio import run
from .helpers.aio import within as aio_within
from .helpers.sandbox_user import ReportParams
from .helpers.workers import Counter, CounterParams, Incr

pytestmark = pytest.mark.timeout(60)

USER = "tests.helpers.sandbox_user"
SETUP = "tests.helpers.sandbox_setup"
LIMITS = {"RLIMIT_NOFILE": (300, 400), "RLIMIT_CORE": (0, 0), "RLIMIT_CPU": (3600, 7200)}


within = partial(aio_within, seconds=20)  # this module waits longer than the others


async def spawn_report(mesh: Mesh, sandbox: wm.Sandbox, *, warm: bool) -> dict[str, Any]:
    reply, answers = wm.channel(dict[str, Any])
    child = await mesh.spawn(
        "boxed", f"{USER}:report", ReportParams(reply), sandbox=sandbox, warm=warm
    )
    del reply
    report: dict[str, Any] = await within(answers.recv())
    assert await within(child.wait()) == 0
    assert report["pid"] == child.pid
    return report


def proc_status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text(encoding="ascii")


def assert_confined(report: dict[str, Any], setup: str) -> None:
    pid = report["pid"]
    # The hook had run, in this very process, when the module was imported there.
    assert report["imported_here"]
    assert report["seen_at_import"] is not None
    assert report["seen_at_import"].startswith(setup)
    assert report["seen_at_import"].endswith(f"in {pid}")
    for name, (soft, hard) in LIMITS.items():
        assert report["rlimits"][name] == [soft, hard], name
    # Set while the child had one thread, so every thread it started since has it.
    assert report["threads"] >= 2
    assert len(report["no_new_privs"]) >= 2
    assert set(report["no_new_privs"].values()) == {1}


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_sandbox_is_in_force_before_the_childs_modules_are_imported(warm: bool) -> None:
    async def main() -> None:
        async with Mesh("sandbox") as mesh:
            if not warm:
                box = wm.Sandbox(rlimits=LIMITS, setup=f"{SETUP}:record")
                report = await spawn_report(mesh, box, warm=False)
                assert report["ppid"] == os.getpid()
                assert_confined(report, "record ")
                return
            box = wm.Sandbox(rlimits=LIMITS, setup=f"{SETUP}:record_with")
            # The first warm spawn starts the zygote (and itself starts cold); being
            # sandboxed, it does not have the zygote preload its modules.
            first = await spawn_report(mesh, box, warm=True)
            assert first["ppid"] == os.getpid()
            assert_confined(first, "record_with ")
            assert mesh._zygote is not None
            assert await within(mesh._zygote.wait_ready())
            forked = await spawn_report(mesh, box, warm=True)
            assert forked["ppid"] == mesh._zygote.pid  # forked, not started cold
            assert_confined(forked, "record_with ['RLIMIT_CORE', 'RLIMIT_CPU', 'RLIMIT_NOFILE']")

    run(main)


def test_sandboxed_warm_spawn_starts_cold_if_the_zygote_imported_its_package() -> None:
    async def main() -> None:
        async with Mesh("sandbox") as mesh:
            # The zygote preloads a module of the "tests" package, unconfined.
            assert await within(mesh._warm_up(["tests.helpers.children"]))
            box = wm.Sandbox(rlimits=LIMITS, setup=f"{SETUP}:record")
            report = await spawn_report(mesh, box, warm=True)
            assert report["ppid"] == os.getpid()  # started cold instead
            assert_confined(report, "record ")

    run(main)


def test_launch_host_applies_the_sandbox_to_the_host_process() -> None:
    async def main() -> None:
        async with Mesh("sandbox") as mesh:
            box = wm.Sandbox(rlimits={"RLIMIT_NOFILE": (256, 256)})
            host = await mesh.launch_host("boxed", imports=["tests.helpers.workers"], sandbox=box)
            client, requests = wm.channel(Incr)
            handle = await host.launch_worker(Counter, CounterParams(requests))
            del requests
            host.close()
            pid, count = await within(client.call(Incr, 5))
            assert count == 5
            (child,) = mesh.children.values()
            assert pid == child.pid
            # Read from outside, by this process: the host's limits and its flag.
            assert resource.prlimit(pid, resource.RLIMIT_NOFILE) == (256, 256)
            assert "NoNewPrivs:\t1\n" in proc_status(pid)
            handle.stop()
            await within(handle.join())
            client.close()
            assert await within(child.wait()) == 0

    run(main)


def _nr_open() -> int:
    return int(Path("/proc/sys/fs/nr_open").read_text())


FAILURES = {
    "setup raises": (
        wm.Sandbox(setup=f"{SETUP}:refuse"),
        "the sandbox setup 'tests.helpers.sandbox_setup:refuse' failed: "
        "the setup refused on purpose",
        "in refuse",
    ),
    "setup module missing": (
        wm.Sandbox(setup="tests.helpers.no_such_setup:fn"),
        "No module named 'tests.helpers.no_such_setup'",
        "import_module",
    ),
    "setup is async": (
        wm.Sandbox(setup=f"{SETUP}:not_a_plain_function"),
        "must be a plain function, not a coroutine",
        "_run_setup",
    ),
    "setrlimit refused": (
        # Above the kernel's ceiling for open files: refused even with privileges.
        wm.Sandbox(rlimits={"RLIMIT_NOFILE": (_nr_open() + 1, _nr_open() + 1)}),
        "setrlimit(RLIMIT_NOFILE, ",
        "setrlimit",
    ),
}


@pytest.mark.parametrize(
    ("kind", "warm"),
    [(kind, False) for kind in FAILURES] + [("setup raises", True)],
    ids=[f"{kind}-cold" for kind in FAILURES] + ["setup raises-warm"],
)
def test_a_sandbox_that_cannot_be_applied_fails_the_spawn(
    kind: str, warm: bool, tmp_path: Path
) -> None:
    sandbox, text, in_traceback = FAILURES[kind]
    mark = tmp_path / "imported"

    async def main() -> None:
        async with Mesh("sandbox") as mesh:
            if warm:
                assert await within(mesh._warm_up())
            reply, _answers = wm.channel(dict[str, Any])
            with pytest.raises(ChildFailedToStart) as info:
                await within(
                    mesh.spawn(
                        "boxed",
                        f"{USER}:report",
                        ReportParams(reply),
                        imports=[USER],
                        env={**os.environ, "WM_SANDBOX_MARK": str(mark)},
                        stderr=subprocess.DEVNULL,
                        sandbox=sandbox,
                        warm=warm,
                    )
                )
            (child,) = mesh.children.values()
            assert isinstance(child._proc, WarmPopen) is warm
            assert child.returncode == 1
            message = str(info.value)
            assert f"child 'boxed' (pid {child.pid}) could not apply its sandbox" in message
            assert text in message
            assert message.endswith("it exited with status 1")
            remote = info.value.__cause__
            assert isinstance(remote, wm.RemoteError)
            assert remote.chain[0].type_name.endswith("SandboxError")
            tracebacks = "".join(frame.traceback or "" for frame in remote.chain)
            assert in_traceback in tracebacks

    run(main)
    assert not mark.exists(), "the child imported its modules although its sandbox failed"


def test_launch_host_with_a_failing_sandbox_is_a_launch_error() -> None:
    async def main() -> None:
        async with Mesh("sandbox") as mesh:
            with pytest.raises(wm.LaunchError) as info:
                await within(
                    mesh.launch_host(
                        "boxed",
                        imports=[USER],
                        sandbox=wm.Sandbox(setup=f"{SETUP}:refuse"),
                        stderr=subprocess.DEVNULL,
                    )
                )
            assert isinstance(info.value, ChildFailedToStart)
            assert str(info.value).startswith("failed to launch worker host 'boxed': ")
            assert "the setup refused on purpose" in str(info.value)
            assert isinstance(info.value.__cause__, wm.RemoteError)
            (child,) = mesh.children.values()
            assert child.returncode == 1

    run(main)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"rlimits": {"RLIMIT_NOPE": (1, 1)}}, ValueError, "unknown resource 'RLIMIT_NOPE'"),
        ({"rlimits": {"NOFILE": (1, 1)}}, ValueError, "expected one of RLIMIT_AS"),
        ({"rlimits": {"RLIMIT_NOFILE": 5}}, ValueError, "must be a (soft, hard) tuple"),
        ({"rlimits": {"RLIMIT_NOFILE": (1, 2, 3)}}, ValueError, "got (1, 2, 3)"),
        ({"rlimits": {"RLIMIT_NOFILE": (-5, 10)}}, ValueError, "soft limit must be an int >= 0"),
        ({"rlimits": {"RLIMIT_NOFILE": (1, "10")}}, ValueError, "hard limit must be an int"),
        ({"rlimits": {"RLIMIT_NOFILE": (True, 1)}}, ValueError, "got True"),
        ({"rlimits": {"RLIMIT_NOFILE": (20, 10)}}, ValueError, "soft limit 20 is above the hard"),
        ({"rlimits": {"RLIMIT_NOFILE": (-1, 10)}}, ValueError, "soft limit -1 is above the hard"),
        ({"rlimits": [("RLIMIT_NOFILE", (1, 1))]}, TypeError, "must be a dict"),
        ({"no_new_privs": 1}, TypeError, "no_new_privs must be a bool, got 1 (int)"),
        ({"setup": "no_colon"}, ValueError, "must be 'module:function', got 'no_colon'"),
        ({"setup": ":fn"}, ValueError, "must be 'module:function'"),
        ({"setup": 42}, TypeError, "got int"),
    ],
)
def test_bad_sandboxes_are_refused_in_the_parent(
    kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        wm.Sandbox(**kwargs)
    assert text in str(info.value)
    assert str(info.value).startswith("Sandbox.")


def test_a_sandbox_travels_as_data_and_is_checked_when_decoded() -> None:
    box = wm.Sandbox(
        rlimits={"RLIMIT_NOFILE": (10, resource.RLIM_INFINITY)},
        no_new_privs=False,
        setup="pkg.mod:fn",
    )
    data = msgspec.msgpack.encode(box)
    assert msgspec.msgpack.decode(data, type=wm.Sandbox) == box
    assert wm.Sandbox().no_new_privs is True
    assert wm.Sandbox().rlimits == {}
    bad = msgspec.msgpack.encode({"rlimits": {"RLIMIT_NOFILE": [20, 10]}})
    with pytest.raises(msgspec.ValidationError, match="soft limit 20 is above the hard limit"):
        msgspec.msgpack.decode(bad, type=wm.Sandbox)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.msgpack.decode(msgspec.msgpack.encode({"seccomp": 1}), type=wm.Sandbox)


def test_spawn_refuses_a_sandbox_of_the_wrong_type_before_starting_anything() -> None:
    async def main() -> None:
        async with Mesh("sandbox") as mesh:
            with pytest.raises(TypeError, match=r"spawn\('x'\): sandbox must be a workmesh"):
                await mesh.spawn("x", f"{USER}:report", sandbox={"no_new_privs": True})  # type: ignore[arg-type]
            assert mesh.children == {}

    run(main)
