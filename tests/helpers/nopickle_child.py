"""A child entry that reports whether this process can unpickle."""

from __future__ import annotations

import pickle

import workmesh as wm


async def try_unpickle(message: wm.Message) -> None:
    reply = message.parse(wm.Sender[str])
    data = pickle.dumps({"a": 1})
    try:
        pickle.loads(data)
    except RuntimeError as exc:
        reply.send(f"refused: {exc}")
    else:
        reply.send("unpickled")
