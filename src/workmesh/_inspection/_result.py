"""The result of an inspection: an immutable, encodable tree of :class:`InspectNode`.

A node is one of four kinds (msgspec Structs tagged by a ``kind`` field, so a whole
result can be sent to another process or written out and read back):

* :class:`InspectDir` -- a directory: entries ``(name, node, sensitivity)``, sorted in
  natural order (see :mod:`._natural`) with duplicate names merged;
* :class:`InspectValue` -- a leaf: ``int``, ``float``, ``bool``, ``str`` or ``bytes``,
  with display flags (hex, binary, counter);
* :class:`InspectFailed` -- the part could not be produced (:class:`InspectErrorKind`
  says why: unresolved, channel error, not found, ...);
* :class:`InspectUnevaluated` -- the part exists but was not evaluated (depth limit).

Three renderings, all available on every node:

* text (``str(node)``, ``node.format(pretty=True)``): ``{a: 1, b: {c: "x"}}``; hex and
  binary integers as ``0x..``/``0b..``, bytes as ``<hex>``, unevaluated as ``_``,
  failures as ``error (message)``;
* JSON (``node.to_json()``): hex/binary integers as strings, bytes as unpadded
  base64, unevaluated as ``null``, failures as ``{"$error": "message"}``;
* plain data (``node.to_dict()``): a dict per directory and the raw leaf values;
  unevaluated is ``None``, an unresolved part is the string ``"<unresolved>"``,
  any other failure is ``{"$error": "message"}``.

``new.since(old, seconds)`` turns counter values into rates.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Iterable
from typing import Any, Final, TypeAlias

import msgspec

from .._errors import WorkmeshError
from ._natural import natural_key

UNRESOLVED_TEXT: Final = "<unresolved>"


class Sensitivity(enum.IntEnum):
    """How sensitive a node's content is; a request sees nodes up to its own level."""

    SAFE = 1
    UNSPECIFIED = 2
    SENSITIVE = 3


class ValueFlags(enum.IntFlag):
    """How a leaf is displayed.  ``COUNTER`` marks a value that ``since`` turns into a rate."""

    HEX = 1
    COUNTER = 2
    BINARY = 4


NO_FLAGS: Final = ValueFlags(0)


class InspectErrorKind(enum.IntEnum):
    """Why part of a tree is missing (the numbers are the wire form)."""

    UNRESOLVED = 1  # a deferred part was never answered (dropped, or timed out)
    CHANNEL = 2  # the reply channel failed
    IMMUTABLE = 3  # an update reached a leaf that cannot change
    UPDATE = 4  # the update handler rejected the value
    NOT_A_DIRECTORY = 5  # the path continues below a leaf
    NOT_FOUND = 6  # nothing has that name
    INTERNAL = 7  # an inspect handler misbehaved (raised, or gave an unusable value)


_ERROR_TEXT: Final = {
    InspectErrorKind.UNRESOLVED: "unresolved",
    InspectErrorKind.CHANNEL: "channel error",
    InspectErrorKind.IMMUTABLE: "immutable node",
    InspectErrorKind.UPDATE: "update error",
    InspectErrorKind.NOT_A_DIRECTORY: "not a directory",
    InspectErrorKind.NOT_FOUND: "not found",
    InspectErrorKind.INTERNAL: "internal error",
}


def error_message(kind: InspectErrorKind, detail: str = "") -> str:
    """``"channel error: <detail>"``, ``"not found"``, ...: the text of a failure."""
    text = _ERROR_TEXT[kind]
    return f"{text}: {detail}" if detail else text


class InspectError(WorkmeshError):
    """Raised by :func:`~workmesh._inspection.update` when the update did not succeed."""

    def __init__(self, kind: InspectErrorKind, detail: str = "") -> None:
        super().__init__(error_message(kind, detail))
        self.kind = kind
        self.detail = detail


LEAF_TYPES: Final = (bool, int, float, str, bytes)


