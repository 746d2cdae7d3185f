"""The node protocol's frame types and the link limits (layer L1), as msgspec Structs.

These are the schema of what travels between nodes: tagged, frozen, array-like
Structs that :mod:`workmesh._wire` encodes, frames on a byte stream and decodes
(see ``docs/adr/0001-wire-format.md``).  They live in a module of their own so
that the codec can be compiled (the optional compiled build, ADR 0005) while
these stay Python: mypyc does not pass on a Struct's class keywords.  Whatever
builds, reads or checks frames imports them from here.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

ID = bytes


class PortRecord(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """A port that travels inside a message: where it comes from and who its peer is.

    ``peer_port`` all zero means the port arrives failed, ``peer_node`` naming the
    node blamed for it.
    """

    port: ID
    next_local_seq: int
    old_node: ID
    old_port: ID
    peer_node: ID
    peer_port: ID


class FdRecord(msgspec.Struct, frozen=True, array_like=True, tag=2):
    """A descriptor: the next one in the frame's ancillary data."""


class MessageFrame(msgspec.Struct, frozen=True, array_like=True, tag=1):
    target: ID
    seq: int
    close: bool
    # Decoded as a view into the frame, not a copy of it (one copy fewer per
    # message received: measured on a 64 KiB stream, the receiving loop's 13.5-15
    # -> 12-12.5 us per message).  Encoded from whatever bytes-like is given:
    # ``message_frame`` builds one from a payload's bytes.
    data: memoryview | None
    resources: list[PortRecord | FdRecord] = []


# A run's frame may hold this many bytes of messages (and never more than the
# link's frame limit): enough to spread a frame's fixed cost over a hundred small
# messages, small enough to stay in the caches.
RUN_BYTES: Final = 32 * 1024
RUN_ITEM = 5  # msgpack's largest bin header; each message in a run costs its own
RUN_HEAD = 32  # a run frame's array, tag, target and sequence number, at most


# A sender's run holds at most RUN_BYTES, and each message costs it at least
# RUN_ITEM: more messages than this in one run frame come from no workmesh sender.
# Checked by the decoder from the array's header, before any message is made: a
# frame of two-byte messages would otherwise make its receiver allocate ~24 times
# the frame's size at once (a 64 MiB frame, 1.5 GB).
MAX_RUN_MESSAGES: Final = RUN_BYTES // RUN_ITEM


class MessageRunFrame(msgspec.Struct, frozen=True, array_like=True, tag=8):
    """Consecutive messages to one port, as one frame: ``datas[i]`` is the message
    with sequence number ``seq + i``; none carries a resource or the close.  A
    receiver treats it exactly as that many message frames in a row (see
    :class:`~workmesh._wire.MessageRun`)."""

    target: ID
    seq: int
    # Decoded as bytes, not views into the frame: a run's messages are small, and
    # bytes objects are not tracked by the garbage collector -- a receiver that
    # lags holds many of them (see _wire.RunPayload).
    datas: Annotated[list[bytes], msgspec.Meta(max_length=MAX_RUN_MESSAGES)]


class ChangePeerFrame(msgspec.Struct, frozen=True, array_like=True, tag=3):
    target: ID
    seq: int
    node: ID
    port: ID
    delta: int


class AckChangePeerFrame(msgspec.Struct, frozen=True, array_like=True, tag=4):
    target: ID
    seq: int


class AckPortFrame(msgspec.Struct, frozen=True, array_like=True, tag=5):
    target: ID


class FailPortFrame(msgspec.Struct, frozen=True, array_like=True, tag=6):
    target: ID
    blame: ID


class PeerGoneFrame(msgspec.Struct, frozen=True, array_like=True, tag=7):
    """The answer to a frame addressed to a port that has failed here: the
    receiver's ports whose peer is ``target`` (a port of this frame's sender) are
    talking to nobody and fail.  (Frames name only their target, so this is how a
    port that was pointed at a failed one -- by a peer change that travelled over a
    link since lost -- learns of it.)"""

    target: ID


Frame = (
    MessageFrame
    | MessageRunFrame
    | ChangePeerFrame
    | AckChangePeerFrame
    | AckPortFrame
    | FailPortFrame
    | PeerGoneFrame
)


DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024
DEFAULT_MAX_FDS: Final = 64
DEFAULT_MAX_PORTS: Final = 1024
DEFAULT_MAX_PENDING_BYTES: Final = 256 * 1024 * 1024


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What one peer may make this process hold; exceeding any limit cuts that peer off.

    * ``max_frame`` -- bytes in one frame (one message with its header);
    * ``max_fds`` -- file descriptors carried by one frame;
    * ``max_ports`` -- channel endpoints carried by one message;
    * ``max_pending_bytes`` -- bytes that arrived over one connection and wait in
      channel queues, not yet received by the application.

    The limits protect a process from a peer that is broken or hostile; they are
    not flow control (sending never blocks).  A :class:`~workmesh.Mesh` hands its
    limits to every child it starts, so both ends of each link apply the same ones.
    """

    max_frame: int = DEFAULT_MAX_FRAME
    max_fds: int = DEFAULT_MAX_FDS
    max_ports: int = DEFAULT_MAX_PORTS
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(
                    f"Limits.{name} must be a positive int, got {value!r} ({type(value).__name__})"
                )
        if self.max_frame > 0xFFFFFFFF:
            raise ValueError(
                f"Limits.max_frame must fit the 32-bit frame header (at most {0xFFFFFFFF}), "
                f"got {self.max_frame}"
            )
        if self.max_fds > 0xFFFF:
            raise ValueError(
                f"Limits.max_fds must fit the 16-bit frame header (at most {0xFFFF}), "
                f"got {self.max_fds}"
            )
