"""Conformance of the diagnostics tree: mesh-semantics §6 and the inspect tests of §9.

The §9 cases keep their original names (``test``, ``test_deferred``, ...) and their
expected text, so they can be read side by side with the original suite.  Deferral
is exercised in-process, from other threads, and through promoted workmesh
channels, where the Deferred is encoded and decoded by the codec exactly as a
message to another process would be.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

import workmesh as wm
from workmesh._channel._mpsc import (
    receiver_from_port,
    receiver_to_port,
    sender_from_port,
    sender_to_port,
)
from workmesh._channel._oneshot import oneshot_sender_to_port
from workmesh._inspection import (
    AnyInspectNode,
    Deferred,
    Forward,
    InspectDir,
    InspectError,
    InspectErrorKind,
    InspectFailed,
    Inspection,
    InspectRequest,
    InspectResponse,
    InspectValue,
    Sensitivity,
    ValueFlags,
    inspect,
    natural_key,
    update,
)
from workmesh._inspection._tree import PWait
from workmesh._wire import codec_for

pytestmark = pytest.mark.timeout(30)


# --------------------------------------------------------------------------- helpers


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    threads, fds = threading.active_count(), _fd_count()
    yield
    assert threading.active_count() == threads, f"threads leaked: {threading.enumerate()}"
    assert _fd_count() == fds, f"fds leaked: {sorted(os.listdir('/proc/self/fd'))}"


def inspect_sync(
    obj: object,
    path: str = "",
    depth: int | None = None,
    sensitivity: Sensitivity = Sensitivity.SENSITIVE,
) -> AnyInspectNode:
    """Inspect with nothing deferred: nothing needs to be waited for."""
    return asyncio.run(inspect(obj, path, depth, timeout=0, sensitivity=sensitivity))


def text(obj: object, path: str = "", depth: int | None = None) -> str:
    return str(inspect_sync(obj, path, depth))


class Foo:
    def __init__(self, xx: int = 0, xy: bool = False, xz: list[Foo] | None = None) -> None:
        self.xx, self.xy, self.xz = xx, xy, xz or []

    def __inspect__(self, req: InspectRequest) -> None:
        req.respond().field("xx", self.xx).field("xy", self.xy).fields("", enumerate(self.xz))


class Job:
    """A thread that runs one job, started and joined by the test (no leaks)."""

    def __init__(self, job: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(job,), daemon=True)

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def start(self) -> Job:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive(), "worker thread did not finish"
        if self.error is not None:
            raise self.error


class Holder(msgspec.Struct):
    """A message carrying a Deferred, as a worker's Inspect request would."""

    deferred: Deferred


def promoted(tp: Any) -> tuple[wm.Sender[Any], wm.Receiver[Any]]:
    """A channel whose both ends went through ports: every message is encoded."""
    send, recv = wm.channel(tp)
    return sender_from_port(sender_to_port(send), tp), receiver_from_port(
        receiver_to_port(recv), tp
    )


def roundtrip(value: Any, tp: Any) -> Any:
    codec = codec_for(tp)
    return codec.decode(codec.encode(value))


# --------------------------------------------------------------------------- §9 by name


def test() -> None:
    f = Foo(1, True, [Foo(3, False), Foo(5, True)])
    node = inspect_sync(f)
    assert str(node) == "{0: {xx: 3, xy: false}, 1: {xx: 5, xy: true}, xx: 1, xy: true}"
    assert node.to_json() == '{"0":{"xx":3,"xy":false},"1":{"xx":5,"xy":true},"xx":1,"xy":true}'
    assert node.to_dict() == {
        "0": {"xx": 3, "xy": False},
        "1": {"xx": 5, "xy": True},
        "xx": 1,
        "xy": True,
    }
    assert node.format(pretty=True) == (
        "{\n"
        "    0: {\n        xx: 3,\n        xy: false,\n    },\n"
        "    1: {\n        xx: 5,\n        xy: true,\n    },\n"
        "    xx: 1,\n"
        "    xy: true,\n"
        "}"
    )


def test_deferred() -> None:
    workers: list[Job] = []

    def handler(req: InspectRequest) -> None:
        deferred = req.defer()
        workers.append(Job(lambda: deferred.inspect(Foo())).start())

    node = asyncio.run(inspect(handler, timeout=5))
    for worker in workers:
        worker.join()
    assert str(node) == "{xx: 0, xy: false}"


