"""Tests for the exception taxonomy and RemoteError's errors-as-data form."""

from __future__ import annotations

import copy
import pickle
import traceback

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workmesh._errors import (
    ChannelClosed,
    ChannelEmpty,
    ChannelErrorKind,
    ChannelFailed,
    ErrorFrame,
    LaunchError,
    NodeError,
    PayloadError,
    RecvError,
    RemoteError,
    WorkmeshError,
)

pytestmark = pytest.mark.timeout(10)


class CustomError(Exception):
    class Nested(Exception):
        pass


def raise_root() -> None:
    raise KeyError("root cause")


def raise_middle_explicit() -> None:
    try:
        raise_root()
    except KeyError as exc:
        raise CustomError("cause") from exc


def raise_outer_explicit() -> None:
    try:
        raise_middle_explicit()
    except CustomError as exc:
        raise ValueError("outer") from exc


def raise_runtime() -> None:
    raise RuntimeError("handling")


def raise_outer_implicit() -> None:
    # The raise sits in a helper so that the context is implicit, as in real code
    # that fails while cleaning up after another failure.
    try:
        raise_root()
    except KeyError:
        raise_runtime()


def raise_suppressed() -> None:
    try:
        raise_root()
    except KeyError:
        raise ValueError("clean") from None


def caught(func: object) -> BaseException:
    assert callable(func)
    try:
        func()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


# --------------------------------------------------------------------------- simple errors


def test_hierarchy() -> None:
    assert issubclass(RecvError, WorkmeshError)
    for recv_cls in (ChannelClosed, ChannelEmpty, ChannelFailed):
        assert issubclass(recv_cls, RecvError)
    for other_cls in (NodeError, PayloadError, LaunchError, RemoteError):
        assert issubclass(other_cls, WorkmeshError)
        assert not issubclass(other_cls, RecvError)
    assert issubclass(PayloadError, ValueError)


def test_closed_and_empty_default_messages() -> None:
    assert str(ChannelClosed()) == "channel closed"
    assert str(ChannelEmpty()) == "channel empty"
    assert str(ChannelClosed("reply dropped")) == "reply dropped"


def test_channel_failed_without_cause() -> None:
    err = ChannelFailed(ChannelErrorKind.CORRUPTION)
    assert err.kind is ChannelErrorKind.CORRUPTION
    assert err.__cause__ is None
    assert str(err) == "channel failure: message corruption"


def test_channel_failed_with_node_error_cause() -> None:
    node_err = NodeError("remote node disconnected", node="N-3fa2…")
    err = ChannelFailed(ChannelErrorKind.NODE_FAILURE, node_err)
    assert err.kind is ChannelErrorKind.NODE_FAILURE
    assert err.__cause__ is node_err
    assert str(err) == (
        "channel failure: node failure: communication with node N-3fa2… failed: "
        "remote node disconnected"
    )


def test_channel_failed_without_cause_keeps_implicit_context() -> None:
    def fail() -> None:
        raise ChannelFailed(ChannelErrorKind.NODE_FAILURE)

    def fail_while_handling() -> None:
        try:
            raise OSError("pipe")
        except OSError:
            fail()

    exc = caught(fail_while_handling)
    assert isinstance(exc, ChannelFailed)
    assert isinstance(exc.__context__, OSError)
    assert not exc.__suppress_context__


def test_node_error_forms() -> None:
    remote = NodeError("remote node disconnected", node="N-0123abcd…")
    assert remote.node == "N-0123abcd…"
    assert remote.reason == "remote node disconnected"
    assert str(remote) == "communication with node N-0123abcd… failed: remote node disconnected"
    local = NodeError("event loop closed")
    assert local.node is None
    assert str(local) == "local mesh failure: event loop closed"
    assert local.__cause__ is None


def test_node_error_cause() -> None:
    cause = ConnectionResetError("reset")
    assert NodeError("lost", node="N-1", cause=cause).__cause__ is cause


def test_payload_error_fields() -> None:
    err = PayloadError(
        "Expected `int`, got `str` - at `$.a`", expected="int", got="str", path="$.a"
    )
    assert str(err) == "Expected `int`, got `str` - at `$.a`"
    assert (err.expected, err.got, err.path) == ("int", "str", "$.a")
    bare = PayloadError("nope")
    assert (bare.expected, bare.got, bare.path) == (None, None, None)


