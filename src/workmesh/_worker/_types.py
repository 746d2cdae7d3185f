"""Worker identity, the worker base class, and the messages workers exchange.

A *worker* is a component built from parameters (``new``) or from a predecessor's
state (``restart``), then ``run`` with a receiver of :data:`WorkerRpc` requests.
Its parameter and state types are read from the class's generic base, so
``class Counter(Worker[CounterParams, CounterState])`` is all it takes for a host
in another process to decode them.

Requests (:data:`WorkerRpc`) and lifecycle events (:data:`WorkerEvent`) are tagged
msgspec Structs: they cross processes as data and read well in ``match``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable
from typing import Any, ClassVar, Generic, TypeVar

import msgspec

from .._channel import FailableRpc, Receiver
from .._errors import RemoteError
from .._inspection import Deferred

P = TypeVar("P")
S = TypeVar("S")
W = TypeVar("W", bound="Worker[Any, Any]")


class WorkerId(Generic[P]):
    """The name a worker is launched by (``WorkerId[Params]`` ties it to its parameters).

    It can live in a module that does not import the worker's implementation.
    """

    __slots__ = ("id",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a worker id is a non-empty string, got {name!r}")
        self.id = name

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"WorkerId({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkerId) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class Stop(msgspec.Struct, tag="stop"):
    """Tear down and return from ``run``."""


class Restart(msgspec.Struct, Generic[S], tag="restart"):
    """Hand over the state and return (``complete``), or refuse and go on (``fail``)."""

    rpc: FailableRpc[None, S]

    def complete(self, state: S) -> None:
        self.rpc.complete(state)

    def fail(self, exc: BaseException) -> None:
        self.rpc.fail(exc)


class Inspect(msgspec.Struct, tag="inspect"):
    """Answer with ``deferred.inspect(self)`` (or any inspectable)."""

    deferred: Deferred


WorkerRpc = Stop | Restart[S] | Inspect


class Started(msgspec.Struct, tag="started"):
    """The worker was built (or rebuilt from its state) and is running."""


class Stopped(msgspec.Struct, tag="stopped"):
    """The worker returned from ``run`` without error."""


class Failed(msgspec.Struct, tag="failed"):
    """The worker failed: building it, running it, or its process died."""

    error: RemoteError


class RestartFailed(msgspec.Struct, tag="restart_failed"):
    """A restart did not happen; the old worker keeps running."""

    error: RemoteError


WorkerEvent = Started | Stopped | Failed | RestartFailed


class Worker(Generic[P, S]):
    """Base class of workers: ``class MyWorker(Worker[Params, State])``.

    Subclasses set ``ID`` and implement ``new``, ``restart`` and ``run``.  ``run``
    may be a plain method (it runs on its own thread) or ``async def`` (it runs on
    its own event loop, on its own thread); it returns when its receiver closes or
    on :class:`Stop`, and raising means :class:`Failed`.
    """

    ID: ClassVar[WorkerId[Any]]
    params_type: ClassVar[Any] = object
    state_type: ClassVar[Any] = object

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Worker:
                cls.params_type, cls.state_type = typing.get_args(base)

    @classmethod
    def new(cls: type[W], params: P) -> W:
        raise NotImplementedError(f"{cls.__qualname__} does not implement new()")

    @classmethod
    def restart(cls: type[W], state: S) -> W:
        raise NotImplementedError(f"{cls.__qualname__} does not implement restart()")

    def run(self, rpc: Receiver[WorkerRpc[S]]) -> Awaitable[None] | None:
        raise NotImplementedError(f"{type(self).__qualname__} does not implement run()")


def worker_name(worker: WorkerId[Any] | type[Worker[Any, Any]] | str) -> str:
    """The launch name of ``worker``: a WorkerId, a worker class or a string."""
    if isinstance(worker, str):
        return worker
    if isinstance(worker, WorkerId):
        return worker.id
    if isinstance(worker, type) and issubclass(worker, Worker):
        return worker_id(worker).id
    raise TypeError(f"expected a WorkerId, a Worker class or a str, got {worker!r}")


def worker_id(cls: type[Worker[Any, Any]]) -> WorkerId[Any]:
    wid = getattr(cls, "ID", None)
    if not isinstance(wid, WorkerId):
        raise TypeError(f"{cls.__qualname__}.ID must be a WorkerId, got {wid!r}")
    return wid


def rpc_type(cls: type[Worker[Any, Any]]) -> Any:
    """The declared type of the requests ``cls.run`` receives."""
    state = cls.state_type
    return WorkerRpc[state]  # type: ignore[misc,valid-type]  # a union alias, built at run time


def runs_async(worker: Worker[Any, Any]) -> bool:
    return inspect.iscoroutinefunction(type(worker).run)
