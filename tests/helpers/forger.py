"""A child process that breaks the rules: it addresses a port it was never handed."""

from __future__ import annotations

import msgspec

import workmesh as wm
from workmesh._ids import new_port_id
from workmesh._node import local_node
from workmesh._wire import Payload


class ForgerParams(msgspec.Struct):
    said: wm.Sender[str]
    hold: wm.Receiver[str]


async def forge(message: wm.Message) -> None:
    params = message.parse(ForgerParams)
    params.said.send("hello, honestly")
    node = local_node()
    (parent,) = list(node._links)  # the only node this child talks to
    # A port of our own that claims to be peered with a made-up port of the parent.
    forged = node.bootstrap_port(new_port_id(), (parent, new_port_id()))
    forged.send(Payload(msgspec.msgpack.encode("let me in")))
    # The parent cuts us off: what we hold from it fails.
    try:
        await params.hold.recv()
    except wm.ChannelFailed:
        return
