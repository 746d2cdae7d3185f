"""Build hook: the project's metadata lives in pyproject.toml; this file only adds
the optional compiled modules.

``WORKMESH_COMPILE=1 pip install .`` compiles the modules listed in
``src/workmesh/_build.py`` with mypyc (a C compiler and Python's headers are
needed); without it the build is pure Python.  See
``docs/adr/0005-optional-compiled-build.md``.
"""

from __future__ import annotations

import os
import runpy
from typing import Any

from setuptools import setup


def _compiled_extensions() -> list[Any]:
    if os.environ.get("WORKMESH_COMPILE") != "1":
        return []
    # Imported only here: a pure build has no mypy (the backend asks for it otherwise).
    from mypyc.build import mypycify  # noqa: PLC0415

    modules = runpy.run_path(os.path.join("src", "workmesh", "_build.py"))["COMPILED_MODULES"]
    paths = [os.path.join("src", *name.split(".")) + ".py" for name in modules]
    return list(mypycify(paths, opt_level="3"))


setup(ext_modules=_compiled_extensions())
