"""Event loops the library makes for its own threads (layer L0).

uvloop's loop when the optional extra is installed, asyncio's otherwise: uvloop is
an optional speed-up, never a requirement.  Used for the I/O thread, a child's
main loop and each asyncio worker's own loop.
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed (an optional speed-up)."""
    try:
        # An optional speed-up; without the extra installed, mypy cannot see it.
        import uvloop  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
