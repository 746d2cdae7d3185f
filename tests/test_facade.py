"""The top-level facade: what ``import workmesh as wm`` offers, against design/api.md.

The rule (as in trio's test_exports): everything public is importable from
``workmesh`` and listed in ``workmesh.__all__``; ``__all__`` holds no private
(``_``-prefixed) name; the implementation lives in private modules, so a public
object's ``__module__`` may name ``workmesh`` or any ``workmesh.*`` module, but never
a module outside the package (which would mean a third-party object leaked into the
API under our name).  A public type alias (``WorkerEvent = Started | Stopped | ...``)
has no module of its own; each of its members must then come from workmesh.
"""

from __future__ import annotations

import typing

import msgspec
import pytest

import workmesh as wm

pytestmark = pytest.mark.timeout(20)

# The public contract (the project's API document): users and outside test suites
# program against these names, so every one of them must be exported.
CHANNEL_API = {
    "OwnedFd",
    "Message",
    "channel",
    "mpsc_channel",
    "Sender",
    "Receiver",
    "oneshot",
    "OneshotSender",
    "OneshotReceiver",
    "Rpc",
    "FailableRpc",
    "RecvError",
    "ChannelClosed",
    "ChannelFailed",
    "ChannelErrorKind",
    "ChannelEmpty",
    "RemoteError",
    "PayloadError",
}
WORKER_API = {
    "WorkerId",
    "Worker",
    "WorkerRpc",
    "WorkerEvent",
    "Stop",
    "Restart",
    "Inspect",
    "Started",
    "Stopped",
    "Failed",
    "RestartFailed",
    "worker_host",
    "WorkerHost",
    "WorkerHostRunner",
    "WorkerHandle",
    "LaunchError",
    "launch_local_worker",
    "register_worker",
    "register_workers",
    "RegisteredWorkers",
    "runnable_workers",
    "WorkerFactory",
    "WorkerBuilder",
}
PROCESS_AND_DIAGNOSTICS_API = {"Mesh", "InspectRequest", "Deferred", "inspect", "InspectNode"}
PUBLIC_API = CHANNEL_API | WORKER_API | PROCESS_AND_DIAGNOSTICS_API


def test_channel_api_names_are_exported() -> None:
    missing = CHANNEL_API - set(wm.__all__)
    assert not missing


def test_every_contract_name_is_exported_and_importable() -> None:
    missing = PUBLIC_API - set(wm.__all__)
    assert not missing, missing
    namespace: dict[str, object] = {}
    exec("from workmesh import *", namespace)
    for name in PUBLIC_API:
        assert namespace[name] is getattr(wm, name)


def test_all_names_exist_and_are_unique() -> None:
    assert len(wm.__all__) == len(set(wm.__all__))
    for name in wm.__all__:
        assert hasattr(wm, name), name


def test_all_has_no_private_names() -> None:
    private = [name for name in wm.__all__ if name.startswith("_")]
    assert not private


def defining_modules(obj: object) -> set[str]:
    """Where ``obj`` is defined; for a type alias (a union), where its members are."""
    if isinstance(obj, type) or (callable(obj) and not typing.get_args(obj)):
        return {obj.__module__}
    modules: set[str] = set()
    for member in typing.get_args(obj):
        if isinstance(member, typing.TypeVar):
            continue
        modules |= defining_modules(typing.get_origin(member) or member)
    return modules


def test_public_objects_come_from_workmesh() -> None:
    assert defining_modules(int | msgspec.Struct) == {"builtins", "msgspec"}  # the check bites
    foreign = {}
    for name in wm.__all__:
        for module in defining_modules(getattr(wm, name)):
            if module != "workmesh" and not module.startswith("workmesh."):
                foreign[name] = module
    assert not foreign


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from workmesh import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(wm.__all__)


def test_aliases_and_hierarchy() -> None:
    assert wm.mpsc_channel is wm.channel
    for exc in (wm.ChannelClosed, wm.ChannelFailed, wm.ChannelEmpty):
        assert issubclass(exc, wm.RecvError)
    assert issubclass(wm.RemoteError, Exception)
    assert {kind.name for kind in wm.ChannelErrorKind} >= {"NODE_FAILURE", "CORRUPTION"}
