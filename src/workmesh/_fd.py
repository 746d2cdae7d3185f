"""Owned file descriptors (layer L0).

An :class:`OwnedFd` owns exactly one descriptor and closes it when it is closed or
garbage-collected.  Inside a message it travels to another process by SCM_RIGHTS:
encoding *moves* the descriptor out of the object (``detach``), so a descriptor is
never closed twice nor leaked when a message is dropped.
"""

from __future__ import annotations

import contextlib
import os
from typing import NoReturn, Protocol


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


class OwnedFd:
    """Owns one file descriptor.  ``OwnedFd(fd)`` takes ownership of ``fd``."""

    __slots__ = ("__weakref__", "_fd")

    def __init__(self, fd: int) -> None:
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError(f"OwnedFd expects an int file descriptor, got {type(fd).__name__}")
        if fd < 0:
            raise ValueError(f"OwnedFd expects a non-negative file descriptor, got {fd}")
        self._fd = fd

    @classmethod
    def dup(cls, obj: int | _HasFileno) -> OwnedFd:
        """A new OwnedFd holding a duplicate of ``obj``'s descriptor (the original stays)."""
        fd = obj if isinstance(obj, int) else obj.fileno()
        return cls(os.dup(fd))

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("OwnedFd is closed or detached")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def detach(self) -> int:
        """Give up ownership and return the descriptor; the caller must close it."""
        fd = self.fileno()
        self._fd = -1
        return fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> OwnedFd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A descriptor must not outlive its owner; an error here (already closed by
        # someone who did not own it) has nowhere useful to go.
        with contextlib.suppress(OSError):
            self.close()

    def __repr__(self) -> str:
        return f"OwnedFd({self._fd})" if self._fd >= 0 else "OwnedFd(<closed>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("OwnedFd is not picklable; it crosses processes by SCM_RIGHTS")
