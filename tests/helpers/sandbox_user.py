"""A module a sandboxed child imports: it notes, as it is imported, what it finds.

If ``WM_SANDBOX_MARK`` names a file, importing this module also writes to it, so a
test can tell whether the module was imported at all.
"""

from __future__ import annotations

import os
import resource
import threading
from typing import Any

import msgspec

import workmesh as wm

from . import sandbox_setup

# What the setup hook had done by the time this module was imported.
SEEN_AT_IMPORT = sandbox_setup.RAN
IMPORTED_IN = os.getpid()

_mark = os.environ.get("WM_SANDBOX_MARK")
if _mark:
    with open(_mark, "a", encoding="utf-8") as marker:
        marker.write(f"imported in {os.getpid()}\n")


class ReportParams(msgspec.Struct):
    reply: wm.Sender[dict[str, Any]]


def _no_new_privs(status_path: str) -> int:
    with open(status_path, encoding="ascii") as status:
        for line in status:
            if line.startswith("NoNewPrivs:"):
                return int(line.split()[1])
    raise AssertionError(f"no NoNewPrivs line in {status_path}")


def report(message: wm.Message) -> None:
    """Tell the parent what the sandbox left in force here (a sync entry: own thread)."""
    params = message.parse(ReportParams)
    names = ("RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_AS")
    # Every thread of the process: the I/O thread and this entry's thread included.
    tasks = os.listdir("/proc/self/task")
    params.reply.send(
        {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "seen_at_import": SEEN_AT_IMPORT,
            "imported_here": os.getpid() == IMPORTED_IN,
            "setup_ran": sandbox_setup.RAN,
            "rlimits": {name: list(resource.getrlimit(getattr(resource, name))) for name in names},
            "no_new_privs": {tid: _no_new_privs(f"/proc/self/task/{tid}/status") for tid in tasks},
            "threads": threading.active_count(),
        }
    )
