"""The tree under construction: mutable, encodable parts with deferred placeholders.

While an inspection is being answered, its tree is made of *parts* (internal,
unlike the immutable result nodes of :mod:`._result`):

* ``PDir`` -- a directory whose entries are appended as children are answered;
  entry names may still contain ``/`` (``"x/a/b"``) and may be empty (merged into
  the parent);
* ``PValue``, ``PFailed`` -- answered leaves and failures;
* ``PUnevaluated`` -- not (yet) answered, or beyond the depth limit;
* ``PIgnored`` -- the handler asked for the node to be left out;
* ``PWait`` -- a placeholder for a deferred answer: it holds the receiving end of
  the reply channel.

Every request owns one *slot* (a ``PEntry``) and answers by assigning its ``node``.
Parts are msgspec Structs, tagged and array-like, so a subtree answered in another
process travels back as an ordinary message: its ``PWait`` receivers go along as
channel endpoints, which is how deferral nests across any number of processes.

:func:`to_result` turns a finished (or abandoned) part tree into an
:class:`~._result.InspectNode`: slashed names become nested directories, nameless
entries merge into their parent, entries are sorted and merged, and a ``PWait``
still pending becomes ``unresolved``.  :func:`descend` then walks down the
requested path.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import msgspec

from ._result import (
    NO_FLAGS,
    AnyInspectNode,
    InspectDir,
    InspectEntry,
    InspectErrorKind,
    InspectFailed,
    InspectUnevaluated,
    InspectValue,
    Sensitivity,
    ValueFlags,
    check_leaf,
    merge_entries,
)

# msgpack carries integers of at most 64 bits; a Python int outside that range would
# make the whole reply unencodable, so such a leaf is kept as its decimal text.
_INT_MIN: Final = -(2**63)
_INT_END: Final = 2**64


class PUnevaluated(msgspec.Struct, tag="u", array_like=True):
    pass


class PIgnored(msgspec.Struct, tag="i", array_like=True):
    pass


class PValue(msgspec.Struct, tag="v", array_like=True):
    value: Any
    flags: ValueFlags = NO_FLAGS

    def __post_init__(self) -> None:
        # Also runs on decode: a peer cannot smuggle a list or a dict in as a leaf.
        check_leaf(self.value)


class PFailed(msgspec.Struct, tag="f", array_like=True):
    kind: InspectErrorKind
    detail: str = ""


class PDir(msgspec.Struct, tag="d", array_like=True):
    entries: list[PEntry] = msgspec.field(default_factory=list)


class PWait(msgspec.Struct, tag="w", array_like=True):
    # The receiving end of a workmesh oneshot; typed Any because this layer sits
    # below the channels (the codec turns it into a port when the part travels).
    reply: Any


class PEntry(msgspec.Struct, array_like=True):
    name: str
    sensitivity: Sensitivity
    node: Part


Part: TypeAlias = PUnevaluated | PIgnored | PValue | PFailed | PDir | PWait
PART_TYPES: Final = (PUnevaluated, PIgnored, PValue, PFailed, PDir, PWait)


def leaf(value: object, flags: ValueFlags = NO_FLAGS) -> PValue:
    """A leaf part from a Python value (bytes-like values become ``bytes``)."""
    if isinstance(value, bool | float | str | bytes):
        return PValue(value, flags)
    if isinstance(value, int):
        return PValue(value if _INT_MIN <= value < _INT_END else str(value), flags)
    if isinstance(value, bytearray | memoryview):
        return PValue(bytes(value), flags)
    index = getattr(type(value), "__index__", None)  # numpy and other integer types
    if index is not None:
        return leaf(int(index(value)), flags)
    check_leaf(value)  # raises, saying what was expected
    raise AssertionError("unreachable")  # pragma: no cover - check_leaf raised


def as_part(value: object) -> Part:
    """A reply as a part: as is in-process, or converted from untyped decoded data.

    A reply reaches us untyped when it came through a nested placeholder whose
    receiver was itself decoded from a message (declared ``Any``); msgspec then
    produced plain lists, which ``convert`` validates into parts.
    """
    if isinstance(value, PART_TYPES):
        return value
    try:
        part: Part = msgspec.convert(value, Part)
    except (msgspec.ValidationError, TypeError) as exc:
        return PFailed(InspectErrorKind.CHANNEL, f"malformed inspect reply: {exc}")
    return part


def pending_slots(slot: PEntry) -> list[PEntry]:
    """Every slot at or under ``slot`` that still waits for a deferred answer."""
    found: list[PEntry] = []
    stack = [slot]
    while stack:
        entry = stack.pop()
        node = entry.node
        if isinstance(node, PWait):
            found.append(entry)
        elif isinstance(node, PDir):
            stack.extend(node.entries)
    return found


# ------------------------------------------------------------------ parts to results


def to_result(part: Part) -> AnyInspectNode:
    if isinstance(part, PDir):
        return InspectDir(merge_entries(_flatten(part.entries)))
    if isinstance(part, PValue):
        return InspectValue(part.value, part.flags)
    if isinstance(part, PFailed):
        return InspectFailed(part.kind, part.detail)
    if isinstance(part, PWait):
        return InspectFailed(InspectErrorKind.UNRESOLVED)
    return InspectUnevaluated()


def _flatten(entries: list[PEntry]) -> list[InspectEntry]:
    out: list[InspectEntry] = []
    for entry in entries:
        if isinstance(entry.node, PIgnored):
            continue
        node = to_result(entry.node)
        if not entry.name:
            # A nameless entry (a merge) contributes its children to this directory.
            if isinstance(node, InspectDir):
                out.extend(node.entries)
            continue
        names = [name for name in entry.name.split("/") if name]
        if not names:
            continue
        for name in reversed(names[1:]):
            node = InspectDir((InspectEntry(name, node, entry.sensitivity),))
        out.append(InspectEntry(names[0], node, entry.sensitivity))
    return out


def path_segments(path: str) -> list[str]:
    return [name for name in path.split("/") if name]


def descend(node: AnyInspectNode, levels: int) -> AnyInspectNode:
    """Walk ``levels`` directories down from the root to the requested path.

    Only entries on the path were evaluated, so each directory on the way has at
    most one entry: none means the name does not exist.
    """
    for _ in range(levels):
        if isinstance(node, InspectDir):
            if not node.entries:
                return InspectFailed(InspectErrorKind.NOT_FOUND)
            if len(node.entries) > 1:
                return InspectFailed(InspectErrorKind.INTERNAL, "path walk found siblings")
            node = node.entries[0].node
        elif isinstance(node, InspectValue):
            return InspectFailed(InspectErrorKind.INTERNAL, "path walk reached a value")
        else:
            return node
    return node


__all__ = [
    "PART_TYPES",
    "PDir",
    "PEntry",
    "PFailed",
    "PIgnored",
    "PUnevaluated",
    "PValue",
    "PWait",
    "Part",
    "as_part",
    "descend",
    "leaf",
    "path_segments",
    "pending_slots",
    "to_result",
]
