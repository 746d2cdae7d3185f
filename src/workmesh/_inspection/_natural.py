"""Natural ordering of inspect entry names: ``foo3`` sorts before ``foo100``.

A name is cut into segments, and names compare segment by segment:

* a run of decimal digits is a number (``Dec``);
* ``0x`` followed by hex digits is a hex number (``Hex``);
* anything else is text (``Str``), compared by its UTF-8 bytes.

Segments of different kinds order ``Dec < Hex < Str``.  A digit run directly followed
by a letter is *text*, not a number: ``3foo > 100foo`` but ``3_foo < 100_foo``.  This
keeps unprefixed hex data (GUIDs, hashes) from being half-parsed as decimal, which
would scatter them; and it applies to hex-letter suffixes too (``3cab > 100cab``),
so the outcome does not depend on which letters follow the digits.

Numbers are Python ints, so long digit runs never overflow; they simply compare by
value.
"""

from __future__ import annotations

from typing import Final

_DEC: Final = 0
_HEX: Final = 1
_STR: Final = 2

_DIGITS: Final = frozenset("0123456789")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")

Segment = tuple[int, int] | tuple[int, bytes]


def _is_letter(ch: str) -> bool:
    # ASCII letters only, like the original; other scripts are plain text.
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _number_run(text: str, start: int, digits: frozenset[str]) -> int | None:
    """End of the digit run at ``start``, or None when a letter directly follows it."""
    end = start
    while end < len(text) and text[end] in digits:
        end += 1
    if end < len(text) and _is_letter(text[end]):
        return None
    return end


def natural_key(name: str) -> tuple[Segment, ...]:
    """The sort key of ``name``: a tuple of ``(kind, value)`` segments."""
    segments: list[Segment] = []
    pos, size = 0, len(name)
    while pos < size:
        ch = name[pos]
        if name.startswith("0x", pos) and pos + 2 < size and name[pos + 2] in _HEX_DIGITS:
            end = _number_run(name, pos + 2, _HEX_DIGITS)
            if end is not None:
                segments.append((_HEX, int(name[pos + 2 : end], 16)))
                pos = end
                continue
            # "0x5g": the whole run, prefix included, is text.
            end = pos + 2
            while end < size and name[end] in _HEX_DIGITS:
                end += 1
        elif ch in _DIGITS:
            end = _number_run(name, pos, _DIGITS)
            if end is not None:
                segments.append((_DEC, int(name[pos:end])))
                pos = end
                continue
            end = pos
            while end < size and name[end] in _DIGITS:
                end += 1
        else:
            end = pos + 1
            while end < size and name[end] not in _DIGITS:
                end += 1
        segments.append((_STR, name[pos:end].encode()))
        pos = end
    return tuple(segments)


__all__ = ["natural_key"]