def test_launch_error_message_and_cause() -> None:
    assert str(LaunchError()) == "failed to launch worker"
    cause = FileNotFoundError("python3")
    err = LaunchError("failed to launch worker: exec failed", cause)
    assert str(err) == "failed to launch worker: exec failed"
    assert err.__cause__ is cause
    assert str(LaunchError("exec failed")) == "failed to launch worker: exec failed"


@pytest.mark.parametrize(
    "err",
    [
        ChannelClosed(),
        ChannelEmpty("x"),
        ChannelFailed(ChannelErrorKind.NODE_FAILURE, NodeError("gone", node="N-1")),
        NodeError("gone", node="N-1"),
        PayloadError("bad", expected="int", got="str", path="$"),
        LaunchError("failed to launch worker: boom"),
    ],
)
def test_plain_errors_pickle_round_trip(err: WorkmeshError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert vars(back) == vars(err)
    assert str(back.__cause__) == str(err.__cause__)


# --------------------------------------------------------------------------- from_exception


def test_from_exception_explicit_chain() -> None:
    remote = RemoteError.from_exception(caught(raise_outer_explicit))
    assert [f.type_name for f in remote.chain] == [
        "ValueError",
        f"{__name__}.CustomError",
        "KeyError",
    ]
    assert [f.message for f in remote.chain] == ["outer", "cause", "'root cause'"]
    assert str(remote) == "outer: cause: 'root cause'"
    outer, middle, root = (f.traceback for f in remote.chain)
    assert outer is not None
    assert middle is not None
    assert root is not None
    assert "raise_outer_explicit" in outer
    assert "raise_middle_explicit" not in outer
    assert "raise_middle_explicit" in middle
    assert "raise_root" not in middle
    assert "raise_root" in root
    # chain=False: each link carries only its own traceback, no chaining banners.
    assert "direct cause" not in outer
    assert "KeyError" not in outer
    assert outer.rstrip().endswith("ValueError: outer")


def test_from_exception_implicit_context_chain() -> None:
    remote = RemoteError.from_exception(caught(raise_outer_implicit))
    assert [f.type_name for f in remote.chain] == ["RuntimeError", "KeyError"]
    assert remote.chain[0].traceback is not None
    assert "raise_outer_implicit" in remote.chain[0].traceback
    assert remote.chain[1].traceback is not None
    assert "raise_root" in remote.chain[1].traceback
    assert "During handling" not in remote.chain[0].traceback


def test_from_exception_honours_suppress_context() -> None:
    exc = caught(raise_suppressed)
    assert exc.__context__ is not None
    remote = RemoteError.from_exception(exc)
    assert [f.type_name for f in remote.chain] == ["ValueError"]
    assert str(remote) == "clean"


def test_from_exception_nested_qualname() -> None:
    remote = RemoteError.from_exception(CustomError.Nested("n"))
    assert remote.type_name == f"{__name__}.CustomError.Nested"


def test_from_exception_survives_cycles() -> None:
    first, second = ValueError("a"), TypeError("b")
    first.__cause__ = second
    second.__cause__ = first
    remote = RemoteError.from_exception(first)
    assert [f.message for f in remote.chain] == ["a", "b"]

    selfish = ValueError("me")
    selfish.__context__ = selfish
    assert len(RemoteError.from_exception(selfish).chain) == 1


def test_unraised_exception_has_no_traceback() -> None:
    remote = RemoteError.from_exception(ValueError("never raised"))
    assert remote.chain == (ErrorFrame("ValueError", "never raised", None),)
    assert not getattr(remote, "__notes__", [])


def test_broken_str_does_not_break_conversion() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    remote = RemoteError.from_exception(Broken())
    assert "str() failed" in remote.message
    assert "Broken" in remote.message


def test_empty_message_shows_type_name() -> None:
    remote = RemoteError.from_exception(StopAsyncIteration())
    assert remote.message == ""
    assert str(remote) == "StopAsyncIteration"
    mixed = RemoteError([ErrorFrame("A", "outer", None), ErrorFrame("pkg.B", "", None)])
    assert str(mixed) == "outer: pkg.B"


# --------------------------------------------------------------------------- exception groups


def raise_group() -> None:
    errors: list[Exception] = []
    for func in (raise_root, raise_suppressed):
        try:
            func()
        except Exception as exc:
            errors.append(exc)
    raise ExceptionGroup("several failed", errors)


def test_exception_group_becomes_one_frame() -> None:
    remote = RemoteError.from_exception(caught(raise_group))
    assert len(remote.chain) == 1
    frame = remote.chain[0]
    assert frame.type_name == "ExceptionGroup"
    assert frame.message == "several failed [KeyError: 'root cause'; ValueError: clean]"
    assert frame.traceback is not None
    # The full group: its own raise site and every sub-exception's traceback.
    for name in ("raise_group", "raise_root", "raise_suppressed"):
        assert name in frame.traceback
    assert "ValueError: clean" in frame.traceback


def test_nested_exception_group_and_group_cause() -> None:
    def nested() -> None:
        try:
            raise_root()
        except KeyError as exc:
            inner = ExceptionGroup("inner", [TypeError("t"), CustomError("c")])
            raise ExceptionGroup("outer", [ValueError("v"), inner]) from exc

    remote = RemoteError.from_exception(caught(nested))
    assert [f.type_name for f in remote.chain] == ["ExceptionGroup", "KeyError"]
    assert remote.message == (
        f"outer [ValueError: v; ExceptionGroup: inner [TypeError: t; {__name__}.CustomError: c]]"
    )
    assert remote.chain[1].message == "'root cause'"


def test_base_exception_group() -> None:
    group = BaseExceptionGroup("stop", [KeyboardInterrupt()])
    remote = RemoteError.from_exception(group)
    assert remote.type_name == "BaseExceptionGroup"
    assert remote.message == "stop [KeyboardInterrupt]"


# --------------------------------------------------------------------------- splicing


def test_remote_error_cause_is_spliced_not_rewrapped() -> None:
    original = RemoteError.from_exception(caught(raise_outer_explicit))

    def relay() -> None:
        try:
            raise original
        except RemoteError as exc:
            raise LookupError("relayed") from exc

    relayed = RemoteError.from_exception(caught(relay))
    assert relayed.chain[0].type_name == "LookupError"
    assert relayed.chain[1:] == original.chain
    assert all("RemoteError" not in f.type_name for f in relayed.chain)


def test_remote_error_itself_is_spliced_and_ends_the_walk() -> None:
    original = RemoteError.from_exception(caught(raise_outer_explicit))

    def reraise() -> None:
        raise original

    def relay_with_context() -> None:
        try:
            raise OSError("local")
        except OSError:
            reraise()

    exc = caught(relay_with_context)
    assert exc is original
    assert isinstance(exc.__context__, OSError)
    again = RemoteError.from_exception(exc)
    assert again == original
    assert again.chain == original.chain


# --------------------------------------------------------------------------- notes


def test_notes_show_remote_tracebacks_when_printed() -> None:
    remote = RemoteError.from_exception(caught(raise_outer_explicit))
    notes = remote.__notes__
    assert len(notes) == 3
    assert notes[0].startswith("remote traceback (ValueError: outer):\n")
    assert notes[2].startswith("remote traceback (KeyError: 'root cause'):\n")

    def raise_it() -> None:
        raise remote

    printed = "".join(traceback.format_exception(caught(raise_it)))
    for frame in remote.chain:
        assert frame.traceback is not None
        assert frame.traceback.rstrip() in printed
    assert "raise_root" in printed


def test_notes_only_for_frames_with_tracebacks_and_not_duplicated() -> None:
    remote = RemoteError([ErrorFrame("A", "a", "Traceback: tb of a\n"), ErrorFrame("B", "b", None)])
    assert remote.__notes__ == ["remote traceback (A: a):\nTraceback: tb of a"]
    remote.__init__(remote.chain)  # type: ignore[misc]
    assert len(remote.__notes__) == 1


# --------------------------------------------------------------------------- data form

frame_strategy = st.builds(
    ErrorFrame,
    st.text(st.characters(codec="utf-8")),
    st.text(st.characters(codec="utf-8")),
    st.none() | st.text(st.characters(codec="utf-8")),
)


@given(st.lists(frame_strategy, min_size=1, max_size=6))
def test_wire_round_trip(chain: list[ErrorFrame]) -> None:
    remote = RemoteError(chain)
    wire = remote.to_wire()
    assert wire == [[f.type_name, f.message, f.traceback] for f in chain]
    back = RemoteError.from_wire(wire)
    assert back.chain == tuple(chain)
    assert back == remote
    assert hash(back) == hash(remote)
    over_msgpack = RemoteError.from_wire(msgspec.msgpack.decode(msgspec.msgpack.encode(wire)))
    assert over_msgpack.chain == tuple(chain)


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (3, "$", "Expected `list` of at least one frame, got `int` - at `$`"),
        ([], "$", "got `list` of length 0"),
        ("abc", "$", "got `str`"),
        ({"a": 1}, "$", "got `dict`"),
        (
            [["A", "a", None], ["B", "b", None], 7],
            "$[2]",
            "Expected `list` of [type_name, message, traceback], got `int` - at `$[2]`",
        ),
        ([["A", "a"]], "$[0]", "got `list` of length 2"),
        ([["A", "a", None, "x"]], "$[0]", "got `list` of length 4"),
        ([[1, "a", None]], "$[0][0]", "Expected `str`, got `int` - at `$[0][0]`"),
        ([["A", None, None]], "$[0][1]", "Expected `str`, got `None`"),
        ([["A", "a", b"tb"]], "$[0][2]", "Expected `str | None`, got `bytes`"),
    ],
)
def test_from_wire_rejects_malformed(data: object, path: str, fragment: str) -> None:
    with pytest.raises(PayloadError) as info:
        RemoteError.from_wire(data)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert str(info.value).endswith(f" - at `{path}`")
    assert info.value.expected is not None
    assert info.value.got is not None


