"""Sandbox setup hooks run by the tests' child processes (``Sandbox(setup=...)``)."""

from __future__ import annotations

import os

import workmesh as wm

# Set by a hook when it runs; the module under test reads it when it is imported.
RAN: str | None = None


def record() -> None:
    """A hook without arguments: note that it ran, and in which process."""
    global RAN  # noqa: PLW0603 - the point of the hook
    RAN = f"record in {os.getpid()}"


def record_with(sandbox: wm.Sandbox) -> None:
    """A hook that takes the Sandbox it belongs to."""
    global RAN  # noqa: PLW0603 - the point of the hook
    RAN = f"record_with {sorted(sandbox.rlimits)} in {os.getpid()}"


def refuse() -> None:
    raise PermissionError("the setup refused on purpose")


async def not_a_plain_function() -> None:
    """Async hooks are refused: the child applies its sandbox before any loop runs."""
