"""Fuzzing a node with frames from a peer: valid, mutated, and with the wrong
number of descriptors.

Each input goes to a fresh node whose receivers (one per declared type) sit on
ports open to the fuzzing peer; frames aim at those ports, so their payloads are
decoded when the test receives.  The node may refuse a frame only with
``ProtocolError`` (the transport then cuts the peer off) and must close the
descriptors that came with it; receiving may fail only with receive errors; and
once the peer is gone no descriptor or port may be left open.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workmesh._frames import MessageFrame, PortRecord
from workmesh._ids import new_node_id, new_port_id
from workmesh._wire import encode_frame

from ..chaos._scale import figure, timeout
from ._kit import Mutation, check_node_frames, mutate, node_rig, open_ports, random_frame
from ._settings import Tally, fuzz_settings, mutations, randoms

pytestmark = pytest.mark.timeout(timeout(short=300, long=3600))


def test_frames_from_a_peer_are_taken_or_refused_cleanly() -> None:
    tally = Tally()

    @fuzz_settings(short=2500, long=30_000)
    @given(
        rnd=randoms,
        count=st.integers(1, 4),
        muts=st.one_of(st.just([]), mutations),
        which=st.integers(0, 3),
        fd_error=st.sampled_from([0, 0, 0, -1, 1, 2]),
    )
    def prop(
        rnd: random.Random, count: int, muts: list[Mutation], which: int, fd_error: int
    ) -> None:
        rig = node_rig()
        frames = [random_frame(rnd, rig.scene) for _ in range(count)]
        data, nfds = frames[which % count]
        frames[which % count] = (mutate(data, muts, donor=data), max(0, nfds + fd_error))
        tally.add(check_node_frames(rig, frames))

    prop()
    figure(tally.line("fuzz: frames into a node"))


def test_a_frame_refused_as_a_duplicate_closes_the_ports_it_carried() -> None:
    """A message numbered below what the port expects (a replay) fails the port; the
    ports the message carried must be closed too, not left registered forever."""
    rig = node_rig([object])
    (target, _tp) = rig.scene.targets[0]
    # The carried port's peer lives on a third node, which stays up.
    record = PortRecord(new_port_id(), 1, rig.peer, new_port_id(), new_node_id(), new_port_id())
    frame = MessageFrame(target, 0, False, b"\xd6\x02\x00\x00\x00\x00", [record])
    rig.node.receive(rig.peer, encode_frame(frame), [])
    for rx in rig.receivers:
        rx.close()
    rig.node.fail_node(rig.peer, "the peer is gone")
    assert not open_ports(rig.node), "the replayed message's port was never closed"