def test_dropped() -> None:
    def handler(req: InspectRequest) -> None:
        req.defer()  # dropped at once: its reply channel closes

    node = asyncio.run(inspect(handler, timeout=86400))
    assert str(node) == "error (unresolved)"
    assert node.to_dict() == "<unresolved>"
    assert node.to_json() == '{"$error":"unresolved"}'


def test_path() -> None:
    def obj(req: InspectRequest) -> None:
        req.respond().field("a", 1).child(
            "b",
            lambda req: (
                req.respond().field("c", 2).field("d", 2).child("e", InspectRequest.respond)
            ),
        )

    assert text(obj, "a") == "1"
    assert text(obj, "///a") == "1"
    assert text(obj, "b") == "{c: 2, d: 2, e: {}}"
    assert text(obj, "b/c") == "2"
    assert text(obj, "b////c") == "2"
    assert text(obj, "b/c/") == "error (not a directory)"
    assert text(obj, "b/c/x") == "error (not a directory)"
    assert text(obj, "b/e") == "{}"
    assert text(obj, "b/e/") == "{}"
    assert text(obj, "b/e///") == "{}"
    assert text(obj, "b/f") == "error (not found)"
    assert text(obj, "x/y/z") == "error (not found)"
    assert inspect_sync(obj, "b/f") == InspectFailed(InspectErrorKind.NOT_FOUND)


def test_timeout() -> None:
    inspected = threading.Event()
    workers: list[Job] = []

    def answer_late(deferred: Deferred) -> None:
        # Answer only once the inspection has given up: the reply arrives too late.
        assert inspected.wait(10)
        deferred.inspect(Foo())

    def handler(req: InspectRequest) -> None:
        deferred = req.defer()
        workers.append(Job(lambda: answer_late(deferred)).start())

    node = asyncio.run(inspect(handler, timeout=0.01))
    inspected.set()
    for worker in workers:
        worker.join()
    assert str(node) == "error (unresolved)"


def test_merge() -> None:
    def obj(req: InspectRequest) -> None:
        req.respond().field("a", 1).request().respond().field("b", 2)

    assert text(obj) == "{a: 1, b: 2}"
    assert text(obj, "a") == "1"
    assert text(obj, "b") == "2"
    assert text(obj, "c") == "error (not found)"

    def merged(req: InspectRequest) -> None:
        req.respond().field("a", 1).merge({"b": 2, "c": {"d": 3}})

    assert text(merged) == "{a: 1, b: 2, c: {d: 3}}"
    assert text(merged, "c/d") == "3"


def test_named_merge() -> None:
    def obj(req: InspectRequest) -> None:
        req.respond().field("a", 1).field("a", 2).child(
            "x", lambda req: req.respond().field("b", 3).child("c", {"y": 4})
        ).child("x", lambda req: req.respond().field("b", 4).child("d", {"y": 5}))

    assert text(obj) == "{a: 2, x: {b: 4, c: {y: 4}, d: {y: 5}}}"
    assert text(obj, "x") == "{b: 4, c: {y: 4}, d: {y: 5}}"

    def dir_beats_value(req: InspectRequest) -> None:
        req.respond().field("a", {"b": 1}).field("a", 7).field("c", 7).field("c", {"d": 1})

    assert text(dir_beats_value) == "{a: {b: 1}, c: {d: 1}}"


class Settings:
    """test_update's Foo: an immutable field, a mutable one, an optional child."""

    def __init__(self, immut: int, mut: int, child: Settings | None = None) -> None:
        self.immut, self.mut, self.child = immut, mut, child

    def _set_mut(self, value: int) -> None:
        self.mut = value

    def __inspect__(self, req: InspectRequest) -> None:
        req.respond().field("immut", self.immut).field_mut("mut", self.mut, self._set_mut).field(
            "child", self.child
        )


