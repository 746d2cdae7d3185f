"""The diagnostics endpoint: another process may look into a running mesh.

Opt-in (``await mesh.serve_diagnostics(path)``).  The Unix socket is made
owner-only (mode 0600) before it starts listening, so only the same user can
connect.  The exchange is one request and one reply, each a msgpack value behind a
4-byte little-endian length: the request names a path, a depth and a time budget;
the reply is the encoded inspection tree (or an error), which the client renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from typing import Any

import msgspec

from .._inspection import AnyInspectNode, inspect

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
MAX_REPLY = 256 * 1024 * 1024


class DiagRequest(msgspec.Struct, frozen=True):
    path: str = ""
    depth: int | None = None
    timeout: float = 1.0


class DiagReply(msgspec.Struct, frozen=True):
    tree: AnyInspectNode | None = None
    error: str | None = None


_request_decoder = msgspec.msgpack.Decoder(DiagRequest)
_reply_decoder = msgspec.msgpack.Decoder(DiagReply)
_encoder = msgspec.msgpack.Encoder()


def _framed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data


async def _read_framed(reader: asyncio.StreamReader, limit: int) -> bytes:
    size = int.from_bytes(await reader.readexactly(4), "little")
    if size > limit:
        raise ValueError(f"message of {size} bytes exceeds the limit of {limit}")
    return await reader.readexactly(size)


def _remove_stale_socket(path: str) -> None:
    """A socket left by an earlier run goes; anything else at ``path`` is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not replacing it")
    os.unlink(path)


class DiagnosticsServer:
    """Serves inspection of ``target`` on a Unix socket; ``aclose()`` stops it."""

    def __init__(self, target: object, path: str) -> None:
        self.target = target
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        _remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)  # before listen(): nobody else ever gets in
        except BaseException:
            sock.close()
            raise
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._answer(await _read_framed(reader, MAX_REQUEST))
            writer.write(_framed(_encoder.encode(reply)))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            log.warning("diagnostics request on %s failed: %s", self.path, exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, data: bytes) -> DiagReply:
        try:
            request = _request_decoder.decode(data)
        except msgspec.DecodeError as exc:
            return DiagReply(error=f"malformed diagnostics request: {exc}")
        tree = await inspect(
            self.target, request.path, depth=request.depth, timeout=request.timeout
        )
        return DiagReply(tree=tree)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


async def query(path: str, request: DiagRequest) -> Any:
    """Ask the mesh serving ``path``; returns the tree (raises RuntimeError on error)."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(_framed(_encoder.encode(request)))
        await writer.drain()
        reply = _reply_decoder.decode(await _read_framed(reader, MAX_REPLY))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if reply.error is not None:
        raise RuntimeError(reply.error)
    return reply.tree
