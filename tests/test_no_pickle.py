"""Nothing on a cross-process path unpickles.

The cross-process suites run again in a fresh interpreter where ``pickle.loads``,
``pickle.load`` and ``Unpickler`` raise -- in the test process and in every child it
starts (see tests/nopickle/sitecustomize.py).  They must pass unchanged.  And no
module of the library imports pickle (or marshal, or shelve) at all.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUARD = ROOT / "tests" / "nopickle"

# Every suite whose messages cross a process boundary.
CROSS_PROCESS_SUITES = [
    "tests/test_conformance_xproc.py",
    "tests/test_process.py",
    "tests/test_worker.py",
    "tests/test_hot_restart.py",
    "tests/test_zygote.py",
    "tests/test_limits.py",
    "tests/test_inspect.py",
]


def _guarded_env() -> dict[str, str]:
    env = dict(os.environ)
    env["WORKMESH_FORBID_UNPICKLING"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(GUARD), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=_guarded_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


CHILD_PROBE = """
import asyncio, workmesh as wm

async def main():
    async with wm.Mesh("probe") as mesh:
        tx, rx = wm.channel(str)
        await mesh.spawn("probe", "tests.helpers.nopickle_child:try_unpickle", tx)
        print(await rx.recv())

asyncio.run(main())
"""


@pytest.mark.timeout(60)
def test_the_guard_reaches_the_parent_and_its_children() -> None:
    """Without this the suite run below would prove nothing."""
    done = _run(["-c", "import pickle; pickle.loads(pickle.dumps(1))"], timeout=30)
    assert done.returncode != 0
    assert "unpickling is forbidden" in done.stderr
    done = _run(["-c", CHILD_PROBE], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: unpickling is forbidden"), done.stdout


@pytest.mark.timeout(420)
def test_cross_process_suites_pass_where_unpickling_raises() -> None:
    suites = [s for s in CROSS_PROCESS_SUITES if (ROOT / s).exists()]
    done = _run(["-m", "pytest", "-q", "-x", "-p", "no:randomly", *suites], timeout=400)
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
    assert done.returncode == 0, tail
    assert " passed" in tail, tail


def test_no_library_module_imports_a_pickle_family_module() -> None:
    forbidden = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
    offenders = []
    for path in sorted((ROOT / "src" / "workmesh").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n in forbidden
            ]
    assert offenders == []
