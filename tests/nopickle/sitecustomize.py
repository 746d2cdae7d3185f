"""Make unpickling raise in every process that starts with this folder on its path.

The no-pickle test (tests/test_no_pickle.py) puts this folder on ``PYTHONPATH`` and
sets ``WORKMESH_FORBID_UNPICKLING=1``; Python imports ``sitecustomize`` at start-up,
before any other code, so the guard is in place in the test process and in every
child it starts (children inherit the environment).  Nothing on a cross-process path
of workmesh may unpickle, so the suites must pass unchanged.
"""

from __future__ import annotations

import os

if os.environ.get("WORKMESH_FORBID_UNPICKLING") == "1":
    import _pickle
    import pickle
    from typing import Any, NoReturn

    def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(f"unpickling is forbidden in this process (pid {os.getpid()})")

    class _Unpickler:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            _refuse()

    for _module in (pickle, _pickle):
        _module.loads = _refuse  # type: ignore[assignment]
        _module.load = _refuse  # type: ignore[assignment]
        _module.Unpickler = _Unpickler  # type: ignore[assignment,misc]
    pickle._loads = _refuse  # type: ignore[attr-defined]
    pickle._load = _refuse  # type: ignore[attr-defined]
    pickle._Unpickler = _Unpickler  # type: ignore[attr-defined,misc]