def test_update() -> None:
    foo = Settings(1, 2, Settings(101, 102))

    async def main() -> None:
        with pytest.raises(InspectError) as info:
            await update(foo, "immut", "12")
        assert info.value.kind is InspectErrorKind.IMMUTABLE
        assert str(info.value) == "immutable node"

        with pytest.raises(InspectError) as info:
            await update(foo, "mut/", "4")
        assert info.value.kind is InspectErrorKind.NOT_A_DIRECTORY

        assert (await update(foo, "mut", "3")).value == 3
        assert (await update(foo, "//child/mut", "103")).value == 103
        assert foo.mut == 3
        assert foo.child is not None and foo.child.mut == 103

        with pytest.raises(InspectError) as info:
            await update(foo, "mut", "three")
        assert info.value.kind is InspectErrorKind.UPDATE
        assert str(info.value).startswith("update error: invalid literal for int()")
        assert foo.mut == 3

        with pytest.raises(InspectError) as info:
            await update(foo, "nothing", "1")
        assert info.value.kind is InspectErrorKind.NOT_FOUND

        # Ending on a directory is unresolved; its mutable children stay untouched.
        with pytest.raises(InspectError) as info:
            await update(foo, "child", "5")
        assert info.value.kind is InspectErrorKind.UNRESOLVED
        assert foo.child.mut == 103

        assert (await update(foo, "mut", "0x10")).value == 16

    asyncio.run(main())


def test_nest() -> None:
    def obj(req: InspectRequest) -> None:
        req.respond().field("x/a/b", 1).field("x/a/c", 2)

    assert text(obj) == "{x: {a: {b: 1, c: 2}}}"
    assert text(obj, "x/a") == "{b: 1, c: 2}"
    assert text(obj, "x", 0) == "{a: _}"
    assert text(obj, "x", 2) == "{a: {b: 1, c: 2}}"
    assert text(obj, "x/a/b") == "1"


def test_depth() -> None:
    evaluated: list[str] = []

    def must_not_run() -> int:
        evaluated.append("xxx")
        raise AssertionError("evaluated beyond the depth limit")

    def level3(req: InspectRequest) -> None:
        evaluated.append("3a")
        req.respond().field_with("xxx", must_not_run)

    def obj(req: InspectRequest) -> None:
        req.respond().field("1a", 0).field("1b", 0).field("1c", 0).child(
            "1d",
            lambda req: (
                req.respond()
                .field("2a", 0)
                .child("2b", lambda req: req.respond().child("3a", level3))
            ),
        ).field("1d/2b/3b", 0)

    assert text(obj, "1d", 0) == "{2a: 0, 2b: _}"
    assert text(obj, "", 0) == "{1a: 0, 1b: 0, 1c: 0, 1d: _}"
    assert text(obj, "", 1) == "{1a: 0, 1b: 0, 1c: 0, 1d: {2a: 0, 2b: _}}"
    assert evaluated == []  # never deep enough to run level3
    assert text(obj, "", 2) == "{1a: 0, 1b: 0, 1c: 0, 1d: {2a: 0, 2b: {3a: _, 3b: 0}}}"
    assert evaluated == ["3a"]  # level3 answered at depth 0; its child never ran
    assert inspect_sync(obj, "", 0).to_dict() == {"1a": 0, "1b": 0, "1c": 0, "1d": None}
    assert inspect_sync(obj, "", 0).to_json() == '{"1a":0,"1b":0,"1c":0,"1d":null}'


def test_hex() -> None:
    assert text(lambda req: req.respond().hex("a", 0x1234), "", 0) == "{a: 0x1234}"
    assert inspect_sync(lambda req: req.respond().hex("a", 0x1234)).to_json() == '{"a":"0x1234"}'


def test_binary() -> None:
    obj = lambda req: req.respond().binary("a", 0b1001000110100)  # noqa: E731
    assert text(obj, "", 0) == "{a: 0b1001000110100}"
    assert inspect_sync(obj).to_json() == '{"a":"0b1001000110100"}'


