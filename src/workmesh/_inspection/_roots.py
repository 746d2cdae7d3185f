"""Inspectable things a process offers when it is inspected as a whole.

A process-wide registry: a worker host runner, say, adds itself while it runs,
so that inspecting a child process from its parent shows its workers.  It lives
here, in the lowest layer that knows about inspection, so that both the worker
layer and the process layer can reach it without reaching each other.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

_roots: dict[str, object] = {}
_lock = threading.Lock()
_counter = itertools.count(1)


def register_root(name: str, obj: object) -> str:
    """Offer ``obj`` under ``name`` (made unique); returns the name to unregister."""
    with _lock:
        key = name if name not in _roots else f"{name}-{next(_counter)}"
        _roots[key] = obj
        return key


def unregister_root(key: str) -> None:
    with _lock:
        _roots.pop(key, None)


def roots() -> Iterator[tuple[str, object]]:
    with _lock:
        return iter(list(_roots.items()))
