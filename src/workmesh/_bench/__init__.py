"""``workmesh bench``: run the benchmark cases and their peers, print the ratios.

Every case is measured together with its peers in this one process, in
alternating rounds, and reported next to its target from the performance
design (targets, peers, method).  Modules:

* ``_run``      -- the command: options, running the cases, printing, the JSON file;
* ``_core``     -- the model: :class:`Case`, the registry, settings, the round runner;
* ``_groups``   -- cases that share one measurement (one side against several peers);
* ``_report``   -- the machine description, the table and the JSON document;
* ``_compare``  -- two JSON results side by side (``--compare``);
* ``_inproc``   -- in-process cases against ``asyncio.Queue`` / ``queue.Queue``;
* ``_ports``    -- the Rust criterion scenarios of mesh_channel, ported (no peer);
* ``_xproc``    -- a Mesh child against the floor and multiprocessing.Pipe;
* ``_peers``    -- the other transports: multiprocessing.Queue, pyzmq, Pyro5, Ray;
* ``_workers``  -- round trips to workers on a child host; launching a host;
* ``_restart``  -- hot restart into a fresh process: downtime, loss, state hand-off;
* ``_memory``   -- bytes per idle channel, per idle worker, per child host;
* ``_scaling``  -- how round trips and throughput grow with channels and processes.

The ``*_child`` modules hold what the bench's child processes run; they import
as little as they can, since their import time is part of what start-up cases
measure.  For the same reason this package's ``__init__`` imports nothing: a child
that imports ``workmesh._bench._workers_child`` does not load the harness.

Adding cases: write a module that calls :func:`register` at import time and list
it in ``_run._CASE_MODULES``.

Speed is never asserted by the test suite; ``--scale`` exists so a test can run
a case end to end in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._core import Case, Target, register

__all__ = ["Case", "Target", "main", "register"]


def main(argv: list[str] | None = None) -> int:
    """Run ``workmesh bench`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    from ._run import main as run_main  # noqa: PLC0415 - keep this package's import free

    return run_main(argv)


def __getattr__(name: str) -> Any:
    if name in ("Case", "Target", "register"):
        from . import _core  # noqa: PLC0415

        return getattr(_core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