def test_since() -> None:
    state = {"n": 500, "b": False}

    def d(req: InspectRequest) -> None:
        resp = req.respond()
        if not state["b"]:
            resp.field("1_a", True).field("1_b", True)
        else:
            resp.field("1_c", True)
        resp.field("2", True).counter("3", state["n"])
        if not state["b"]:
            resp.field("4_a", True)
        else:
            resp.field("4_b", True).field("4_c", True)

    def obj(req: InspectRequest) -> None:
        req.respond().counter("c", state["n"]).field("f", state["n"]).child("d", d)
        state["n"] += 100
        state["b"] = True

    old = inspect_sync(obj, "", 1)
    new = inspect_sync(obj, "", 1)
    diff = new.since(old, 2)
    assert str(diff) == "{c: 50, d: {1_c: true, 2: true, 3: 50, 4_b: true, 4_c: true}, f: 600}"
    assert isinstance(diff, InspectDir) and diff["c"] == InspectValue(50.0, ValueFlags.COUNTER)


def test_bytes() -> None:
    node = inspect_sync(bytes([0xAB, 0xCD, 0xEF]), "", 1)
    assert str(node) == "<abcdef>"
    assert node.to_json() == '"q83v"'
    assert base64.b64decode("q83v" + "=") == b"\xab\xcd\xef"
    assert node.to_dict() == b"\xab\xcd\xef"


def test_sensitivity() -> None:
    safe, unspecified, sensitive = (
        Sensitivity.SAFE,
        Sensitivity.UNSPECIFIED,
        Sensitivity.SENSITIVE,
    )

    def d3(req: InspectRequest) -> None:
        req.respond().field("4a", 0, sensitivity=safe)

    def d2(req: InspectRequest) -> None:
        req.respond().child("3a", d3, sensitivity=sensitive)

    def d1(req: InspectRequest) -> None:
        req.respond().field("2a", 0, sensitivity=sensitive).child("2b", d2, sensitivity=safe)

    def obj(req: InspectRequest) -> None:
        req.respond().field("1a", 0, sensitivity=safe).field(
            "1b", 0, sensitivity=unspecified
        ).field("1c", 0, sensitivity=sensitive).child("1d", d1, sensitivity=safe).field(
            "1d/2b/3b", 0, sensitivity=unspecified
        ).child("", {"1e": 0}, sensitivity=sensitive)

    def at(level: Sensitivity) -> str:
        return str(inspect_sync(obj, sensitivity=level))

    assert at(safe) == "{1a: 0, 1d: {2b: {}}}"
    assert at(unspecified) == "{1a: 0, 1b: 0, 1d: {2b: {3b: 0}}}"
    assert at(sensitive) == "{1a: 0, 1b: 0, 1c: 0, 1d: {2a: 0, 2b: {3a: {4a: 0}, 3b: 0}}, 1e: 0}"
    assert text(obj) == at(sensitive)  # the default sees everything


# --------------------------------------------------------------------------- natural sort


def sort_naturally(names: list[str]) -> list[str]:
    return sorted(names, key=natural_key)


def test_natural_sort() -> None:
    names = [
        "foo",
        "foo299",
        "foo3",
        "bar_0x5",
        "bar_0x0f",
        "bar_0xg",
        "100foo",
        "100_foo",
        "3_foo",
        "3foo",
    ]
    assert sort_naturally(names) == [
        "3_foo",
        "100_foo",
        "100foo",
        "3foo",
        "bar_0x5",
        "bar_0x0f",
        "bar_0xg",
        "foo",
        "foo3",
        "foo299",
    ]


def test_hex_suffix_consistency() -> None:
    # A digit run followed by any letter is text, hex letters included.
    assert natural_key("3foo") > natural_key("100foo")
    assert natural_key("3cab") > natural_key("100cab")
    assert natural_key("3_cab") < natural_key("100_cab")


def test_decimal_overflow_does_not_panic() -> None:
    huge = "1" + "0" * 40
    assert sort_naturally([huge, "9", "x", "0x" + "f" * 40, huge + "1"]) == [
        "9",
        huge,
        huge + "1",
        "0x" + "f" * 40,
        "x",
    ]


def test_entries_sort_naturally() -> None:
    obj = {name: 0 for name in ["item10", "item9", "0x10", "0x9", "b", "a"]}
    node = inspect_sync(obj)
    assert isinstance(node, InspectDir)
    assert node.names() == ["0x9", "0x10", "a", "b", "item9", "item10"]


# --------------------------------------------------------------------------- deferral


