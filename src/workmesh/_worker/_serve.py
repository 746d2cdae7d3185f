"""The entry function of a worker-host child process (see ``Mesh.launch_host``)."""

from __future__ import annotations

from .._wire import Message
from ._host import WorkerHostRunner
from ._registry import RegisteredWorkers


async def serve_runner(message: Message) -> None:
    """Serve launch requests until every host is gone and every worker has ended."""
    runner = message.parse(WorkerHostRunner)
    await runner.run(RegisteredWorkers())
