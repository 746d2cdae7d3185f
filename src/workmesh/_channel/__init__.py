"""Typed channels (layer L3): mpsc, oneshot and rpc on top of untyped ports.

Importing this package registers every endpoint class with the codec as a
resource kind, so endpoints can sit anywhere inside an encoded message.
"""

from __future__ import annotations

from typing import Any

from .._wire import ResourceKind, register_resource_kind
from . import _mpsc, _oneshot, _reply
from ._mpsc import Receiver, Sender, channel, mpsc_channel
from ._oneshot import OneshotReceiver, OneshotSender, oneshot
from ._rpc import Err, FailableRpc, Ok, Rpc


def _arg(declared: Any) -> Any:
    args = getattr(declared, "__args__", None)
    return args[0] if args else object


def _port(resource: Any) -> Any:
    """A received resource that must be a port (a call's reply slot is one only
    where the message has a OneshotSender)."""
    if type(resource) is _reply.ReplySlot:
        resource.close()
        raise ValueError("a call's reply slot is referenced where a port was expected")
    return resource


register_resource_kind(
    ResourceKind(
        2,
        Sender,
        _mpsc.sender_to_port,
        lambda port, tp: _mpsc.sender_from_port(_port(port), _arg(tp)),
        lambda obj, tp: _mpsc.retype(obj, _arg(tp)),
    )
)
register_resource_kind(
    ResourceKind(
        3,
        Receiver,
        _mpsc.receiver_to_port,
        lambda port, tp: _mpsc.receiver_from_port(_port(port), _arg(tp)),
        lambda obj, tp: _mpsc.retype(obj, _arg(tp)),
        _mpsc.check_receiver,
    )
)
register_resource_kind(
    ResourceKind(
        4,
        OneshotSender,
        _oneshot.take_oneshot_sender,
        lambda port, tp: _oneshot.oneshot_sender_from_port(port, _arg(tp)),
        lambda obj, tp: _oneshot.retype_oneshot(obj, _arg(tp)),
    )
)
register_resource_kind(
    ResourceKind(
        5,
        OneshotReceiver,
        _oneshot.oneshot_receiver_to_port,
        lambda port, tp: _oneshot.oneshot_receiver_from_port(_port(port), _arg(tp)),
        lambda obj, tp: _oneshot.retype_oneshot(obj, _arg(tp)),
        _oneshot.check_oneshot_receiver,
    )
)

__all__ = [
    "Err",
    "FailableRpc",
    "Ok",
    "OneshotReceiver",
    "OneshotSender",
    "Receiver",
    "Rpc",
    "Sender",
    "channel",
    "mpsc_channel",
    "oneshot",
]

# Deferred inspection replies travel on a oneshot.  The diagnostics layer sits below
# this one and may not import it, so it is handed the factory here, at import.
from .._inspection import set_reply_channel_factory  # noqa: E402 - wiring, kept in one block

set_reply_channel_factory(oneshot)
