"""Shows what the chaos tests measured at the end of the run."""

from __future__ import annotations

from typing import Any

from ._scale import write_figures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write_figures(terminalreporter)
