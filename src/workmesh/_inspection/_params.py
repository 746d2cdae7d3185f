"""What every request of one level shares: :class:`Params`, and number formats.

A request does not own its path, depth or sensitivity; it inherits a ``Params``
record from its parent (with the path shortened or the depth spent) and passes one
on to each child it evaluates.  A :class:`~._defer.Deferred` is essentially a
``Params`` that travels, plus the reply channel.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Final

from ._result import NO_FLAGS, Sensitivity, ValueFlags

MAX_DEPTH: Final = 4096
"""The depth of an unlimited inspection: anything deeper is most likely a cycle."""


class NumberFormat(enum.IntEnum):
    """How integer leaves without an explicit format are shown, below a request."""

    DEFAULT = 0
    HEX = 1
    BINARY = 2
    COUNTER = 3
    DECIMAL = 4  # undo an inherited format


_FORMAT_FLAGS: Final = {
    NumberFormat.HEX: ValueFlags.HEX,
    NumberFormat.BINARY: ValueFlags.BINARY,
    NumberFormat.COUNTER: ValueFlags.COUNTER,
}


def format_flags(fmt: NumberFormat, value: object) -> ValueFlags:
    """The display flags an inherited number format gives ``value`` (integers only)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _FORMAT_FLAGS.get(fmt, NO_FLAGS)
    return NO_FLAGS


@dataclasses.dataclass(frozen=True, slots=True)
class Params:
    """What a request inherits: the same for every request of one level."""

    path: str  # still to walk, as given (leading or repeated slashes allowed)
    depth: int  # levels still allowed; 0 means "answer, but do not evaluate children"
    sensitivity: Sensitivity  # the highest level this inspection may see
    update: str | None = None  # the new value, for an update
    number_format: NumberFormat = NumberFormat.DEFAULT
    # True once the walk has gone past the update target (the target's own children
    # are evaluated for their names, but must never apply the update themselves).
    below_target: bool = False


__all__ = ["MAX_DEPTH", "NumberFormat", "Params", "format_flags"]