def check_leaf(value: object) -> None:
    """Reject anything but the leaf types (also guards values decoded from a peer)."""
    if not isinstance(value, LEAF_TYPES):
        raise TypeError(
            f"an inspect value must be int, float, bool, str or bytes, "
            f"got {type(value).__qualname__}"
        )


class InspectNode(msgspec.Struct, frozen=True, tag_field="kind"):
    """Base of the four node kinds; every rendering is defined here."""

    def __str__(self) -> str:
        return self.format()

    def format(self, *, pretty: bool = False) -> str:
        """The text form: compact on one line, or ``pretty`` with one entry per line."""
        out: list[str] = []
        _write_text(self, out, 0 if pretty else -1)
        return "".join(out)

    def to_json(self) -> str:
        """The JSON form (compact, entries in natural order)."""
        return json.dumps(_json_data(self), separators=(",", ":"), ensure_ascii=False)

    def to_dict(self) -> Any:
        """Plain data: nested dicts of leaf values (see the module docstring)."""
        return _plain_data(self)

    def since(self, old: InspectNode, seconds: float) -> InspectNode:
        """The change from ``old`` (an earlier result of the same inspection).

        Counter values become ``(new - old) / seconds`` as floats; other values keep
        their new value; entries only in ``self`` are kept, entries only in ``old``
        are dropped.
        """
        return _since(self, old, float(seconds))


class InspectUnevaluated(InspectNode, frozen=True, tag="unevaluated"):
    """A node that exists but was not evaluated (beyond the requested depth)."""


class InspectFailed(InspectNode, frozen=True, tag="failed"):
    """A node that could not be produced."""

    error: InspectErrorKind
    detail: str = ""

    @property
    def message(self) -> str:
        return error_message(self.error, self.detail)


class InspectValue(InspectNode, frozen=True, tag="value"):
    """A leaf.  ``value`` is an ``int``, ``float``, ``bool``, ``str`` or ``bytes``."""

    value: Any
    flags: ValueFlags = NO_FLAGS

    def __post_init__(self) -> None:
        check_leaf(self.value)


class InspectDir(InspectNode, frozen=True, tag="dir"):
    """A directory: entries in natural order of their names, names unique."""

    entries: tuple[InspectEntry, ...] = ()

    def get(self, name: str) -> AnyInspectNode | None:
        """The node of the entry called ``name``, or None."""
        for entry in self.entries:
            if entry.name == name:
                return entry.node
        return None

    def __getitem__(self, name: str) -> AnyInspectNode:
        node = self.get(name)
        if node is None:
            raise KeyError(name)
        return node

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]


class InspectEntry(msgspec.Struct, frozen=True):
    """One named child of a directory, with the sensitivity it was declared with."""

    name: str
    node: AnyInspectNode
    sensitivity: Sensitivity = Sensitivity.UNSPECIFIED


AnyInspectNode: TypeAlias = InspectUnevaluated | InspectFailed | InspectValue | InspectDir
"""The union to decode a node with, e.g. ``codec_for(AnyInspectNode)``."""


# ------------------------------------------------------------------ sorting and merging


def merge_entries(entries: Iterable[InspectEntry]) -> tuple[InspectEntry, ...]:
    """Sort naturally and merge entries with the same name.

    The sort is stable, so among equal names the later declaration comes later:
    it wins when the two cannot be merged, except that a directory beats a
    non-directory; two directories merge recursively.
    """
    merged: list[InspectEntry] = []
    for entry in sorted(entries, key=lambda e: natural_key(e.name)):
        if merged and merged[-1].name == entry.name:
            first = merged[-1]
            node = merge_nodes(first.node, entry.node)
            merged[-1] = InspectEntry(first.name, node, first.sensitivity)
        else:
            merged.append(entry)
    return tuple(merged)


def merge_nodes(first: AnyInspectNode, later: AnyInspectNode) -> AnyInspectNode:
    if isinstance(later, InspectUnevaluated):
        return first
    if isinstance(first, InspectDir):
        if isinstance(later, InspectDir):
            return InspectDir(merge_entries(first.entries + later.entries))
        return first
    return later


