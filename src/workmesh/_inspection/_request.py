"""Answering an inspection: requests, the response builder, and updates.

An inspectable object defines ``__inspect__(self, req)``; a plain function taking
the request works too.  The handler answers its :class:`InspectRequest` exactly
once, by one of:

* ``req.respond()`` -- this node is a directory; the returned
  :class:`InspectResponse` adds children (``field``, ``child``, ...);
* ``req.value(v)`` -- this node is a leaf;
* ``req.ignore()`` -- leave this node out;
* ``req.update()`` -- returns an :class:`UpdateRequest` when this is the leaf an
  update targets (else ``None``);
* ``req.defer()`` -- answer later, elsewhere (see :mod:`._defer`).

Laziness is the point of the design.  Adding a child only *offers* it: the
response decides from the remaining path, the remaining depth and the sensitivity
whether the child is needed, and only then runs its handler (or its function).  So
inspecting one path of a huge tree costs only that path, and a depth limit stops
evaluation rather than trimming afterwards.

Each request carries its :class:`Params` -- the path still to walk, the depth still
allowed, the sensitivity and update value of the whole inspection -- and the slot
(a :class:`~._tree.PEntry`) that its answer fills.

Handlers are user code, so their failures are contained: an exception becomes an
``internal error`` node at that place and is logged, and the rest of the tree is
still produced.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Self

from ._params import NumberFormat, Params, format_flags
from ._result import NO_FLAGS, InspectErrorKind, Sensitivity, ValueFlags
from ._tree import PDir, PEntry, PFailed, PIgnored, PUnevaluated, PValue, leaf
from ._update import UpdateRequest, parse_like

if TYPE_CHECKING:
    from ._defer import Deferred

logger = logging.getLogger(__name__)


class InspectRequest:
    """One node's request.  Handlers receive it; they never construct it."""

    __slots__ = ("_answered", "_params", "_slot")

    def __init__(self, params: Params, slot: PEntry) -> None:
        self._params = params
        self._slot = slot
        self._answered: str | None = None

    # -- what is asked

    @property
    def path(self) -> str:
        """The part of the path below this node still to be walked ("" at the target)."""
        return self._params.path.strip("/")

    @property
    def sensitivity(self) -> Sensitivity:
        """The highest sensitivity this inspection may see."""
        return self._params.sensitivity

    @property
    def is_update(self) -> bool:
        return self._params.update is not None

    # -- number formats

    def with_hex_format(self) -> Self:
        """Show integer leaves under this request in hex (unless they chose a format)."""
        return self._with_format(NumberFormat.HEX)

    def with_binary_format(self) -> Self:
        return self._with_format(NumberFormat.BINARY)

    def with_counter_format(self) -> Self:
        return self._with_format(NumberFormat.COUNTER)

    def with_decimal_format(self) -> Self:
        return self._with_format(NumberFormat.DECIMAL)

    def _with_format(self, fmt: NumberFormat) -> Self:
        self._params = dataclasses.replace(self._params, number_format=fmt)
        return self

    # -- answers

    def respond(self) -> InspectResponse:
        """Answer as a directory; add children to the returned response."""
        self._claim("respond")
        # At depth 0 the node is known to be a directory but its children are not
        # wanted: it shows as unevaluated.
        if self._params.depth > 0:
            node = PDir()
            self._slot.node = node
        else:
            node = None
            self._slot.node = PUnevaluated()
        return InspectResponse(self._params, node)

    def value(self, value: object, flags: ValueFlags = NO_FLAGS) -> None:
        """Answer as a leaf (``None`` leaves the node out, like ``ignore()``)."""
        self._claim("value")
        if value is None:
            self._slot.node = PIgnored()
        elif self._params.path:
            # Anything left of the path, even a lone trailing "/", asks for a child.
            self._slot.node = PFailed(InspectErrorKind.NOT_A_DIRECTORY)
        elif self._params.update is not None and not self._params.below_target:
            self._slot.node = PFailed(InspectErrorKind.IMMUTABLE)
        else:
            self._slot.node = self._leaf(value, flags)

    def ignore(self) -> None:
        """Leave this node out of the result."""
        self._claim("ignore")
        self._slot.node = PIgnored()

    def update(self) -> UpdateRequest | None:
        """The update to apply, if this request is an update of exactly this leaf.

        Returns None for a plain inspection (answer with ``value`` then).  Claims
        the request only when it returns an :class:`UpdateRequest`.
        """
        params = self._params
        if params.update is None or params.path or params.below_target:
            return None
        self._claim("update")
        return UpdateRequest(params.update, self._slot, params.number_format)

    def defer(self) -> Deferred:
        """Answer later: the returned :class:`Deferred` carries this request away."""
        from ._defer import defer_request  # noqa: PLC0415 - _defer builds on this module

        self._claim("defer")
        return defer_request(self._params, self._slot)

    # -- internals

    def _claim(self, how: str) -> None:
        if self._answered is not None:
            raise RuntimeError(
                f"this InspectRequest was already answered by {self._answered}(); "
                f"cannot also {how}() it (a request is answered exactly once)"
            )
        self._answered = how

    def _leaf(self, value: object, flags: ValueFlags) -> PValue:
        # An explicit format (resp.hex(...)) wins over one inherited from a request.
        return leaf(value, flags or format_flags(self._params.number_format, value))

    def _fail(self, kind: InspectErrorKind, detail: str = "") -> None:
        # Overrides whatever was answered: used when the handler itself went wrong.
        self._answered = self._answered or "fail"
        self._slot.node = PFailed(kind, detail)


