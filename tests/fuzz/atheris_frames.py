"""A coverage-guided harness (atheris) over the same checks as the fuzz tests.

Run it as a script, with libFuzzer's options::

    python tests/fuzz/atheris_frames.py -runs=1000000

``make stress`` runs it when atheris imports.  Each input picks one check:

0. its bytes as a framed stream, fed to the stream splitter in pieces;
1. its bytes as a payload, decoded as one of the declared types with a side list
   the input also chooses;
2. its bytes as one frame from a peer, fed to a node with the descriptors the
   input asks for;
3. a valid frame or payload built from a seed the input gives, then mutated by
   the rest of the input (so structure is reached without a seed corpus).

A check that finds a bug raises :class:`Bug`; atheris reports it as a crash and
writes the input out.  This file is not a test module (pytest does not collect it).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]  # no stubs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository

with atheris.instrument_imports(include=["workmesh", "msgspec"]):
    import workmesh  # noqa: F401 - instrumented here, before the kit imports it
    from tests.fuzz import _kit
    from workmesh._ids import new_node_id, new_port_id

MODES = 4


def one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, MODES - 1)
    if mode == 0:
        cuts = [fdp.ConsumeIntInRange(0, 1 << 16) for _ in range(fdp.ConsumeIntInRange(0, 3))]
        _kit.check_stream(fdp.ConsumeBytes(fdp.remaining_bytes()), cuts, max_frame=1 << 12)
    elif mode == 1:
        tp = _kit.DECLARED[fdp.ConsumeIntInRange(0, len(_kit.DECLARED) - 1)]
        kinds = ["fd" if fdp.ConsumeBool() else "port" for _ in range(fdp.ConsumeIntInRange(0, 4))]
        _kit.check_payload(tp, fdp.ConsumeBytes(fdp.remaining_bytes()), kinds)
    elif mode == 2:
        nfds = fdp.ConsumeIntInRange(0, 3)
        rig = _kit.node_rig()
        _kit.check_node_frames(rig, [(fdp.ConsumeBytes(fdp.remaining_bytes()), nfds)])
    else:
        kind = ["stream", "payload", "node"][fdp.ConsumeIntInRange(0, 2)]
        seed = fdp.ConsumeIntInRange(0, 1 << 30)
        _mutated_from_seed(kind, seed, fdp)


def _mutated_from_seed(kind: str, seed: int, fdp: atheris.FuzzedDataProvider) -> None:
    import random  # noqa: PLC0415 - only this mode needs it

    rnd = random.Random(seed)
    muts = [
        (
            fdp.ConsumeIntInRange(0, _kit.MUTATION_OPS - 1),
            fdp.ConsumeIntInRange(0, 1 << 16),
            fdp.ConsumeIntInRange(0, 1 << 16),
        )
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    ]
    if kind == "payload":
        tp, data, plan = _kit.random_payload(rnd)
        _kit.check_payload(tp, _kit.mutate(data, muts, donor=data), plan.kinds)
    elif kind == "node":
        rig = _kit.node_rig()
        frames = [_kit.random_frame(rnd, rig.scene) for _ in range(rnd.randint(1, 3))]
        frames = [(_kit.mutate(d, muts, donor=d), n) for d, n in frames]
        _kit.check_node_frames(rig, frames)
    else:
        scene = _kit.Scene(new_node_id(), new_node_id(), [(new_port_id(), object)])
        stream = _kit.framed([_kit.random_frame(rnd, scene) for _ in range(rnd.randint(1, 4))])
        _kit.check_stream(_kit.mutate(stream, muts, donor=stream), [])


def main() -> None:
    logging.disable(logging.CRITICAL)  # corrupt messages are logged; millions of them
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
