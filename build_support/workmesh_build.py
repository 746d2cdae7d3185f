"""The build backend: setuptools', plus mypy (for mypyc) when a compiled build is
asked for with ``WORKMESH_COMPILE=1``.

Only wheels are compiled: an editable install keeps the sources live, and an
extension module beside a source would shadow every later edit to it, so a
compiled editable install is refused with a message saying so.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the backend's other hooks, unchanged)

# mypyc compiles what mypy type-checks: the same mypy the project's check uses, and
# msgspec for the types the compiled modules use from it.  1.18 at least: older
# mypyc drops a compiled class's __del__ without a word (or runs it unsafely), and
# compiled payloads, reply slots and oneshot senders give back what they hold in it.
_MYPYC = ["mypy>=1.18", "msgspec>=0.18"]


def _compiling() -> bool:
    return os.environ.get("WORKMESH_COMPILE") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    if _compiling():
        # setuptools would find its extra requirements by running setup.py, which
        # needs mypyc before this list is installed; setup.py asks for nothing else.
        return list(_MYPYC)
    return list(_setuptools.get_requires_for_build_wheel(config_settings))


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    if _compiling():
        raise RuntimeError(
            "WORKMESH_COMPILE=1 builds wheels only: an editable install keeps the sources "
            "live, and compiled modules beside them would shadow every later edit. "
            "Install with 'pip install .' (not -e), or unset WORKMESH_COMPILE."
        )
    return list(_setuptools.get_requires_for_build_editable(config_settings))