def test_deferred_nested_across_threads() -> None:
    """A deferred answer that itself defers, to a second thread."""
    workers: list[Job] = []

    def inner(req: InspectRequest) -> None:
        deferred = req.defer()
        workers.append(Job(lambda: deferred.inspect({"deep": "yes"})).start())

    def middle(req: InspectRequest) -> None:
        deferred = req.defer()
        workers.append(
            Job(lambda: deferred.respond(lambda r: r.field("x", 1).child("inner", inner))).start()
        )

    node = asyncio.run(inspect({"middle": middle, "local": 0}, timeout=5))
    for worker in workers:
        worker.join()
    assert str(node) == '{local: 0, middle: {inner: {deep: "yes"}, x: 1}}'


def test_deferred_keeps_path_depth_and_sensitivity() -> None:
    seen: list[tuple[str, int, Sensitivity]] = []
    workers: list[Job] = []

    def remote(req: InspectRequest) -> None:
        deferred = req.defer()
        seen.append((deferred.path, deferred.depth, deferred.sensitivity))
        workers.append(Job(lambda: deferred.inspect({"a": {"b": {"c": 1}}, "z": 2})).start())

    def root(req: InspectRequest) -> None:
        req.respond().child("r", remote, sensitivity=Sensitivity.SAFE)

    async def main() -> list[AnyInspectNode]:
        return [
            await inspect(root, "r/a", 0, timeout=5, sensitivity=Sensitivity.SAFE),
            await inspect(root, "r/a/b/c", timeout=5),
        ]

    nodes = asyncio.run(main())
    for worker in workers:
        worker.join()
    # Sensitivity SAFE hides the remote's (unspecified) entries.
    assert [str(n) for n in nodes] == ["error (not found)", "1"]
    assert seen == [("/a", 1, Sensitivity.SAFE), ("/a/b/c", 4096, Sensitivity.SENSITIVE)]


def test_deferral_through_promoted_channel() -> None:
    """The Deferred goes inside an encoded message; the other side answers."""
    tx, rx = promoted(Holder)

    def serve() -> None:
        msg = rx.recv_blocking(10)
        assert isinstance(msg, Holder) and isinstance(msg.deferred, Deferred)
        msg.deferred.inspect(Foo(7, True, [Foo(1)]))

    worker = Job(serve).start()
    try:
        node = asyncio.run(inspect({"remote": Forward(tx, Holder)}, timeout=5))
    finally:
        worker.join()
        tx.close()
        rx.close()
    assert str(node) == "{remote: {0: {xx: 1, xy: false}, xx: 7, xy: true}}"


def test_deferral_nested_across_promoted_channels() -> None:
    """Process A asks B, B defers to C: C's receiver travels back inside B's reply."""
    to_b, b_rx = promoted(Holder)
    to_c, c_rx = promoted(Holder)

    def serve_c() -> None:
        c_rx.recv_blocking(10).deferred.inspect({"leaf": b"\x01\x02", "n": 3})

    def serve_b() -> None:
        msg = b_rx.recv_blocking(10)
        msg.deferred.respond(lambda resp: resp.field("b", True).child("c", Forward(to_c, Holder)))

    workers = [Job(serve_c).start(), Job(serve_b).start()]
    try:
        node = asyncio.run(inspect({"b": Forward(to_b, Holder)}, timeout=5))
    finally:
        for worker in workers:
            worker.join()
        for endpoint in (to_b, b_rx, to_c, c_rx):
            endpoint.close()
    assert str(node) == "{b: {b: true, c: {leaf: <0102>, n: 3}}}"


def test_deferred_codec_roundtrip() -> None:
    async def main() -> AnyInspectNode:
        moved: list[Deferred] = []

        def handler(req: InspectRequest) -> None:
            moved.append(roundtrip(req.defer(), Deferred))

        inspection = Inspection(handler, "a/b", depth=2, sensitivity=Sensitivity.UNSPECIFIED)
        (deferred,) = moved
        assert (deferred.path, deferred.depth, deferred.sensitivity) == (
            "a/b",
            3,
            Sensitivity.UNSPECIFIED,
        )
        assert isinstance(deferred.reply, wm.OneshotSender)
        deferred.value(5)  # wrong shape for the path: the walk reports it
        assert await inspection.resolve(5)
        return inspection.results()

    assert str(asyncio.run(main())) == "error (not a directory)"


