"""Which workers a host can build: factories, builders and the process-wide registry.

A host is given a :class:`WorkerFactory`; for each launch request it asks the
factory for a :class:`WorkerBuilder` by name.  :class:`RegisteredWorkers` looks
names up in the registry that ``@register_worker`` fills (a child process must
import the same modules to know the same workers); :func:`runnable_workers`
limits a host to an explicit list.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, TypeVar

from .._errors import PayloadError
from .._wire import Message
from ._types import Worker, worker_id

WT = TypeVar("WT", bound=type[Worker[Any, Any]])


class WorkerBuilder:
    """Builds one worker class from type-erased parameters or state."""

    __slots__ = ("cls",)

    def __init__(self, cls: type[Worker[Any, Any]]) -> None:
        self.cls = cls

    @property
    def name(self) -> str:
        return worker_id(self.cls).id

    def new(self, parameters: Message) -> Worker[Any, Any]:
        try:
            params = parameters.parse(self.cls.params_type)
        except PayloadError as exc:
            raise PayloadError(f"failed to receive parameters: {exc}") from exc
        return self.cls.new(params)

    def restart(self, state: Message) -> Worker[Any, Any]:
        try:
            value = state.parse(self.cls.state_type)
        except PayloadError as exc:
            raise PayloadError(f"failed to parse restart state: {exc}") from exc
        return self.cls.restart(value)

    def __repr__(self) -> str:
        return f"WorkerBuilder({self.cls.__qualname__})"


class WorkerFactory(Protocol):
    """Gives the builder for a worker name, or raises for names it does not know."""

    def builder(self, name: str) -> WorkerBuilder: ...


class UnsupportedWorker(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unsupported worker {name}")
        self.name = name


_registry: dict[str, type[Worker[Any, Any]]] = {}
_registry_lock = threading.Lock()


def register_worker(cls: WT) -> WT:
    """Class decorator: make ``cls`` launchable by its ``ID`` in this process."""
    name = worker_id(cls).id
    with _registry_lock:
        known = _registry.get(name)
        if known is not None and _qualname(known) != _qualname(cls):
            raise ValueError(
                f"worker id {name!r} is already registered by {_qualname(known)}; "
                f"cannot register {_qualname(cls)} under the same id"
            )
        _registry[name] = cls
    return cls


def register_workers(*classes: type[Worker[Any, Any]]) -> None:
    for cls in classes:
        register_worker(cls)


def _qualname(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class RegisteredWorkers:
    """The factory over every ``@register_worker`` class of this process."""

    def builder(self, name: str) -> WorkerBuilder:
        cls = _registry.get(name)
        if cls is None:
            raise UnsupportedWorker(name)
        return WorkerBuilder(cls)


class _Runnable:
    def __init__(self, classes: tuple[type[Worker[Any, Any]], ...]) -> None:
        self._by_name: dict[str, type[Worker[Any, Any]]] = {}
        for cls in classes:
            name = worker_id(cls).id
            if name in self._by_name:
                raise ValueError(f"worker id {name!r} appears twice")
            self._by_name[name] = cls

    def builder(self, name: str) -> WorkerBuilder:
        cls = self._by_name.get(name)
        if cls is None:
            raise UnsupportedWorker(name)
        return WorkerBuilder(cls)


def runnable_workers(*classes: type[Worker[Any, Any]]) -> WorkerFactory:
    """A factory that can build exactly these worker classes."""
    return _Runnable(classes)
