"""What parent and child say to each other when a child process joins the mesh.

The *invitation* travels in an environment variable (msgpack, base64): who the
child is, which socket (an inherited descriptor) leads to its parent, the ids of
the first port pair, and a secret the child must present first on that socket.
Everything after that travels as ordinary workmesh messages on that first port:
the :class:`InitialMessage` hands the child its control channels and the entry
function's message.

The invitation also carries what the child must apply before anything else: the
mesh's :class:`~workmesh.Limits` (for every link the child makes) and the spawn's
:class:`~workmesh.Sandbox`.  A warm child gets the same invitation, through its
socket instead of its environment (see ``_zygote``).
"""

from __future__ import annotations

import base64

import msgspec

from .._channel import OneshotSender, Receiver, Sender
from .._errors import PayloadError, RemoteError
from .._fd import OwnedFd
from .._frames import Limits
from .._inspection import Deferred
from .._wire import Message
from ._sandbox import Sandbox

ENV_VAR = "WORKMESH_INVITATION"


class Invitation(msgspec.Struct, frozen=True):
    name: str
    parent_node: bytes
    child_node: bytes
    parent_port: bytes
    child_port: bytes
    secret: bytes
    fd: int
    parent_pid: int
    sys_path: list[str] = []
    limits: Limits | None = None
    sandbox: Sandbox | None = None


class Shutdown(msgspec.Struct, tag="shutdown"):
    """Parent to child: finish and exit."""


class Connect(msgspec.Struct, tag="connect"):
    """Leader to child: here is a socket to node ``node`` (None: no such node)."""

    node: bytes
    fd: OwnedFd | None = None


class InspectHost(msgspec.Struct, tag="inspect"):
    """Parent to child: answer this with a view of the whole child process."""

    deferred: Deferred


HostRequest = Shutdown | Connect | InspectHost


class ConnectTo(msgspec.Struct, tag="connect"):
    """Child to leader: I need a connection to ``node``."""

    node: bytes


LeaderRequest = ConnectTo


class Ping(msgspec.Struct, array_like=True):
    """Parent to child: are you there?  Answered by the child's I/O thread."""

    seq: int


class Pong(msgspec.Struct, array_like=True):
    """Child to parent: the answer to ping ``seq``."""

    seq: int


class StartFailure(msgspec.Struct):
    """Child to parent, instead of "ready": what it could not do, and the error."""

    stage: str  # "apply its sandbox" or "load its code"
    error: RemoteError


class InitialMessage(msgspec.Struct, kw_only=True):
    name: str
    entry: str
    payload: Message
    imports: list[str]
    requests: Receiver[HostRequest]
    leader: Sender[LeaderRequest]
    # Liveness checks: the parent pings, the child's runtime answers (see _liveness).
    pings: Receiver[Ping]
    pongs: Sender[Pong]
    # The child answers once its code is loaded: None, or why it could not start.
    ready: OneshotSender[StartFailure | None]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Invitation)


def encode_invitation(inv: Invitation) -> str:
    return base64.b64encode(_encoder.encode(inv)).decode("ascii")


def decode_invitation(text: str) -> Invitation:
    try:
        return _decoder.decode(base64.b64decode(text, validate=True))
    except (ValueError, msgspec.DecodeError) as exc:
        raise PayloadError(
            f"malformed {ENV_VAR}: {exc}", expected="base64 msgpack Invitation", got=text[:40]
        ) from exc
