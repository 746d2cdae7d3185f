"""Shows what the fuzz tests measured (inputs tried) at the end of the run; lets go
of a failed test's exception and collects garbage after each test, before the leak
check looks.

When a fuzz test finds a bug, its exception's traceback holds the input's
descriptors.  pytest keeps the last failure in ``sys.last_value`` (for post-mortem
debugging) until the next one, so those descriptors would close in some later test
and fail *its* leak check.  Dropping it here keeps the failure with the test that
found it.  Likewise an ``OwnedFd`` that only a reference cycle holds is closed
when the cycle is collected (its documented behaviour): collect now, not later.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ..chaos._scale import write_figures


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    # While the test runs, what existed before it is frozen: a check that collects
    # garbage (it does when something looks left open) then looks only at what the
    # test made -- a thousand times cheaper than the whole heap of pytest and
    # hypothesis.
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            delattr(sys, name)
    gc.collect()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    write_figures(terminalreporter)
