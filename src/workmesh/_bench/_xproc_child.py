"""The child side of the cross-process cases (``_xproc``), and the floor's framing.

Three kinds of children run code from here:

* workmesh children, started with ``Mesh.spawn(name, "<this module>:<entry>", message)``:
  an Rpc echo (:func:`rpc_echo_small`, :func:`rpc_echo_64k`), a counting sink
  (:func:`sink_small`, :func:`sink_64k`) and :func:`hello` for start-up;
* floor children, ``python -m workmesh._bench._xproc_child {echo|sink} {small|64k} FD PPID``:
  a blocking socket, a 4-byte length prefix and msgspec, one ``sendall`` per message;
* multiprocessing children (:func:`mp_echo`, :func:`mp_sink`, :func:`mp_hello`).

This module is also the entry module of the start-up case, so it imports only what
a worker needs anyway (msgspec, workmesh) plus the standard library.  Every child
that the bench starts itself asks the kernel for ``SIGKILL`` when its parent dies
(a workmesh child does that on its own).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import sys
from typing import TYPE_CHECKING, Any, Final

import msgspec

import workmesh as wm

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

PR_SET_PDEATHSIG: Final = 1
HEADER: Final = struct.Struct("<I")
END: Final = b"\0\0\0\0"  # a zero-length frame ends a stream (or asks the sink for its count)
READ_BUFFER: Final = 1 << 20


class Small(msgspec.Struct):
    """The small message of performance.md (about 51 bytes as msgpack).

    Same shape as ``_inproc.Small``; defined here so that a child importing this
    module does not also import the in-process cases.
    """

    id: int
    name: str
    values: list[float]


SMALL: Final = Small(12345, "abc", [1.0, 2.0, 3.0])
SMALL_DICT: Final = {"id": 12345, "name": "abc", "values": [1.0, 2.0, 3.0]}  # for pickle
BIG: Final = bytes(range(256)) * 256  # 64 KiB


def die_with_parent(parent_pid: int) -> None:
    """Ask for SIGKILL when the parent dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


# ------------------------------------------------------------------- the floor's framing


class Framed:
    """Length-prefixed msgspec frames on a blocking socket: one ``sendall`` per message.

    ``recv`` returns a view into a reused buffer, valid until the next ``recv``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._encoder = msgspec.msgpack.Encoder()
        self._out = bytearray()
        self._buf = bytearray(READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0

    def send(self, obj: Any) -> None:
        out = self._out
        self._encoder.encode_into(obj, out, HEADER.size)
        HEADER.pack_into(out, 0, len(out) - HEADER.size)
        self.sock.sendall(out)

    def send_end(self) -> None:
        self.sock.sendall(END)

    def recv(self) -> memoryview:
        """The next frame's body (empty for END); EOFError when the peer closed."""
        while True:
            avail = self._end - self._start
            if avail >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buf, self._start)
                if avail >= HEADER.size + size:
                    begin = self._start + HEADER.size
                    self._start = begin + size
                    return self._view[begin : self._start]
            self._fill()

    def _fill(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf):
            self._make_room()
        got = self.sock.recv_into(self._view[self._end :])
        if not got:
            raise EOFError("the peer closed the socket")
        self._end += got

    def _make_room(self) -> None:
        """Move the partial frame to the front; grow the buffer if it fills it all."""
        pending = bytes(self._view[self._start : self._end])
        if self._start == 0:  # a new buffer: views handed out earlier stay valid
            self._buf = bytearray(2 * len(self._buf))
            self._view = memoryview(self._buf)
        self._buf[: len(pending)] = pending
        self._start, self._end = 0, len(pending)


def decoder_for(size: str) -> msgspec.msgpack.Decoder[Any]:
    """The typed decoder of one message size: the Struct, or bytes."""
    return msgspec.msgpack.Decoder(Small if size == "small" else bytes)


def floor_echo(link: Framed, decoder: msgspec.msgpack.Decoder[Any]) -> None:
    """Decode every frame and send it back re-encoded, until END or EOF."""
    while True:
        try:
            frame = link.recv()
        except EOFError:
            return
        if not frame:
            return
        link.send(decoder.decode(frame))


