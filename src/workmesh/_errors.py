"""The exception taxonomy of workmesh (layer L0): errors as data.

Everything the library raises derives from :class:`WorkmeshError`.  Errors raised
by user code in another process never travel as live exception objects: they are
flattened into a :class:`RemoteError`, a chain of plain :class:`ErrorFrame` records
(type name, message, traceback text) that any codec can carry and any process can
rebuild, whether or not it could import the original exception classes.

This module imports only the standard library so that every other layer may use it.
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Self

__all__ = [
    "ChannelClosed",
    "ChannelEmpty",
    "ChannelErrorKind",
    "ChannelFailed",
    "ErrorFrame",
    "LaunchError",
    "NodeError",
    "PayloadError",
    "RecvError",
    "RemoteError",
    "WorkmeshError",
]


class WorkmeshError(Exception):
    """Base of every exception raised by workmesh."""


# --------------------------------------------------------------------------- receiving


class RecvError(WorkmeshError):
    """Base of the errors a receive operation can raise."""


class ChannelClosed(RecvError):
    """All senders are gone, or the reply port was dropped without an answer."""

    def __init__(self, message: str = "channel closed") -> None:
        super().__init__(message)


class ChannelEmpty(RecvError):
    """Raised only by ``try_recv``: nothing is queued right now."""

    def __init__(self, message: str = "channel empty") -> None:
        super().__init__(message)


class ChannelErrorKind(enum.Enum):
    NODE_FAILURE = "node failure"
    CORRUPTION = "message corruption"


class ChannelFailed(RecvError):
    """The channel can never deliver again, for a reason other than an orderly close."""

    def __init__(self, kind: ChannelErrorKind, cause: BaseException | None = None) -> None:
        # The constructor arguments are the args so that pickle can rebuild the error.
        super().__init__(kind, cause)
        self.kind = kind
        # Assigning __cause__, even None, suppresses the implicit context; keep that
        # context when there is no explicit cause to show instead.
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        text = f"channel failure: {self.kind.value}"
        if self.__cause__ is not None:
            text += f": {_safe_str(self.__cause__)}"
        return text


# --------------------------------------------------------------------------- the mesh


class NodeError(WorkmeshError):
    """A failure of the mesh itself: a peer node, or the local node's machinery."""

    def __init__(
        self, reason: str, node: str | None = None, cause: BaseException | None = None
    ) -> None:
        super().__init__(reason, node, cause)
        self.reason = reason
        self.node = node
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        if self.node is not None:
            return f"communication with node {self.node} failed: {self.reason}"
        return f"local mesh failure: {self.reason}"


class PayloadError(WorkmeshError, ValueError):
    """A value cannot be encoded or decoded as its declared type.

    The message says what was expected, what arrived and where, in msgspec's style
    (``Expected `int`, got `str` - at `$.a```); the parts are also kept as attributes
    for callers that want to act on them.
    """

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        got: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got
        self.path = path


class LaunchError(WorkmeshError):
    """A worker process could not be started."""

    _PREFIX = "failed to launch worker"

    def __init__(self, message: str = _PREFIX, cause: BaseException | None = None) -> None:
        # Callers grep logs for the prefix, so it is guaranteed rather than hoped for.
        if not message.startswith(self._PREFIX):
            message = f"{self._PREFIX}: {message}"
        super().__init__(message, cause)
        self.message = message
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- remote errors


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """One link of an exception chain, as plain data."""

    type_name: str
    message: str
    traceback: str | None


_EMPTY_FRAME = ErrorFrame("RemoteError", "no error information", None)
_WIRE_FRAME_SHAPE = " of [type_name, message, traceback]"
_REPR_MESSAGE_LIMIT = 60


class RemoteError(WorkmeshError):
    """An error that crossed, or may cross, a process boundary, held as data.

    ``chain`` is outermost first: ``chain[0]`` is what was raised, each later frame
    is the cause (or context) of the one before it.
    """

    def __init__(self, chain: Sequence[ErrorFrame]) -> None:
        self._chain: tuple[ErrorFrame, ...] = tuple(chain) or (_EMPTY_FRAME,)
        super().__init__(self._text())
        self._add_traceback_notes()

    # The original exception classes may not exist on this side, so the remote
    # tracebacks ride along as PEP 678 notes: Python prints them under the error.
    def _add_traceback_notes(self) -> None:
        existing = getattr(self, "__notes__", ())
        for frame in self._chain:
            if frame.traceback is None:
                continue
            note = f"remote traceback ({_frame_label(frame)}):\n{frame.traceback.rstrip()}"
            if note not in existing:
                self.add_note(note)

    def _text(self) -> str:
        return ": ".join(frame.message or frame.type_name for frame in self._chain)

    def __str__(self) -> str:
        return self._text()

    def __repr__(self) -> str:
        links = " <- ".join(_brief(frame) for frame in self._chain)
        return f"{type(self).__name__}({links})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteError):
            return NotImplemented
        return self._chain == other._chain

    def __hash__(self) -> int:
        return hash(self._chain)

    # Pickle would need the original classes on the receiving side and would run
    # arbitrary code there; the wire form is the only way across.
    def __reduce__(self) -> NoReturn:
        raise TypeError("RemoteError is not picklable; it crosses processes as data")

    # Copying within one process is harmless, and __reduce__ would otherwise break it.
    def __copy__(self) -> Self:
        return type(self)(self._chain)

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return type(self)(self._chain)

    @property
    def chain(self) -> tuple[ErrorFrame, ...]:
        return self._chain

    @property
    def type_name(self) -> str:
        return self._chain[0].type_name

    @property
    def message(self) -> str:
        return self._chain[0].message

    @property
    def traceback(self) -> str | None:
        return self._chain[0].traceback

    @classmethod
    def from_exception(cls, exc: BaseException) -> Self:
        """Flatten ``exc`` and its causes into a chain of frames, outermost first.

        A RemoteError met along the way is spliced in as it is and ends the walk: its
        frames already describe everything behind it, and its own local cause is
        usually the very exception it was built from.
        """
        frames: list[ErrorFrame] = []
        seen: set[int] = set()
        link: BaseException | None = exc
        while link is not None and id(link) not in seen:
            seen.add(id(link))
            if isinstance(link, RemoteError):
                frames.extend(link.chain)
                break
            frames.append(_frame_of(link))
            link = _next_link(link)
        return cls(_without_repeated_causes(frames))

    def to_wire(self) -> list[list[str | None]]:
        """The plain-data form: one ``[type_name, message, traceback]`` per frame."""
        return [[frame.type_name, frame.message, frame.traceback] for frame in self._chain]

    @classmethod
    def from_wire(cls, data: object) -> Self:
        """Rebuild from :meth:`to_wire` output; anything malformed is a PayloadError."""
        if not isinstance(data, list | tuple) or not data:
            raise _malformed("list", " of at least one frame", data, "$")
        return cls([_frame_from_wire(item, f"$[{index}]") for index, item in enumerate(data)])


