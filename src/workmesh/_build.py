"""Which of workmesh's modules this process runs compiled (layer L0).

workmesh is pure Python.  A build made with ``WORKMESH_COMPILE=1`` also compiles
the modules named in :data:`COMPILED_MODULES` to C extensions with mypyc, from the
same sources (they are kept within what mypyc compiles: fully typed, annotations
true at run time, no monkey-patching of their classes).  Python imports an
extension module in preference to the source beside it, so one installed tree
holds both and the extension wins.  These are the modules a message crosses on
every hop -- the node's routing, the codec and framing, the transport's reads and
writes, channels' ends and the waiters that wake a receiver, calls and replies --
where the interpreter's per-call overhead is the cost; msgspec Structs (the frame
types in ``_frames``, ``Rpc``) stay Python.  See
``docs/adr/0005-optional-compiled-build.md``.

``setup.py`` reads :data:`COMPILED_MODULES` from this file without importing
workmesh, so the list is kept to literals.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from typing import Final

COMPILED_MODULES: Final = (
    "workmesh._ids",
    "workmesh._wire",
    "workmesh._node",
    "workmesh._channel._waiter",
    "workmesh._channel._reply",
    "workmesh._channel._oneshot",
    "workmesh._channel._mpsc",
    "workmesh._channel._calls",
    "workmesh._transport",
)


def compiled_modules() -> tuple[str, ...]:
    """The modules of :data:`COMPILED_MODULES` that load from compiled code here.

    Found from where each module's import resolves (an extension module's file),
    without importing any of them.
    """
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and spec.origin.endswith(suffixes):
            found.append(name)
    return tuple(found)


def build_description() -> str:
    """One phrase for reports: pure Python, compiled, or partly compiled."""
    compiled = compiled_modules()
    if not compiled:
        return "pure Python"
    if len(compiled) == len(COMPILED_MODULES):
        return "compiled (mypyc)"
    return "partly compiled (mypyc: " + ", ".join(compiled) + ")"
