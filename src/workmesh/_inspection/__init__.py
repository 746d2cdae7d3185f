"""Diagnostics (layer L1): a lazily evaluated inspection tree, deferrable across processes.

Theory of operation
-------------------

*Answering.*  Anything can be inspected: a leaf value (``int``, ``float``,
``bool``, ``str``, ``bytes``), ``None`` (left out), a mapping or list, a function
taking an :class:`InspectRequest`, or an object defining
``__inspect__(self, req)``.  A handler answers its request once --
``req.respond()`` for a directory (then ``resp.field(name, value)``,
``resp.child(name, obj_or_fn)``, ... which chain), ``req.value(v)``,
``req.ignore()``, ``req.update()`` or ``req.defer()``.

*Laziness.*  Offering a child does not evaluate it.  The response compares the
child's name with the path still to walk, the depth still allowed and the
sensitivity, and runs the child's handler only when it is needed; names with
``/`` nest, and an empty name merges into the parent.  Depth is spent only below
the target of the path.  Sensitivity (``SAFE < UNSPECIFIED < SENSITIVE``) is
checked per node: a hidden node hides its subtree.

*Deferral.*  ``req.defer()`` returns a :class:`Deferred`, a msgspec Struct of plain
data plus the sending end of a workmesh oneshot, so it can be answered on another
thread or sent inside a message to another process, where
``deferred.inspect(obj)`` builds that part of the tree and sends it back.  The
reply may contain deferred placeholders of its own (the other process deferred
again); the resolver keeps waiting on all of them until they are filled or the
time budget is spent.  A dropped Deferred leaves its part ``unresolved``; a failed
channel leaves ``channel error: <text>``.  The oneshot factory comes from the
channel layer (above this one) via :func:`set_reply_channel_factory`.

*Results.*  :func:`inspect` returns an immutable :class:`InspectNode` (a tagged
msgspec Struct, itself encodable): entries sorted in natural order, duplicate
names merged.  It renders as text (``str(node)``, ``node.format(pretty=True)``),
JSON (``node.to_json()``) and plain data (``node.to_dict()``); ``node.since(old,
seconds)`` turns counters into rates.

*Updates.*  :func:`update` walks to a leaf with a new value as text; only a leaf
whose handler calls ``req.update()`` (e.g. one added with ``resp.field_mut``) can
change; any other leaf reports ``immutable node``.

Modules, bottom up: :mod:`._natural` (name ordering), :mod:`._result` (result
nodes and renderings), :mod:`._tree` (the mutable part tree), :mod:`._params`
(what a request inherits), :mod:`._update` (update requests), :mod:`._request`
(requests and the response builder), :mod:`._defer` (Deferred and the reply
channel), :mod:`._initiate` (building, resolving, :func:`inspect`, :func:`update`).

This package imports only the standard library, msgspec and layer L0.
"""

from __future__ import annotations

from ._defer import Deferred, DeferredUpdate, ReplyChannelFactory, set_reply_channel_factory
from ._initiate import Forward, Inspection, inspect, update
from ._natural import natural_key
from ._params import MAX_DEPTH, NumberFormat
from ._request import InspectRequest, InspectResponse
from ._result import (
    AnyInspectNode,
    InspectDir,
    InspectEntry,
    InspectError,
    InspectErrorKind,
    InspectFailed,
    InspectNode,
    InspectUnevaluated,
    InspectValue,
    Sensitivity,
    ValueFlags,
)
from ._roots import register_root, roots, unregister_root
from ._update import UpdateRequest

__all__ = [
    "MAX_DEPTH",
    "AnyInspectNode",
    "Deferred",
    "DeferredUpdate",
    "Forward",
    "InspectDir",
    "InspectEntry",
    "InspectError",
    "InspectErrorKind",
    "InspectFailed",
    "InspectNode",
    "InspectRequest",
    "InspectResponse",
    "InspectUnevaluated",
    "InspectValue",
    "Inspection",
    "NumberFormat",
    "ReplyChannelFactory",
    "Sensitivity",
    "UpdateRequest",
    "ValueFlags",
    "inspect",
    "natural_key",
    "register_root",
    "roots",
    "set_reply_channel_factory",
    "unregister_root",
    "update",
]
