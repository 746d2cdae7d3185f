"""Fuzzing the stream splitter (FrameDecoder) and the frame decoder (decode_frame).

Valid frames of every type, framed on a stream and fed in arbitrary pieces, come
out whole and equal; mutated streams (bit flips, interesting bytes, truncations,
junk, splices, deletions, duplications, boundary lengths, retagged Exts) are either
read or refused with PayloadError -- never another exception, never more than one
frame's worth of bytes buffered.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workmesh._ids import new_node_id, new_port_id
from workmesh._wire import FrameDecoder, decode_frame

from ..chaos._scale import figure, timeout
from ._kit import Mutation, Scene, check_stream, framed, mutate, random_frame
from ._settings import Tally, fuzz_settings, mutations, randoms

pytestmark = pytest.mark.timeout(timeout(short=300, long=3600))

cuts = st.lists(st.integers(0, 1 << 16), max_size=6)


def some_frames(rnd: random.Random) -> list[tuple[bytes, int]]:
    scene = Scene(new_node_id(), new_node_id(), [(new_port_id(), object)])
    return [random_frame(rnd, scene) for _ in range(rnd.randint(1, 5))]


def test_valid_streams_split_anywhere_give_back_the_same_frames() -> None:
    tally = Tally()

    @fuzz_settings(short=800, long=10_000)
    @given(rnd=randoms, pieces=cuts)
    def prop(rnd: random.Random, pieces: list[int]) -> None:
        frames = some_frames(rnd)
        stream = framed(frames)
        decoder = FrameDecoder()
        got: list[tuple[bytes, int]] = []
        last = 0
        for cut in [*sorted(c % (len(stream) + 1) for c in pieces), len(stream)]:
            got += decoder.feed(stream[last:cut])
            last = cut
        assert got == frames
        assert decoder.pending == 0
        for data, _nfds in got:
            decode_frame(data)  # a valid frame decodes
        tally.add("read")

    prop()
    figure(tally.line("fuzz: valid streams split anywhere"))


def test_mutated_streams_are_read_or_refused_cleanly() -> None:
    tally = Tally()

    @fuzz_settings(short=2200, long=30_000)
    @given(rnd=randoms, muts=mutations, pieces=cuts, small_limit=st.booleans())
    def prop(
        rnd: random.Random, muts: list[Mutation], pieces: list[int], small_limit: bool
    ) -> None:
        stream = framed(some_frames(rnd))
        data = mutate(stream, muts, donor=stream)
        tally.add(check_stream(data, pieces, max_frame=64 if small_limit else 1 << 16))

    prop()
    figure(tally.line("fuzz: mutated streams"))