def test_from_wire_accepts_tuples() -> None:
    back = RemoteError.from_wire((("A", "a", None),))
    assert back.chain == (ErrorFrame("A", "a", None),)


# --------------------------------------------------------------------------- object protocol


def test_not_picklable_but_copyable() -> None:
    remote = RemoteError([ErrorFrame("A", "a", None)])
    with pytest.raises(TypeError, match="RemoteError is not picklable"):
        pickle.dumps(remote)
    assert copy.copy(remote) == remote
    assert copy.deepcopy(remote) == remote
    assert copy.copy(remote) is not remote


def test_empty_chain_gets_placeholder_frame() -> None:
    remote = RemoteError([])
    assert remote.chain == (ErrorFrame("RemoteError", "no error information", None),)
    assert str(remote) == "no error information"
    assert remote.to_wire() == [["RemoteError", "no error information", None]]


def test_convenience_properties_read_outermost_frame() -> None:
    remote = RemoteError([ErrorFrame("A", "a", "tb-a"), ErrorFrame("B", "b", "tb-b")])
    assert (remote.type_name, remote.message, remote.traceback) == ("A", "a", "tb-a")
    assert remote.args == ("a: b",)
    assert isinstance(remote.chain, tuple)


def test_equality_and_hash_by_chain() -> None:
    one = RemoteError([ErrorFrame("A", "a", None)])
    same = RemoteError([ErrorFrame("A", "a", None)])
    other = RemoteError([ErrorFrame("A", "b", None)])
    assert one == same
    assert hash(one) == hash(same)
    assert one != other
    assert one != "a"
    assert len({one, same, other}) == 2


def test_repr_is_brief() -> None:
    remote = RemoteError([ErrorFrame("A", "x" * 500, "tb" * 500), ErrorFrame("B", "b", None)])
    text = repr(remote)
    assert text.startswith("RemoteError(A: ")
    assert "B: 'b'" in text
    assert len(text) < 120
    assert "tb" not in text


def test_cause_text_repeated_in_outer_message_is_said_once() -> None:
    from workmesh import ChannelErrorKind, ChannelFailed, NodeError  # noqa: PLC0415

    try:
        raise ChannelFailed(ChannelErrorKind.NODE_FAILURE, NodeError("gone", node="N-1"))
    except ChannelFailed as exc:
        err = RemoteError.from_exception(exc)
    assert str(err) == "channel failure: node failure: communication with node N-1 failed: gone"
    assert err.chain[0].message == "channel failure: node failure"