def floor_sink(link: Framed, decoder: msgspec.msgpack.Decoder[Any]) -> None:
    """Decode and count frames; at each END send the count back; stop at EOF."""
    count = 0
    while True:
        try:
            frame = link.recv()
        except EOFError:
            return
        if frame:
            decoder.decode(frame)
            count += 1
        else:
            link.send(count)
            count = 0


def floor_main(argv: list[str]) -> int:
    """``{echo|sink} {small|64k} FD PPID``: serve the floor on the inherited socket."""
    mode, size, fd, parent_pid = argv
    die_with_parent(int(parent_pid))
    serve = floor_echo if mode == "echo" else floor_sink
    with socket.socket(fileno=int(fd)) as sock:
        serve(Framed(sock), decoder_for(size))
    return 0


# ------------------------------------------------------------------- workmesh children


class EchoSmall(msgspec.Struct):
    """One request of the small Rpc echo; the Rpc sits in a field, as in a protocol."""

    rpc: wm.Rpc[Small, Small]


class Echo64k(msgspec.Struct):
    """One request of the 64 KiB Rpc echo."""

    rpc: wm.Rpc[bytes, bytes]


class SinkSmall(msgspec.Struct):
    """A stream of small Structs (None asks for the count) and where the count goes."""

    inbox: wm.Receiver[Small | None]
    acks: wm.Sender[int]


class Sink64k(msgspec.Struct):
    """A stream of 64 KiB bytes (None asks for the count) and where the count goes."""

    inbox: wm.Receiver[bytes | None]
    acks: wm.Sender[int]


async def _rpc_echo(requests: wm.Receiver[Any]) -> None:
    async for request in requests:
        request.rpc.complete(request.rpc.input)


async def rpc_echo_small(message: wm.Message) -> None:
    """Answer every Rpc with its input: decoded as the Struct, re-encoded as the reply."""
    await _rpc_echo(message.parse(wm.Receiver[EchoSmall]))


async def rpc_echo_64k(message: wm.Message) -> None:
    """Answer every Rpc with its 64 KiB input."""
    await _rpc_echo(message.parse(wm.Receiver[Echo64k]))


async def _sink(inbox: wm.Receiver[Any], acks: wm.Sender[int]) -> None:
    count = 0
    async for item in inbox:  # the receiver decodes every message as its declared type
        if item is None:
            acks.send(count)
            count = 0
        else:
            count += 1


async def sink_small(message: wm.Message) -> None:
    """Count small Structs; at each None send the count back."""
    params = message.parse(SinkSmall)
    await _sink(params.inbox, params.acks)


async def sink_64k(message: wm.Message) -> None:
    """Count 64 KiB messages; at each None send the count back."""
    params = message.parse(Sink64k)
    await _sink(params.inbox, params.acks)


async def hello(message: wm.Message) -> None:
    """The start-up case's child: send one message back, then exit."""
    message.parse(wm.Sender[str]).send("hello")


# ------------------------------------------------------------------- multiprocessing children


def mp_echo(conn: Connection, parent_pid: int) -> None:
    """Send back every object (unpickled, pickled again) until None or EOF."""
    die_with_parent(parent_pid)
    while True:
        try:
            obj = conn.recv()
        except EOFError:
            return
        if obj is None:
            return
        conn.send(obj)


def mp_sink(conn: Connection, parent_pid: int) -> None:
    """Count objects; at each None send the count back; stop at EOF."""
    die_with_parent(parent_pid)
    count = 0
    while True:
        try:
            obj = conn.recv()
        except EOFError:
            return
        if obj is None:
            conn.send(count)
            count = 0
        else:
            count += 1


def mp_hello(conn: Connection, parent_pid: int) -> None:
    """The start-up peer's child: send one message back, then exit."""
    die_with_parent(parent_pid)
    conn.send_bytes(b"hello")
    conn.close()


if __name__ == "__main__":
    sys.exit(floor_main(sys.argv[1:]))