def test_channel_failure_is_an_error_node() -> None:
    async def main() -> AnyInspectNode:
        ports: list[Any] = []

        def handler(req: InspectRequest) -> None:
            moved = roundtrip(req.defer(), Deferred)
            ports.append(oneshot_sender_to_port(moved.reply))

        inspection = Inspection({"x": handler})
        ports[0].fail(wm.NodeError("peer crashed"))
        await inspection.resolve(5)
        return inspection.results()

    node = asyncio.run(main())
    assert isinstance(node, InspectDir)
    failed = node["x"]
    assert isinstance(failed, InspectFailed) and failed.error is InspectErrorKind.CHANNEL
    assert str(node).startswith("{x: error (channel error: ")
    assert "node failure" in str(node)  # the peer sees that the port failed, not why
    assert node.to_dict()["x"]["$error"].startswith("channel error: ")


def test_malformed_reply_is_an_error_node() -> None:
    """A reply that is not a part tree (say, from a broken peer) spoils only its place."""

    async def main() -> AnyInspectNode:
        held: list[Any] = []

        def send(value: object) -> Callable[[InspectRequest], None]:
            def handler(req: InspectRequest) -> None:
                moved = roundtrip(req.defer(), Deferred)
                moved.reply.send(value)
                held.append(moved)

            return handler

        inspection = Inspection({"junk": send([1, 2, 3]), "fake": send(PWait(5)), "ok": 1})
        await inspection.resolve(5)
        return inspection.results()

    node = asyncio.run(main())
    assert isinstance(node, InspectDir) and node["ok"] == InspectValue(1)
    junk, fake = node["junk"], node["fake"]
    assert isinstance(junk, InspectFailed) and junk.error is InspectErrorKind.CHANNEL
    assert "message corruption" in junk.message
    assert fake == InspectFailed(
        InspectErrorKind.CHANNEL, "malformed inspect reply: int placeholder"
    )


def test_deferred_answers() -> None:
    def run(answer: Callable[[Deferred], None]) -> str:
        return str(asyncio.run(inspect({"d": lambda req: answer(req.defer()), "k": 1}, timeout=5)))

    assert run(lambda d: d.value(42)) == "{d: 42, k: 1}"
    assert run(lambda d: d.ignore()) == "{k: 1}"
    assert run(lambda d: d.respond(lambda resp: resp.field("z", "s"))) == '{d: {z: "s"}, k: 1}'
    assert run(lambda d: d.close()) == "{d: error (unresolved), k: 1}"

    def twice(d: Deferred) -> None:
        d.value(1)
        with pytest.raises(RuntimeError, match="already answered"):
            d.value(2)

    assert run(twice) == "{d: 1, k: 1}"


def test_deferred_update_from_thread() -> None:
    value = {"v": 1}
    workers: list[Job] = []

    def finish(deferred: Deferred) -> None:
        upd = deferred.update()
        assert upd is not None and upd.new_value == "9"
        value["v"] = int(upd.new_value)
        upd.succeed(value["v"])

    def leaf(req: InspectRequest) -> None:
        upd = req.update()
        if upd is None:
            req.value(value["v"])
            return
        deferred = upd.defer()
        workers.append(Job(lambda: deferred.succeed(int(deferred.new_value) * 2)).start())

    def remote(req: InspectRequest) -> None:
        deferred = req.defer()
        workers.append(Job(lambda: finish(deferred)).start())

    async def main() -> tuple[InspectValue, InspectValue]:
        return (
            await update({"remote": remote}, "remote", "9", timeout=5),
            await update({"leaf": leaf}, "leaf", "4", timeout=5),
        )

    remote_result, leaf_result = asyncio.run(main())
    for worker in workers:
        worker.join()
    assert remote_result.value == 9 and value["v"] == 9
    assert leaf_result.value == 8


def test_resolve_keeps_partial_results() -> None:
    """After the budget, answered parts stay and the rest is unresolved."""
    held: list[Deferred] = []

    def pending(req: InspectRequest) -> None:
        held.append(req.defer())

    def answered(req: InspectRequest) -> None:
        req.defer().value("here")

    node = asyncio.run(inspect({"a": answered, "b": pending}, timeout=0.01))
    assert node.to_dict() == {"a": "here", "b": "<unresolved>"}
    held.clear()


