"""Workers (layer L6): components built from parameters, run by hosts, hot-restartable.

Process hosting comes only through a :class:`WorkerHost` this layer is given (see
``Mesh.launch_host``); nothing here starts a process.
"""

from ._host import (
    LaunchRequest,
    WorkerHandle,
    WorkerHost,
    WorkerHostRunner,
    launch_local_worker,
    worker_host,
)
from ._registry import (
    RegisteredWorkers,
    UnsupportedWorker,
    WorkerBuilder,
    WorkerFactory,
    register_worker,
    register_workers,
    runnable_workers,
)
from ._types import (
    Failed,
    Inspect,
    Restart,
    RestartFailed,
    Started,
    Stop,
    Stopped,
    Worker,
    WorkerEvent,
    WorkerId,
    WorkerRpc,
)

__all__ = [
    "Failed",
    "Inspect",
    "LaunchRequest",
    "RegisteredWorkers",
    "Restart",
    "RestartFailed",
    "Started",
    "Stop",
    "Stopped",
    "UnsupportedWorker",
    "Worker",
    "WorkerBuilder",
    "WorkerEvent",
    "WorkerFactory",
    "WorkerHandle",
    "WorkerHost",
    "WorkerHostRunner",
    "WorkerId",
    "WorkerRpc",
    "launch_local_worker",
    "register_worker",
    "register_workers",
    "runnable_workers",
    "worker_host",
]
