"""Port and node ids: random, and never shared with a forked child."""

from __future__ import annotations

import os

import pytest

from workmesh._ids import ID_LEN, new_port_id

pytestmark = pytest.mark.timeout(30)


def test_ids_are_distinct_and_sized() -> None:
    ids = {new_port_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert {len(i) for i in ids} == {ID_LEN}


def test_a_forked_child_draws_fresh_ids() -> None:
    new_port_id()  # the pool now holds unused random bytes
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        try:
            os.write(w, new_port_id())
        finally:
            os._exit(0)
    os.close(w)
    try:
        theirs = os.read(r, ID_LEN)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    mine = new_port_id()
    assert len(theirs) == ID_LEN
    assert theirs != mine