class InspectResponse:
    """Builds a directory.  Every method returns the response, for chaining."""

    __slots__ = ("_dir", "_params", "_path")

    def __init__(self, params: Params, node: PDir | None) -> None:
        self._params = params
        self._dir = node  # None: depth exhausted, every child is skipped
        self._path = params.path.lstrip("/")

    def field(
        self, name: str, value: object, *, sensitivity: Sensitivity = Sensitivity.UNSPECIFIED
    ) -> Self:
        """Add a child: a leaf value, an inspectable object, or a function of a request.

        ``None`` adds nothing; a mapping becomes a directory keyed by ``str(key)``,
        a list or tuple a directory keyed by index.  A ``/`` in ``name`` nests
        (``"x/a/b"``); an empty name merges the child's entries into this node.
        """
        req = self._child_request(name, sensitivity)
        if req is not None:
            inspect_object(value, req)
        return self

    def child(
        self,
        name: str,
        obj_or_fn: object,
        *,
        sensitivity: Sensitivity = Sensitivity.UNSPECIFIED,
    ) -> Self:
        """Add a subtree: an inspectable object or a function taking an InspectRequest.

        The function (or ``__inspect__``) runs only if the child is needed.
        """
        return self.field(name, obj_or_fn, sensitivity=sensitivity)

    def field_with(
        self,
        name: str,
        compute: Callable[[], object],
        *,
        sensitivity: Sensitivity = Sensitivity.UNSPECIFIED,
    ) -> Self:
        """Add a child whose value ``compute()`` produces, only if the child is needed."""
        req = self._child_request(name, sensitivity)
        if req is not None:
            inspect_object(_Computed(compute), req)
        return self

    def display(
        self, name: str, obj: object, *, sensitivity: Sensitivity = Sensitivity.UNSPECIFIED
    ) -> Self:
        """Add ``str(obj)`` as a string leaf (formatted only if needed)."""
        return self.field_with(name, lambda: str(obj), sensitivity=sensitivity)

    def hex(
        self, name: str, value: int, *, sensitivity: Sensitivity = Sensitivity.UNSPECIFIED
    ) -> Self:
        """Add an integer shown in hexadecimal."""
        return self._flagged(name, value, ValueFlags.HEX, sensitivity)

    def binary(
        self, name: str, value: int, *, sensitivity: Sensitivity = Sensitivity.UNSPECIFIED
    ) -> Self:
        """Add an integer shown in binary."""
        return self._flagged(name, value, ValueFlags.BINARY, sensitivity)

    def counter(
        self,
        name: str,
        value: int | float,
        *,
        sensitivity: Sensitivity = Sensitivity.UNSPECIFIED,
    ) -> Self:
        """Add a counter: ``InspectNode.since`` turns it into a rate."""
        return self._flagged(name, value, ValueFlags.COUNTER, sensitivity)

    def field_mut(
        self,
        name: str,
        value: bool | int | float | str,
        setter: Callable[[Any], object],
        *,
        sensitivity: Sensitivity = Sensitivity.UNSPECIFIED,
    ) -> Self:
        """Add a leaf that an update can change.

        On an update the new text is parsed like ``value``'s type (``int`` accepts
        ``0x``/``0o``/``0b`` prefixes, ``bool`` accepts ``true``/``false``) and passed
        to ``setter``; the update reports the parsed value, or what ``setter``
        returns if that is not None.  A parse error or an exception from ``setter``
        fails the update with the error's text.
        """

        def answer(req: InspectRequest) -> None:
            upd = req.update()
            if upd is None:
                req.value(value)
                return
            try:
                new = parse_like(value, upd.new_value)
                stored = setter(new)
            except Exception as exc:
                upd.fail(exc)
            else:
                upd.succeed(new if stored is None else stored)

        return self.field(name, answer, sensitivity=sensitivity)

    def field_mut_with(
        self,
        name: str,
        handler: Callable[[str | None], object],
        *,
        sensitivity: Sensitivity = Sensitivity.UNSPECIFIED,
    ) -> Self:
        """Add a leaf read and written by one function.

        ``handler(None)`` returns the current value; ``handler(text)`` applies an
        update and returns the new value (raising fails the update).
        """

        def answer(req: InspectRequest) -> None:
            upd = req.update()
            if upd is None:
                req.value(handler(None))
                return
            try:
                new = handler(upd.new_value)
            except Exception as exc:
                upd.fail(exc)
            else:
                upd.succeed(new)

        return self.field(name, answer, sensitivity=sensitivity)

    def fields(
        self,
        name: str,
        items: Iterable[tuple[object, object]],
        *,
        sensitivity: Sensitivity = Sensitivity.UNSPECIFIED,
    ) -> Self:
        """Add a directory of ``(key, value)`` pairs (iterated only if needed).

        With an empty ``name`` the pairs become entries of this node.
        """

        def answer(req: InspectRequest) -> None:
            resp = req.respond()
            for key, value in items:
                resp.field(str(key), value)

        return self.field(name, answer, sensitivity=sensitivity)

    def merge(self, obj: object) -> Self:
        """Inspect ``obj`` into this node: its entries join this directory."""
        inspect_object(obj, self.request())
        return self

    def request(self) -> InspectRequest:
        """A request whose answer is merged into this node."""
        slot = PEntry("", Sensitivity.UNSPECIFIED, PUnevaluated())
        if self._dir is not None:
            self._dir.entries.append(slot)
        # With the depth exhausted the slot is detached: whatever answers it is dropped.
        return InspectRequest(self._params, slot)

    # -- internals

    def _flagged(
        self, name: str, value: int | float, flags: ValueFlags, sensitivity: Sensitivity
    ) -> Self:
        req = self._child_request(name, sensitivity)
        if req is not None:
            try:
                req.value(value, flags)
            except TypeError as exc:
                req._fail(InspectErrorKind.INTERNAL, str(exc))
        return self

    def _child_request(self, name: str, sensitivity: Sensitivity) -> InspectRequest | None:
        """The request for child ``name``, or None if the child is not needed.

        Walks the path: a child on the path continues it (the depth is only spent
        once the path is used up); past the target, each level -- including each
        ``/`` inside a name -- spends one unit of depth, and a name that goes
        deeper than allowed is recorded, cut at the limit, as unevaluated.
        """
        params, node = self._params, self._dir
        if node is None or params.depth == 0 or sensitivity > params.sensitivity:
            return None
        path = self._path
        if not name:
            return self._add(node, "", sensitivity, params)
        if path.startswith(name):
            rest = path[len(name) :]
            if rest and rest[0] != "/":
                return None  # "foo" does not lead to "foobar"
            return self._add(node, name, sensitivity, dataclasses.replace(params, path=rest))
        if not name.startswith(path):
            return None
        if path:
            if name[len(path)] != "/":
                return None  # "foobar" is not under "foo"
            remaining = name[len(path) + 1 :]
        else:
            remaining = name
        cut = _nth_slash(remaining, params.depth - 1)
        if cut is not None:
            short = name[: len(name) - len(remaining) + cut]
            node.entries.append(PEntry(short, sensitivity, PUnevaluated()))
            return None
        child = dataclasses.replace(params, path="", depth=params.depth - 1, below_target=True)
        return self._add(node, name, sensitivity, child)

    @staticmethod
    def _add(node: PDir, name: str, sensitivity: Sensitivity, params: Params) -> InspectRequest:
        slot = PEntry(name, sensitivity, PUnevaluated())
        node.entries.append(slot)
        return InspectRequest(params, slot)


