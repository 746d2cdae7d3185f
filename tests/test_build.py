"""The build under test is the one the test run asked for: pure Python or compiled.

`make test` runs the suite twice -- against the editable, pure-Python install, and
against a wheel built with WORKMESH_COMPILE=1 -- and says which through
WORKMESH_EXPECT_COMPILED.  Without this check a failed compile (or a stray
extension module in the source tree) would quietly test the other build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import workmesh._build as build
from workmesh._build import COMPILED_MODULES, build_description, compiled_modules

pytestmark = pytest.mark.timeout(60)

EXPECT = os.environ.get("WORKMESH_EXPECT_COMPILED")


@pytest.mark.skipif(
    EXPECT is None, reason="WORKMESH_EXPECT_COMPILED is not set (make test sets it)"
)
def test_the_modules_load_as_the_run_expects() -> None:
    if EXPECT == "1":
        assert compiled_modules() == COMPILED_MODULES
        assert build_description() == "compiled (mypyc)"
    else:
        assert compiled_modules() == ()
        assert build_description() == "pure Python"


def test_a_child_process_loads_the_same_build() -> None:
    """Children start from sys.executable and must import the parent's workmesh."""
    code = "from workmesh._build import compiled_modules; print(','.join(compiled_modules()))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=50
    ).stdout.strip()
    assert tuple(filter(None, out.split(","))) == compiled_modules()


def test_the_list_reads_without_workmesh_as_setup_reads_it() -> None:
    """setup.py runs the file before workmesh is importable (no site-packages here)."""
    source = Path(build.__file__).with_suffix(".py")
    code = (
        "import runpy, sys; "
        f"print(','.join(runpy.run_path({str(source)!r})['COMPILED_MODULES'])); "
        "print('workmesh' in sys.modules)"
    )
    listed, imported = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=50,
    ).stdout.split()
    assert tuple(listed.split(",")) == COMPILED_MODULES
    assert imported == "False"


def test_every_listed_module_exists() -> None:
    for name in COMPILED_MODULES:
        __import__(name)
        assert name in sys.modules, name


def test_an_sdist_carries_the_build_backend() -> None:
    """pyproject names a backend in the source tree; MANIFEST.in must ship it."""
    root = Path(__file__).resolve().parent.parent
    system = tomllib.loads((root / "pyproject.toml").read_text())["build-system"]
    (where,) = system["backend-path"]
    backend = f"{where}/{system['build-backend']}.py"
    assert (root / backend).is_file(), backend
    assert f"include {backend}" in (root / "MANIFEST.in").read_text().splitlines()
