"""workmesh: isolated, hot-upgradable program parts that talk by message passing.

This module only re-exports; the implementation lives in private modules (see
docs/design.md for the layer map).
"""

from __future__ import annotations

from ._channel import (
    FailableRpc,
    OneshotReceiver,
    OneshotSender,
    Receiver,
    Rpc,
    Sender,
    channel,
    mpsc_channel,
    oneshot,
)
from ._errors import (
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
from ._fd import OwnedFd
from ._wire import Message

__version__ = "0.1.0.dev0"

__all__ = [
    "ChannelClosed",
    "ChannelEmpty",
    "ChannelErrorKind",
    "ChannelFailed",
    "ErrorFrame",
    "FailableRpc",
    "LaunchError",
    "Message",
    "NodeError",
    "OneshotReceiver",
    "OneshotSender",
    "OwnedFd",
    "PayloadError",
    "Receiver",
    "RecvError",
    "RemoteError",
    "Rpc",
    "Sender",
    "WorkmeshError",
    "channel",
    "mpsc_channel",
    "oneshot",
]