def _nth_slash(text: str, n: int) -> int | None:
    """Index of the ``n``-th (0-based) ``/`` in ``text``, or None."""
    pos = -1
    for _ in range(n + 1):
        pos = text.find("/", pos + 1)
        if pos < 0:
            return None
    return pos


# ------------------------------------------------------------------ dispatch


class _Computed:
    """Defers ``compute()`` until the child is known to be needed."""

    __slots__ = ("compute",)

    def __init__(self, compute: Callable[[], object]) -> None:
        self.compute = compute

    def __inspect__(self, req: InspectRequest) -> None:
        inspect_object(self.compute(), req)


_LEAVES: Final = (bool, int, float, str, bytes, bytearray, memoryview)


def inspect_object(obj: object, req: InspectRequest) -> None:
    """Answer ``req`` from ``obj``, containing any failure of the handler."""
    try:
        _dispatch(obj, req)
    except Exception as exc:
        logger.warning("inspect handler of %s failed", type(obj).__qualname__, exc_info=True)
        req._fail(InspectErrorKind.INTERNAL, f"{type(exc).__qualname__}: {exc}")


def _dispatch(obj: object, req: InspectRequest) -> None:
    if obj is None:
        req.ignore()
        return
    if isinstance(obj, _LEAVES):
        req.value(obj)
        return
    # Looked up on the type, like any dunder: a class itself is not inspectable.
    handler = getattr(type(obj), "__inspect__", None)
    if handler is not None:
        handler(obj, req)
    elif callable(obj):
        obj(req)
    elif isinstance(obj, Mapping):
        resp = req.respond()
        for key, value in obj.items():
            resp.field(str(key), value)
    elif isinstance(obj, list | tuple):
        resp = req.respond()
        for index, value in enumerate(obj):
            resp.field(str(index), value)
    elif hasattr(type(obj), "__index__"):
        req.value(obj)
    else:
        req._fail(
            InspectErrorKind.INTERNAL,
            f"cannot inspect a value of type {type(obj).__qualname__}: expected int, float, "
            "bool, str, "
            "bytes, None, a mapping, a list, an object with __inspect__, or a function "
            "taking an InspectRequest",
        )


__all__ = ["InspectRequest", "InspectResponse", "inspect_object"]
