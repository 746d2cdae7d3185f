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
from ._frames import Limits
from ._inspection import (
    Deferred,
    InspectNode,
    InspectRequest,
    InspectResponse,
    Sensitivity,
    inspect,
)
from ._process import ChildFailedToStart, Mesh, Sandbox
from ._wire import Message
from ._worker import (
    Failed,
    Inspect,
    RegisteredWorkers,
    Restart,
    RestartFailed,
    Started,
    Stop,
    Stopped,
    Worker,
    WorkerBuilder,
    WorkerEvent,
    WorkerFactory,
    WorkerHandle,
    WorkerHost,
    WorkerHostRunner,
    WorkerId,
    WorkerRpc,
    launch_local_worker,
    register_worker,
    register_workers,
    runnable_workers,
    worker_host,
)

__version__ = "0.1.0.dev0"

# Errors cross processes by their type's name: name them by the public module.
# (Structs keep their own module: msgspec resolves their annotations there.)
for _error in (
    ChannelClosed,
    ChannelEmpty,
    ChannelFailed,
    ChildFailedToStart,
    LaunchError,
    NodeError,
    PayloadError,
    RecvError,
    RemoteError,
    WorkmeshError,
):
    _error.__module__ = __name__
del _error

# The one piece of wiring here: the process layer launches worker hosts with a
# factory from the worker layer above it, which it may not import itself.
Mesh.host_factory = worker_host

__all__ = [
    "ChannelClosed",
    "ChannelEmpty",
    "ChannelErrorKind",
    "ChannelFailed",
    "ChildFailedToStart",
    "Deferred",
    "ErrorFrame",
    "FailableRpc",
    "Failed",
    "Inspect",
    "InspectNode",
    "InspectRequest",
    "InspectResponse",
    "LaunchError",
    "Limits",
    "Mesh",
    "Message",
    "NodeError",
    "OneshotReceiver",
    "OneshotSender",
    "OwnedFd",
    "PayloadError",
    "Receiver",
    "RecvError",
    "RegisteredWorkers",
    "RemoteError",
    "Restart",
    "RestartFailed",
    "Rpc",
    "Sandbox",
    "Sender",
    "Sensitivity",
    "Started",
    "Stop",
    "Stopped",
    "Worker",
    "WorkerBuilder",
    "WorkerEvent",
    "WorkerFactory",
    "WorkerHandle",
    "WorkerHost",
    "WorkerHostRunner",
    "WorkerId",
    "WorkerRpc",
    "WorkmeshError",
    "channel",
    "inspect",
    "launch_local_worker",
    "mpsc_channel",
    "oneshot",
    "register_worker",
    "register_workers",
    "runnable_workers",
    "worker_host",
]
