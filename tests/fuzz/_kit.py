"""Building blocks of the fuzz tests, the long mutation loop and the atheris harness.

* **Valid inputs.**  Node frames of every type (with port and descriptor records),
  framed on a byte stream; and payloads -- msgpack with resource Exts, nested
  ``Message`` values and ``RemoteError`` values -- for several declared types,
  each with the plan of its side list (which entries are descriptors, which are
  ports).  Everything is drawn from a ``random.Random``, so the same generators
  serve hypothesis (through ``st.randoms()``, which makes the draws shrinkable)
  and a plain seeded loop.
* **Mutations.**  Byte-level (bit flips, interesting values, truncations,
  extensions, splices with a donor input, deletions, duplications) and
  structural (side lists that do not match the Exts, wrong descriptor counts).
* **Checks.**  Each runs one input through one decoder.  Only the documented
  errors may come out: ``PayloadError`` (and its subclasses) from the codec and
  the stream splitter, ``ProtocolError`` from a node fed a bad frame, receive
  errors from a channel.  Anything else, or a descriptor or port left open after
  the input has been dealt with, raises :class:`Bug` naming it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import re
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

import msgspec

import workmesh as wm
from workmesh._channel._mpsc import receiver_from_port
from workmesh._frames import (
    AckChangePeerFrame,
    AckPortFrame,
    ChangePeerFrame,
    FailPortFrame,
    FdRecord,
    MessageFrame,
    MessageRunFrame,
    PortRecord,
)
from workmesh._ids import ZERO_ID, NodeId, PortId, new_node_id, new_port_id
from workmesh._node import LocalNode, Port, ProtocolError
from workmesh._wire import (
    EXT_FD,
    EXT_MESSAGE,
    EXT_REMOTE_ERROR,
    PREFIX_LEN,
    FrameDecoder,
    Payload,
    codec_for,
    decode_frame,
    encode_frame,
    frame_prefix,
)

Ext = msgspec.msgpack.Ext
_encode = msgspec.msgpack.encode

# Resource Ext codes the channel layer registers (see workmesh._channel).
EXT_SENDER, EXT_RECEIVER, EXT_ONESHOT_SENDER, EXT_ONESHOT_RECEIVER = 2, 3, 4, 5
PORT_CODES = (EXT_SENDER, EXT_RECEIVER, EXT_ONESHOT_SENDER, EXT_ONESHOT_RECEIVER)


class Bug(AssertionError):
    """A decoder did something other than accept or reject its input cleanly."""


# ------------------------------------------------------------------ declared types


class Envelope(msgspec.Struct):
    """A typed message with one of every resource and inline kind."""

    fd: wm.OwnedFd
    tx: wm.Sender[int]
    rx: wm.Receiver[str]
    once: wm.OneshotSender[int]
    body: wm.Message
    error: wm.RemoteError | None = None
    items: list[int] = []


class Request(msgspec.Struct, array_like=True):
    rpc: wm.Rpc[int, str]


DECLARED: list[Any] = [
    object,
    Envelope,
    Request,
    list[wm.Receiver[int]],
    dict[str, wm.OwnedFd],
    wm.Message,
    tuple[int, wm.OneshotReceiver[bytes]],
]

# ------------------------------------------------------------------ plain values


def _index(n: int) -> bytes:
    return n.to_bytes(4, "little")


@dataclass
class Plan:
    """The side list a payload expects: "fd" or "port" for each entry, in order."""

    kinds: list[str] = field(default_factory=list)

    def add(self, kind: str) -> int:
        self.kinds.append(kind)
        return len(self.kinds) - 1


def remote_error_ext(rnd: random.Random) -> Ext:
    frames = [
        [rnd.choice(["ValueError", "KeyError", "x.Y"]), rnd.choice(["", "bad", "é"]), None]
        for _ in range(rnd.randint(1, 3))
    ]
    return Ext(EXT_REMOTE_ERROR, _encode(frames))


def resource_ext(rnd: random.Random, plan: Plan, code: int) -> Ext:
    kind = "fd" if code == EXT_FD else "port"
    return Ext(code, _index(plan.add(kind)))


def message_ext(rnd: random.Random, plan: Plan, depth: int) -> Ext:
    """A nested Message: its own bytes, and a slice of the side list it owns."""
    inner = Plan()
    data = _encode(any_value(rnd, inner, depth + 1))
    start = len(plan.kinds)
    plan.kinds += inner.kinds
    return Ext(EXT_MESSAGE, _encode((start, len(inner.kinds), data)))


def any_value(rnd: random.Random, plan: Plan, depth: int = 0) -> Any:
    """An untyped value, possibly holding resources, Messages and RemoteErrors."""
    pick = rnd.randrange(11 if depth < 3 else 6)
    if pick == 0:
        return rnd.choice([0, 1, -1, 2**31, -(2**63), 2**64 - 1])
    if pick == 1:
        return rnd.choice(["", "text", "ü" * 3])
    if pick == 2:
        return rnd.randbytes(rnd.randrange(8))
    if pick == 3:
        return rnd.choice([None, True, False, 1.5])
    if pick == 4:
        return resource_ext(rnd, plan, rnd.choice([EXT_FD, *PORT_CODES]))
    if pick == 5:
        return remote_error_ext(rnd)
    if pick in (6, 7):
        return [any_value(rnd, plan, depth + 1) for _ in range(rnd.randrange(4))]
    if pick in (8, 9):
        return {f"k{n}": any_value(rnd, plan, depth + 1) for n in range(rnd.randrange(4))}
    return message_ext(rnd, plan, depth)


def typed_value(rnd: random.Random, tp: Any, plan: Plan) -> Any:
    """A valid encoding (as plain values and Exts) of a value of ``tp``."""
    if tp is Envelope:
        value = {
            "fd": resource_ext(rnd, plan, EXT_FD),
            "tx": resource_ext(rnd, plan, EXT_SENDER),
            "rx": resource_ext(rnd, plan, EXT_RECEIVER),
            "once": resource_ext(rnd, plan, EXT_ONESHOT_SENDER),
            "body": any_value(rnd, plan, 1) if rnd.random() < 0.5 else message_ext(rnd, plan, 1),
        }
        if rnd.random() < 0.5:
            value["error"] = remote_error_ext(rnd)
        if rnd.random() < 0.5:
            value["items"] = [rnd.randrange(100) for _ in range(rnd.randrange(4))]
        return value
    if tp is Request:
        return [[rnd.randrange(-5, 5), resource_ext(rnd, plan, EXT_ONESHOT_SENDER)]]
    if tp == list[wm.Receiver[int]]:
        return [resource_ext(rnd, plan, EXT_RECEIVER) for _ in range(rnd.randrange(4))]
    if tp == dict[str, wm.OwnedFd]:
        return {f"f{n}": resource_ext(rnd, plan, EXT_FD) for n in range(rnd.randrange(4))}
    if tp == tuple[int, wm.OneshotReceiver[bytes]]:
        return [rnd.randrange(10), resource_ext(rnd, plan, EXT_ONESHOT_RECEIVER)]
    return any_value(rnd, plan)


def random_payload(rnd: random.Random, tp: Any = None) -> tuple[Any, bytes, Plan]:
    """A declared type, a valid payload for it, and its side-list plan."""
    if tp is None:
        tp = rnd.choice(DECLARED)
    plan = Plan()
    return tp, _encode(typed_value(rnd, tp, plan)), plan


# ------------------------------------------------------------------ frames


@dataclass
class Scene:
    """What frames aim at: a node, its peer, and the ports it has open to that peer."""

    node_id: NodeId
    peer: NodeId
    targets: list[tuple[PortId, Any]]  # port id and the type its receiver decodes


def _an_id(rnd: random.Random, scene: Scene) -> bytes:
    pool: list[bytes] = [scene.peer, scene.node_id, ZERO_ID, rnd.randbytes(16)]
    pool += [port for port, _ in scene.targets]
    if rnd.random() < 0.05:
        return rnd.randbytes(rnd.choice([0, 1, 15, 17]))  # the wrong length
    return rnd.choice(pool)


def _a_seq(rnd: random.Random) -> int:
    if rnd.random() < 0.9:
        return rnd.randint(0, 4)
    return rnd.choice([-1, 2**31, 2**63 - 1, -(2**63)])


def random_frame(rnd: random.Random, scene: Scene) -> tuple[bytes, int]:
    """One encoded frame and the number of descriptors it names."""
    kind = rnd.randrange(10)
    if kind < 6 and scene.targets:
        port, tp = rnd.choice(scene.targets)
        tp, data, plan = random_payload(rnd, tp if rnd.random() < 0.8 else None)
        records: list[PortRecord | FdRecord] = []
        for entry in plan.kinds:
            if entry == "fd":
                records.append(FdRecord())
            else:
                records.append(
                    PortRecord(
                        new_port_id(),
                        rnd.randint(1, 3),
                        _an_id(rnd, scene),
                        _an_id(rnd, scene),
                        rnd.choice([scene.peer, new_node_id()]),
                        new_port_id() if rnd.random() < 0.9 else ZERO_ID,
                    )
                )
        close = rnd.random() < 0.1
        if not records and not close and rnd.random() < 0.3:
            # A run of messages to the port: it, and a few more without resources
            # (now and then none at all, which no sender makes).
            datas = [data] if rnd.random() < 0.95 else []
            for _ in range(rnd.randrange(4) if datas else 0):
                _tp, more, more_plan = random_payload(rnd, tp)
                if not more_plan.kinds:
                    datas.append(more)
            return encode_frame(MessageRunFrame(port, _a_seq(rnd), datas)), 0
        frame = MessageFrame(port, _a_seq(rnd), close, data, records)
        return encode_frame(frame), plan.kinds.count("fd")
    target = _an_id(rnd, scene)
    if kind == 6:
        other: Any = ChangePeerFrame(
            target, _a_seq(rnd), _an_id(rnd, scene), _an_id(rnd, scene), _a_seq(rnd)
        )
    elif kind == 7:
        other = AckChangePeerFrame(target, _a_seq(rnd))
    elif kind == 8:
        other = AckPortFrame(target)
    else:
        other = FailPortFrame(target, _an_id(rnd, scene))
    if rnd.random() < 0.1:
        other = MessageFrame(target, _a_seq(rnd), True, None)
    return encode_frame(other), 0


def framed(frames: list[tuple[bytes, int]]) -> bytes:
    return b"".join(frame_prefix(len(data), nfds) + data for data, nfds in frames)


# ------------------------------------------------------------------ mutations

Mutation = tuple[int, int, int]  # (operation, position, value)
MUTATION_OPS = 10
# Ext type codes to put on an Ext: every resource kind, the raw re-send, the inline
# kinds, unknown ones and negative (msgspec-reserved) ones.
_EXT_CODES = [0, 1, 2, 3, 4, 5, 15, 16, 17, 18, 99, 127, 0xFF, 0x80]
_FIXEXT = (0xD4, 0xD5, 0xD6, 0xD7, 0xD8)  # fixext 1, 2, 4, 8, 16: the code follows
_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xC1, 0xC7, 0xD4, 0xD8, 0xDC, 0xDE, 0xC0, 0x90, 0x80]


def mutate(data: bytes, mutations: list[Mutation], donor: bytes = b"") -> bytes:
    """Apply byte-level mutations in order (positions wrap around the data)."""
    buf = bytearray(data)
    for op, pos, value in mutations:
        n = len(buf)
        at = pos % (n + 1)
        if op == 0 and n:  # flip one bit
            buf[pos % n] ^= 1 << (value % 8)
        elif op == 1 and n:  # an interesting byte
            buf[pos % n] = _INTERESTING[value % len(_INTERESTING)]
        elif op == 2:  # truncate
            del buf[at:]
        elif op == 3:  # extend with junk
            buf[at:at] = random.Random(value).randbytes(value % 9)
        elif op == 4 and donor:  # splice in a piece of another input
            start = value % len(donor)
            buf[at:at] = donor[start : start + 1 + (value >> 8) % 64]
        elif op == 5:  # delete a run
            del buf[at : at + 1 + value % 16]
        elif op == 6:  # duplicate a run
            buf[at:at] = buf[at : at + 1 + value % 32]
        elif op == 7 and n >= 4:  # a boundary 32-bit little-endian integer
            where = pos % (n - 3)
            big = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, value][value % 6] & 0xFFFFFFFF
            buf[where : where + 4] = big.to_bytes(4, "little")
        elif op == 8 and n:  # a random byte
            buf[pos % n] = value & 0xFF
        elif op == 9:  # give an Ext another type code (a bogus or mismatched kind)
            marks = [i for i in range(n - 1) if buf[i] in _FIXEXT]
            if marks:
                buf[marks[pos % len(marks)] + 1] = _EXT_CODES[value % len(_EXT_CODES)]
    return bytes(buf)


def random_mutations(rnd: random.Random, most: int = 4) -> list[Mutation]:
    return [
        (rnd.randrange(MUTATION_OPS), rnd.randrange(1 << 16), rnd.randrange(1 << 16))
        for _ in range(rnd.randint(1, most))
    ]


def mutate_plan(kinds: list[str], op: int, pos: int) -> list[str]:
    """A side list that no longer matches the payload's Exts."""
    kinds = list(kinds)
    if op == 0 and kinds:  # one entry fewer
        del kinds[pos % len(kinds)]
    elif op == 1:  # one entry more, referred to by nothing
        kinds.insert(pos % (len(kinds) + 1), "fd" if pos % 2 else "port")
    elif op == 2 and kinds:  # a port where a descriptor was, or the other way round
        at = pos % len(kinds)
        kinds[at] = "port" if kinds[at] == "fd" else "fd"
    elif op == 3:
        kinds.reverse()
    return kinds


