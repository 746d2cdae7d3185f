"""How hard the chaos and fuzz suites push: short by default, long with WORKMESH_STRESS=1.

Each test states both counts where it uses them, ``kills = scale(short=20,
long=1000)``, so a reader sees at once what the default run and the stress run do.
"""

from __future__ import annotations

import os
from typing import Any

STRESS: bool = os.environ.get("WORKMESH_STRESS", "") not in ("", "0")


def scale(*, short: int, long: int) -> int:
    """``long`` when WORKMESH_STRESS is set (to anything but 0), else ``short``."""
    return long if STRESS else short


def timeout(*, short: float, long: float) -> float:
    """A pytest timeout to match: the stress run needs far longer."""
    return long if STRESS else short


# Figures the suites measured (latencies, counts), shown at the end of the pytest run.
_figures: list[str] = []


def figure(line: str) -> None:
    """Note a measured figure; it is printed in the run's summary (and here, with -s)."""
    _figures.append(line)
    print(line)


def write_figures(terminalreporter: Any) -> None:
    """Print the figures noted so far under their own heading, once."""
    if not _figures:
        return
    terminalreporter.section("workmesh chaos and fuzz figures")
    for line in _figures:
        terminalreporter.write_line(line)
    _figures.clear()