# ------------------------------------------------------------------ renderings


def format_float(x: float) -> str:
    # Integral floats print without ".0", as the original does ("50", not "50.0").
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def _int_text(value: int, flags: ValueFlags) -> str | None:
    if ValueFlags.HEX in flags:
        return hex(value)
    if ValueFlags.BINARY in flags:
        return bin(value)
    return None


def format_value(value: object, flags: ValueFlags = NO_FLAGS) -> str:
    """The text form of a leaf."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_text(value, flags) or str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return f"<{value.hex()}>"
    raise TypeError(f"not an inspect value: {type(value).__qualname__}")


def _write_text(node: InspectNode, out: list[str], indent: int) -> None:
    # indent < 0: compact form on one line; otherwise the current nesting level.
    if isinstance(node, InspectDir):
        if not node.entries:
            out.append("{}")
            return
        if indent < 0:
            out.append("{")
            for i, entry in enumerate(node.entries):
                out.append(f"{', ' if i else ''}{entry.name}: ")
                _write_text(entry.node, out, -1)
            out.append("}")
            return
        pad = "    " * (indent + 1)
        out.append("{\n")
        for entry in node.entries:
            out.append(f"{pad}{entry.name}: ")
            _write_text(entry.node, out, indent + 1)
            out.append(",\n")
        out.append("    " * indent + "}")
    elif isinstance(node, InspectValue):
        out.append(format_value(node.value, node.flags))
    elif isinstance(node, InspectFailed):
        out.append(f"error ({node.message})")
    else:
        out.append("_")


def _json_data(node: InspectNode) -> Any:
    if isinstance(node, InspectDir):
        return {entry.name: _json_data(entry.node) for entry in node.entries}
    if isinstance(node, InspectFailed):
        # "$error" cannot clash with a real entry name in practice (names are identifiers).
        return {"$error": node.message}
    if isinstance(node, InspectValue):
        value = node.value
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            # Hex and binary stay readable as strings, as the original does.
            return _int_text(value, node.flags) or value
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii").rstrip("=")
        return value
    return None


def _plain_data(node: InspectNode) -> Any:
    if isinstance(node, InspectDir):
        return {entry.name: _plain_data(entry.node) for entry in node.entries}
    if isinstance(node, InspectFailed):
        if node.error is InspectErrorKind.UNRESOLVED:
            return UNRESOLVED_TEXT
        return {"$error": node.message}
    if isinstance(node, InspectValue):
        return node.value
    return None


# ------------------------------------------------------------------ since


def _since(new: InspectNode, old: InspectNode, seconds: float) -> InspectNode:
    if isinstance(new, InspectValue) and isinstance(old, InspectValue):
        if ValueFlags.COUNTER in new.flags and _is_number(new.value) and _is_number(old.value):
            return InspectValue((new.value - old.value) / seconds, new.flags)
        return new
    if isinstance(new, InspectDir) and isinstance(old, InspectDir):
        before = {entry.name: entry.node for entry in old.entries}
        entries = []
        for entry in new.entries:
            prev = before.get(entry.name)
            node = entry.node if prev is None else _since(entry.node, prev, seconds)
            entries.append(InspectEntry(entry.name, _as_any(node), entry.sensitivity))
        return InspectDir(tuple(entries))
    return new


def _as_any(node: InspectNode) -> AnyInspectNode:
    assert isinstance(node, InspectUnevaluated | InspectFailed | InspectValue | InspectDir)
    return node


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


__all__ = [
    "NO_FLAGS",
    "AnyInspectNode",
    "InspectDir",
    "InspectEntry",
    "InspectError",
    "InspectErrorKind",
    "InspectFailed",
    "InspectNode",
    "InspectUnevaluated",
    "InspectValue",
    "Sensitivity",
    "ValueFlags",
    "error_message",
    "merge_entries",
]