# ------------------------------------------------------------------ resources


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def new_fd() -> wm.OwnedFd:
    read, write = os.pipe()
    os.close(write)
    return wm.OwnedFd(read)


class Resources:
    """Real descriptors and ports made for one input, so that leaks can be seen.

    Descriptors are watched through weak references: an ``OwnedFd`` nobody refers
    to any more is closed by its finalizer, as documented, and that is no leak.
    Ports have no finalizer (the node keeps them registered), so a port nobody
    closed is one.
    """

    def __init__(self, node: LocalNode, peer: NodeId) -> None:
        self.node = node
        self.peer = peer
        self.fds: list[weakref.ref[wm.OwnedFd]] = []
        self.ports: list[Port] = []

    def make(self, kinds: list[str]) -> list[Any]:
        made: list[Any] = []
        for kind in kinds:
            if kind == "fd":
                fd = new_fd()
                self.fds.append(weakref.ref(fd))
                made.append(fd)
            else:
                port = self.node.bootstrap_port(new_port_id(), (self.peer, new_port_id()))
                self.ports.append(port)
                made.append(port)
        return made

    def fds_open(self) -> list[wm.OwnedFd]:
        """Descriptors still open (call after dropping every reference of one's own).

        A full collection is slow, so it runs only when something looks open: what
        only a reference cycle still holds is closed by the collector.
        """
        if any((fd := ref()) is not None and not fd.closed for ref in self.fds):
            gc.collect()
        return [fd for ref in self.fds if (fd := ref()) is not None and not fd.closed]


