"""Making a call: ``Sender.call`` and ``Sender.call_failable``.

A call builds an ``Rpc`` (or ``FailableRpc``) around a fresh oneshot, sends
``make(rpc)`` and awaits the answer.  To decode an answer that comes back from
another process the caller must know the reply type: it is read from the declared
type of the field that holds the rpc in the message (or of the channel itself,
when the message *is* the rpc), and can be given explicitly with ``reply_type=``.
To a receiver in another process the request goes as a call answered on its own
stream (see :mod:`._reply`).

Kept apart from the ``Rpc`` Structs (``_rpc``) so that the compiled build can
compile it: every call runs it, and mypyc compiles no msgspec Struct.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, Final

from .._node import Port, local_node
from .._wire import BY_REFERENCE, Payload, SplicedPayload
from ._oneshot import OneshotReceiver, OneshotSender, _Once, oneshot, retype_oneshot
from ._reply import CallMarker, ReplyMux, call_head
from ._rpc import Err, FailableRpc, Ok, Rpc

_field_cache: Final[dict[tuple[type[Any], type[Any]], tuple[str, Any] | None]] = {}


def _rpc_field(msg_type: type[Any], rpc_cls: type[Any]) -> tuple[str, Any] | None:
    """The (field name, reply type) of the one field of ``msg_type`` that holds an rpc."""
    key = (msg_type, rpc_cls)
    try:
        return _field_cache[key]  # one lookup: this runs at every call
    except KeyError:
        pass  # the first call with this message type
    found = None
    try:
        hints = typing.get_type_hints(msg_type)
    except Exception:
        hints = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is rpc_cls:
            found = (name, typing.get_args(hint)[1])
            break
    _field_cache[key] = found
    return found


def _placed(channel_type: Any, msg: Any, rpc: Any) -> tuple[bool, Any]:
    """Whether ``msg`` holds ``rpc`` where the codec meets it directly (``msg`` is the
    rpc, or the rpc sits in its rpc field), and the reply type declared there
    (``object`` when none is)."""
    rpc_cls = type(rpc)
    if msg is rpc:
        if typing.get_origin(channel_type) is rpc_cls:
            return True, typing.get_args(channel_type)[1]
        return True, object
    field = _rpc_field(type(msg), rpc_cls)
    if field is not None and getattr(msg, field[0], None) is rpc:
        return True, field[1]
    return False, object


def _send_request(sender: Any, core: Any, msg: Any, placed: bool, tx: OneshotSender[Any]) -> None:
    """Send ``msg``; to a receiver elsewhere, as a call answered on its stream
    (when ``placed``: see :func:`_placed`)."""
    remote = core.remote
    if remote is None or not placed:
        sender.send(msg)
        return
    # A receiver in another process, and a message whose reply sender sits where
    # the codec meets it directly: the answer comes back on the request's own
    # port (see _reply), with no port made and moved for it.
    replies = core.replies
    if replies is None:
        replies = _replies_for(core, remote)
    once = tx._core
    assert once is not None
    call_id = replies.add(once)
    if call_id is None:  # the port has ended: settle as its end would have
        tx._core = None
        replies.settle_unsent(once)
        return
    once.mux, once.call_id = replies, call_id
    try:
        payload = core.codec.encode(msg)
    except BaseException:
        once.mux = None
        replies.forget(call_id)
        raise
    resources = payload.resources
    if resources and type(resources[-1]) is CallMarker:
        resources.pop()
        head = call_head(len(resources), call_id)
        data = payload.data
        if not resources and type(data) is bytes and len(data) >= BY_REFERENCE:
            # A large request goes in pieces, the head in front of the encoding
            # (a copy fewer; see SplicedPayload).
            remote.send(SplicedPayload(data, head))
        else:
            remote.send(Payload(head + data, resources))
        return
    # The reply sender is not the message's last resource (a field after the
    # request holds an endpoint or fd): it gets a port of its own, as before.
    for i, res in enumerate(resources):
        if type(res) is CallMarker:
            resources[i] = _own_port(once)
    remote.send(payload)


def _replies_for(core: Any, remote: Port) -> ReplyMux:
    with core.lock:
        replies: ReplyMux | None = core.replies
        if replies is None:
            replies = core.replies = ReplyMux(remote)
            new = True
        else:
            new = False
    if new:
        remote.set_handler(replies)  # answers that came first wait in the port
    return replies


def _own_port(once: _Once) -> Port:
    mux = once.mux
    assert mux is not None
    once.mux = None
    mux.forget(once.call_id)
    ours, theirs = local_node().new_pair()
    with once.lock:
        once.port = ours
    ours.set_handler(once)
    return theirs


def _start(
    sender: Any,
    make: Callable[[Any], Any],
    input: Any,
    reply_type: Any,
    *,
    failable: bool,
) -> OneshotReceiver[Any]:
    """Send the request of a call; the receiver its answer will come to.

    The request, its rpc and reply sender live only in this frame, gone once it
    returns: held while the caller waits, they would keep the reply sender alive
    here, and a handler that drops the request could never close the call.
    """
    tx, rx = oneshot()
    rpc: Any = (FailableRpc if failable else Rpc)(input, tx)
    msg = make(rpc)
    core = sender._live_core()
    placed, declared = _placed(core.codec_type, msg, rpc)
    value_type = reply_type or declared
    if failable:
        value_type = Ok[value_type] | Err  # type: ignore[valid-type]  # built at run time
    retype_oneshot(rx, value_type)
    _send_request(sender, core, msg, placed, tx)
    return rx


async def call(
    sender: Any,
    make: Callable[[Any], Any],
    input: Any,
    *,
    reply_type: Any = None,
) -> Any:
    return await _start(sender, make, input, reply_type, failable=False)


async def call_failable(
    sender: Any,
    make: Callable[[Any], Any],
    input: Any,
    *,
    reply_type: Any = None,
) -> Any:
    outcome = await _start(sender, make, input, reply_type, failable=True)
    if isinstance(outcome, Err):
        raise outcome.error
    return outcome.value