# --------------------------------------------------------------------------- helpers


def _without_repeated_causes(frames: list[ErrorFrame]) -> list[ErrorFrame]:
    """Drop a cause's text that an outer message already ends with.

    Some messages (ChannelFailed's, for one) include their cause's text, which the
    next frame states again; "outer: cause: root" should say each part once.
    """
    out = list(frames)
    for i in range(len(out) - 1):
        suffix = ": " + out[i + 1].message
        if out[i + 1].message and out[i].message.endswith(suffix):
            frame = out[i]
            out[i] = ErrorFrame(frame.type_name, frame.message[: -len(suffix)], frame.traceback)
    return out


def _safe_str(exc: BaseException) -> str:
    # A broken __str__ must not turn error reporting into a second error.
    try:
        return str(exc)
    except Exception:
        return f"<exception str() failed for {_type_name(type(exc))}>"


def _type_name(cls: type[BaseException]) -> str:
    module = getattr(cls, "__module__", None)
    if module in (None, "builtins"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _next_link(exc: BaseException) -> BaseException | None:
    if exc.__cause__ is not None:
        return exc.__cause__
    if exc.__suppress_context__:
        return None
    return exc.__context__


def _frame_of(exc: BaseException) -> ErrorFrame:
    text: str | None = None
    if _has_traceback(exc):
        text = "".join(traceback.format_exception(exc, chain=False))
    return ErrorFrame(_type_name(type(exc)), _message_of(exc), text)


def _message_of(exc: BaseException) -> str:
    # str(group) would only say how many sub-exceptions there are; name them all.
    if not isinstance(exc, BaseExceptionGroup):
        return _safe_str(exc)
    parts = []
    for sub in exc.exceptions:
        name, inner = _type_name(type(sub)), _message_of(sub)
        parts.append(f"{name}: {inner}" if inner else name)
    return f"{exc.message} [{'; '.join(parts)}]"


def _has_traceback(exc: BaseException) -> bool:
    # An exception that was never raised has no stack to show; formatting it would
    # only repeat the message, so its frame carries no traceback at all.
    if exc.__traceback__ is not None:
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_has_traceback(sub) for sub in exc.exceptions)
    return False


def _frame_label(frame: ErrorFrame) -> str:
    return f"{frame.type_name}: {frame.message}" if frame.message else frame.type_name


def _brief(frame: ErrorFrame) -> str:
    message = frame.message
    if len(message) > _REPR_MESSAGE_LIMIT:
        message = message[: _REPR_MESSAGE_LIMIT - 1] + "…"
    return f"{frame.type_name}: {message!r}"


def _describe(value: object) -> str:
    if value is None:
        return "`None`"
    if isinstance(value, list | tuple):
        return f"`{type(value).__name__}` of length {len(value)}"
    return f"`{type(value).__name__}`"


def _malformed(expected: str, shape: str, value: object, path: str) -> PayloadError:
    got = _describe(value)
    return PayloadError(
        f"Expected `{expected}`{shape}, got {got} - at `{path}`",
        expected=f"{expected}{shape}",
        got=got.replace("`", ""),
        path=path,
    )


def _frame_from_wire(item: object, path: str) -> ErrorFrame:
    if not isinstance(item, list | tuple) or len(item) != 3:
        raise _malformed("list", _WIRE_FRAME_SHAPE, item, path)
    type_name, message, text = item
    if not isinstance(type_name, str):
        raise _malformed("str", "", type_name, f"{path}[0]")
    if not isinstance(message, str):
        raise _malformed("str", "", message, f"{path}[1]")
    if text is not None and not isinstance(text, str):
        raise _malformed("str | None", "", text, f"{path}[2]")
    return ErrorFrame(type_name, message, text)