def open_ports(node: LocalNode) -> list[Port]:
    """Ports the node still has registered that nobody closed (a leak, once all is done).

    An endpoint closes its port when it is collected; one held only by a reference
    cycle is collected first (only when something looks open: a collection is slow).
    """
    if any(not port.closed_local for port in list(node._ports.values())):
        gc.collect()
    return [port for port in list(node._ports.values()) if not port.closed_local]


_ENDPOINTS = (wm.Sender, wm.Receiver, wm.OneshotSender, wm.OneshotReceiver)


def release(value: Any, problems: list[str], depth: int = 0) -> None:
    """Use and close every endpoint, descriptor and Message inside a decoded value.

    Each endpoint is tried once (a send, a receive that finds nothing): an endpoint
    that decoding produced must work.  What goes wrong is added to ``problems``.
    """
    if depth > 100:
        return
    if isinstance(value, wm.OwnedFd):
        value.close()
    elif isinstance(value, _ENDPOINTS):
        try:
            if isinstance(value, wm.Sender):
                value.send(0)
            elif isinstance(value, wm.Receiver):
                with contextlib.suppress(wm.RecvError):
                    value.try_recv()
        except Exception as exc:
            problems.append(unexpected(f"using a decoded {type(value).__name__}", exc))
        value.close()
    elif isinstance(value, wm.Message):
        try:
            inner = value.parse(object)
        except wm.PayloadError:
            return
        except Exception as exc:
            problems.append(unexpected("Message.parse(object)", exc))
            return
        release(inner, problems, depth + 1)
    elif isinstance(value, Port):
        problems.append("a bare Port came out of decoding")
        value.close()
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            release(getattr(value, name), problems, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            release(key, problems, depth + 1)
            release(item, problems, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            release(item, problems, depth + 1)


# ------------------------------------------------------------------ checks
# A check that finds a bug reports it as a Bug carrying the offending exception's
# traceback as text, and drops the exception itself: its frames would otherwise keep
# the input's descriptors alive past the test (and trip the leak check too).


def unexpected(where: str, exc: BaseException) -> str:
    """What to say about an exception that should not have come out of ``where``."""
    lines = traceback.format_exception(exc)
    return f"{where} raised {exc!r}\n" + "".join(lines[-6:])


def _settle(res: Resources, node: LocalNode, problems: list[str], outcome: str) -> None:
    """Raise Bug for any problem or anything left open, closing what leaked first."""
    if problems:
        raise Bug(problems[0])
    left = res.fds_open()
    for fd in left:
        fd.close()
    if left:
        raise Bug(f"{len(left)} descriptor(s) left open ({outcome})")
    leaked = open_ports(node)
    if leaked:
        # Found; now let go of them, or leaked ports (and each one's node) pile up
        # over a long run and make every later collection slower.
        node.shutdown("the fuzz input is done")
        raise Bug(f"{len(leaked)} port(s) left open ({outcome}): {leaked}")


def check_stream(data: bytes, cuts: list[int], max_frame: int = 1 << 16) -> str:
    """Split a byte stream fed in pieces and decode each frame.

    Returns "cut" when the splitter refused the stream, else "read".

    The splitter may raise only PayloadError (FrameTooLarge), and never holds more
    than one frame's worth of bytes; each frame it yields may fail to decode only
    with PayloadError.
    """
    decoder = FrameDecoder(max_frame=max_frame, max_fds=64)
    pieces: list[bytes] = []
    last = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    problem: str | None = None
    for piece in pieces:
        try:
            frames = decoder.feed(piece)
        except wm.PayloadError:
            return "cut"  # a transport cuts the connection here
        except Exception as exc:
            problem = unexpected("FrameDecoder.feed", exc)
            break
        if decoder.pending >= PREFIX_LEN + max_frame:
            problem = f"the splitter holds {decoder.pending} bytes, above one frame's worth"
            break
        for frame, nfds in frames:
            if nfds > 64 or len(frame) > max_frame:
                problem = f"a frame past the limits came out: {len(frame)} bytes, {nfds} fds"
                break
            try:
                decode_frame(frame)
            except wm.PayloadError:
                continue
            except Exception as exc:
                problem = unexpected(f"decode_frame({frame!r})", exc)
                break
        if problem is not None:
            break
    if problem is not None:
        raise Bug(problem)
    return "read"


def check_payload(tp: Any, data: bytes, kinds: list[str], parse_as: Any = None) -> str:
    """Decode a payload with real resources; it must be accepted or rejected cleanly.

    ``parse_as``: when ``tp`` is Message, parse the decoded Message as this type too.
    Returns "accepted" or "rejected".
    """
    node, peer = LocalNode(), new_node_id()
    res = Resources(node, peer)
    resources = res.make(kinds)
    problems: list[str] = []
    outcome = "rejected"
    value: Any = None
    try:
        value = codec_for(tp).decode(Payload(data, resources))
        if parse_as is not None and isinstance(value, wm.Message):
            value = value.parse(parse_as)
    except wm.PayloadError:
        value = None
    except Exception as exc:
        problems.append(unexpected("the codec", exc))
    else:
        outcome = "accepted"
    release(value, problems)
    del value, resources
    _settle(res, node, [f"decoding as {tp!r}: {p}" for p in problems], outcome)
    return outcome


@dataclass
class NodeRig:
    """A node with one receiver per declared type, each on a port open to ``peer``."""

    node: LocalNode
    peer: NodeId
    receivers: list[wm.Receiver[Any]]
    scene: Scene


def fail_unknown_nodes(node: LocalNode, known: set[NodeId]) -> None:
    """Fail any node ``node`` hears of that is not in ``known`` (checked at that time).

    A peer can point a port at a node that does not exist (a ChangePeer, a port
    record); in a process the mesh's leader then answers "unknown node" and the
    ports routed there fail.  This plays that part.
    """

    def unknown(node_id: NodeId) -> None:
        if node_id not in known:
            node.fail_node(node_id, "no such node in the mesh")

    node.on_unknown_node = unknown


def node_rig(declared: list[Any] | None = None) -> NodeRig:
    node, peer = LocalNode(), new_node_id()
    fail_unknown_nodes(node, {peer})
    receivers = []
    targets: list[tuple[PortId, Any]] = []
    for tp in declared or DECLARED:
        port_id = new_port_id()
        port = node.bootstrap_port(port_id, (peer, new_port_id()))
        receivers.append(receiver_from_port(port, tp))
        targets.append((port_id, tp))
    return NodeRig(node, peer, receivers, Scene(node.id, peer, targets))


def drain(receivers: list[wm.Receiver[Any]], problems: list[str]) -> int:
    """Take everything queued on the receivers (decoding it); returns values taken."""
    taken = 0
    for rx in receivers:
        for _ in range(1000):
            try:
                value = rx.try_recv()
            except (wm.ChannelEmpty, wm.ChannelClosed, wm.ChannelFailed):
                break
            except Exception as exc:
                problems.append(unexpected("Receiver.try_recv", exc))
                break
            taken += 1
            release(value, problems)
    return taken


def check_node_frames(rig: NodeRig, frames: list[tuple[bytes, int]]) -> str:
    """Feed frames to a node with real descriptors, then receive what they carried.

    ``frames`` pairs each frame with how many descriptors to pass along with it
    (which may differ from what it names).  The node may refuse a frame only with
    ProtocolError (or PayloadError) and must then close the descriptors it was
    given; the receivers may fail only with receive errors.  Once the peer is gone
    (failed, as when its connection ends) no descriptor or port may be left open.
    """
    res = Resources(rig.node, rig.peer)
    problems: list[str] = []
    outcome = "accepted"
    for data, nfds in frames:
        fds = res.make(["fd"] * nfds)
        try:
            rig.node.receive(rig.peer, data, fds)
        except (ProtocolError, wm.PayloadError):
            outcome = "cut"
            if any(not fd.closed for fd in fds):
                problems.append("the node refused a frame but kept its descriptors open")
            break  # a transport cuts the connection here
        except Exception as exc:
            problems.append(unexpected("LocalNode.receive", exc))
            break
        finally:
            del fds
    if not problems:
        drain(rig.receivers, problems)
    for rx in rig.receivers:
        rx.close()
    rig.node.fail_node(rig.peer, "the fuzzing peer is gone")
    _settle(res, rig.node, problems, outcome)
    return outcome


# ------------------------------------------------------------------ the plain loop
# The long run's bulk: seeded inputs, no hypothesis (it costs more than the checks).
# Every input is reproducible from (kind, seed) alone.


def one_input(kind: str, seed: int) -> str:
    """Build input number ``seed`` of ``kind`` and check it; returns its outcome."""
    rnd = random.Random(f"{kind}:{seed}")
    if kind == "stream":
        scene = Scene(new_node_id(), new_node_id(), [(new_port_id(), object)])
        stream = framed([random_frame(rnd, scene) for _ in range(rnd.randint(1, 5))])
        data = mutate(stream, random_mutations(rnd), donor=stream)
        cuts = [rnd.randrange(1 << 16) for _ in range(rnd.randrange(4))]
        return check_stream(data, cuts, max_frame=rnd.choice([64, 1 << 16]))
    if kind == "payload":
        tp, data, plan = random_payload(rnd)
        kinds = plan.kinds
        if rnd.random() < 0.7:
            data = mutate(data, random_mutations(rnd), donor=data)
        if rnd.random() < 0.3:
            kinds = mutate_plan(kinds, rnd.randrange(4), rnd.randrange(100))
        parse_as = rnd.choice(DECLARED) if tp is wm.Message else None
        return check_payload(tp, data, kinds, parse_as=parse_as)
    if kind == "node":
        rig = node_rig()
        frames = [random_frame(rnd, rig.scene) for _ in range(rnd.randint(1, 4))]
        at = rnd.randrange(len(frames))
        data, nfds = frames[at]
        if rnd.random() < 0.7:
            data = mutate(data, random_mutations(rnd), donor=data)
        if rnd.random() < 0.2:
            nfds = max(0, nfds + rnd.choice([-1, 1, 2]))
        frames[at] = (data, nfds)
        return check_node_frames(rig, frames)
    raise ValueError(f"unknown kind of input {kind!r}")


_VOLATILE = re.compile(r"\[.*\]|0x[0-9a-f]+|[NP]-[0-9a-f]+|\d+|'[^']*'|<[^>]*>")


@dataclass
class LoopResult:
    outcomes: dict[str, int] = field(default_factory=dict)
    bugs: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # key: count, seed, text

    @property
    def inputs(self) -> int:
        return sum(self.outcomes.values())


def run_loop(kind: str, count: int, first_seed: int = 0) -> LoopResult:
    """Check ``count`` inputs; bugs are grouped by their message (ids and numbers
    blanked out), each with how often it came and the first seed that shows it."""
    result = LoopResult()
    # A check collects garbage when something looks left open; with the heap frozen,
    # a collection looks only at what the inputs made, not at everything pytest and
    # hypothesis hold (which makes it a thousand times cheaper).
    gc.freeze()
    try:
        for seed in range(first_seed, first_seed + count):
            try:
                outcome = one_input(kind, seed)
            except Bug as bug:
                text = str(bug)
                key = _VOLATILE.sub("#", text.splitlines()[0])[:160]
                seen, first, _ = result.bugs.get(key, (0, seed, text))
                result.bugs[key] = (seen + 1, first, text)
                outcome = "bug"
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
    finally:
        gc.unfreeze()
    return result
