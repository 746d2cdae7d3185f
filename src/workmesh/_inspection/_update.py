"""Updates: changing a leaf through the inspection tree.

An update is an inspection that carries a new value (as text) down a path.  The
handler of the leaf at the end of the path -- and only that one, never its
siblings or anything below a directory target -- gets an :class:`UpdateRequest`
from ``req.update()``; it parses and applies the value, then reports the new value
(``succeed``) or the reason it refused (``fail``).  Leaves that never ask for the
update answer with ``req.value()`` as usual, which reports ``immutable node``.
``UpdateRequest.defer()`` finishes the update elsewhere, like ``req.defer()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._params import NumberFormat, format_flags
from ._result import InspectErrorKind
from ._tree import PEntry, PFailed, leaf

if TYPE_CHECKING:
    from ._defer import DeferredUpdate


class UpdateRequest:
    """The update of one leaf: ``new_value`` is the text to apply."""

    __slots__ = ("_done", "_format", "_slot", "new_value")

    def __init__(self, new_value: str, slot: PEntry, number_format: NumberFormat) -> None:
        self.new_value = new_value
        self._slot = slot
        self._format = number_format
        self._done = False

    def succeed(self, value: object) -> None:
        """The update was applied; ``value`` is the leaf's new value."""
        self._finish()
        self._slot.node = leaf(value, format_flags(self._format, value))

    def fail(self, error: BaseException | str) -> None:
        """The update was refused; the caller sees ``update error: <error text>``."""
        self._finish()
        self._slot.node = PFailed(InspectErrorKind.UPDATE, error_chain_text(error))

    def defer(self) -> DeferredUpdate:
        """Finish the update later (on another thread, or in another process)."""
        from ._defer import defer_update  # noqa: PLC0415 - _defer builds on this module

        self._finish()
        return defer_update(self.new_value, self._format, self._slot)

    def _finish(self) -> None:
        if self._done:
            raise RuntimeError("this UpdateRequest was already answered")
        self._done = True


def error_chain_text(error: BaseException | str) -> str:
    """``"outer: cause: root"`` -- an exception and its causes, joined like anyhow's."""
    if isinstance(error, str):
        return error
    parts: list[str] = []
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(str(exc) or type(exc).__name__)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return ": ".join(parts)


def parse_like(current: object, text: str) -> object:
    """Parse ``text`` as a value of ``current``'s type."""
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise ValueError(f"expected true or false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            return int(text, 0)  # 0x.., 0o.., 0b..
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    raise ValueError(f"a {type(current).__qualname__} field cannot be updated")


__all__ = ["UpdateRequest", "error_chain_text", "parse_like"]