def test_resolve_can_continue() -> None:
    """An abandoned resolve() loses nothing: a later one picks up the late reply."""

    async def main() -> tuple[bool, str, bool, str]:
        held: list[Deferred] = []
        inspection = Inspection({"late": lambda req: held.append(req.defer()), "k": 1})
        first = await inspection.resolve(0.01)
        before = str(inspection.results())
        job = Job(lambda: held.pop().inspect(Foo(2))).start()
        try:
            second = await inspection.resolve(5)
        finally:
            job.join()
        return first, before, second, str(inspection.results())

    assert asyncio.run(main()) == (
        False,
        "{k: 1, late: error (unresolved)}",
        True,
        "{k: 1, late: {xx: 2, xy: false}}",
    )


# --------------------------------------------------------------------------- building


def test_handler_failure_is_contained() -> None:
    def broken(req: InspectRequest) -> None:
        req.respond().field("partial", 1)
        raise ValueError("boom")

    def twice(req: InspectRequest) -> None:
        req.value(1)
        req.value(2)

    node = inspect_sync({"ok": 1, "broken": broken, "twice": twice, "odd": object()})
    assert isinstance(node, InspectDir)
    assert str(node["broken"]) == "error (internal error: ValueError: boom)"
    assert "already answered by value()" in str(node["twice"])
    assert str(node["odd"]).startswith(
        "error (internal error: cannot inspect a value of type object"
    )
    assert node["ok"] == InspectValue(1)


def test_values_and_containers() -> None:
    class Color:
        def __index__(self) -> int:
            return 3

    obj = {
        "none": None,
        "list": ["a", 2.5, [True]],
        "big": 2**70,
        "neg": -5,
        "ba": bytearray(b"\x00"),
        "index": Color(),
        "float": 1e-3,
        "shown": 'quote"d',
    }
    node = inspect_sync(obj)
    assert str(node) == (
        '{ba: <00>, big: "1180591620717411303424", float: 0.001, index: 3, '
        'list: {0: "a", 1: 2.5, 2: {0: true}}, neg: -5, shown: "quote\\"d"}'
    )


def test_laziness_of_helpers() -> None:
    calls: list[str] = []

    def items() -> Iterator[tuple[str, int]]:
        calls.append("items")
        yield ("a", 1)

    def computed() -> int:
        calls.append("computed")
        return 1

    def obj(req: InspectRequest) -> None:
        resp: InspectResponse = req.respond()
        resp.field_with("computed", computed)
        resp.fields("many", items())
        resp.display("shown", 12)

    assert text(obj, "shown") == '"12"'
    assert calls == []
    assert text(obj, "many") == "{a: 1}"
    assert calls == ["items"]
    assert text(obj, "computed") == "1"
    assert calls == ["items", "computed"]


def test_field_mut_with() -> None:
    store = {"level": "info"}

    def level(new: str | None) -> str:
        if new is not None:
            if new not in ("debug", "info"):
                raise ValueError(f"unknown level {new!r}")
            store["level"] = new
        return store["level"]

    def obj(req: InspectRequest) -> None:
        req.respond().field_mut_with("level", level)

    async def main() -> None:
        assert str(await inspect(obj)) == '{level: "info"}'
        assert (await update(obj, "level", "debug")).value == "debug"
        with pytest.raises(InspectError, match="update error: unknown level 'loud'"):
            await update(obj, "level", "loud")

    asyncio.run(main())
    assert store["level"] == "debug"


def test_number_format_is_inherited() -> None:
    def inner(req: InspectRequest) -> None:
        req.respond().field("n", 255).binary("b", 5).field("s", "x")

    def obj(req: InspectRequest) -> None:
        inner(req.with_hex_format())

    assert text(obj) == '{b: 0b101, n: 0xff, s: "x"}'


def test_result_is_encodable() -> None:
    def obj(req: InspectRequest) -> None:
        req.respond().hex("h", 16).field("b", b"\x01").child("d", {"f": 1.5}).child(
            "u", lambda req: req.defer()
        )

    node = asyncio.run(inspect(obj, depth=0, timeout=5))
    assert roundtrip(node, AnyInspectNode) == node
    assert str(node) == "{b: <01>, d: _, h: 0x10, u: error (unresolved)}"
