"""The child side of the other transports the cross-process cases compare with (``_peers``).

* ``multiprocessing.Queue``: :func:`mp_queue_echo` and :func:`mp_queue_sink`, run by a
  'spawn' child (the parent runs threads, so it never forks);
* pyzmq: ``python -m workmesh._bench._peers_child zmq {echo|sink} {small|64k} ADDR PPID``,
  a PAIR socket that connects to the parent's ``ipc://`` address, msgspec frames;
* Pyro5: ``python -m workmesh._bench._peers_child pyro5 PATH PPID``, a daemon on the
  Unix socket PATH; it prints ``ready`` once it serves, and shuts down cleanly when
  its standard input ends (the parent closes it).

The optional packages are imported inside the functions that use them, so that
importing this module needs none of them.  Every child asks for ``SIGKILL`` when
its parent dies.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import TYPE_CHECKING, Any

import msgspec

from ._xproc_child import decoder_for, die_with_parent

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

EMPTY = b""  # a zero-length zmq frame ends a stream (or asks the sink for its count)


# ------------------------------------------------------------------- multiprocessing.Queue


def mp_queue_echo(inbox: Queue[Any], outbox: Queue[Any], parent_pid: int) -> None:
    """Put back every object taken (unpickled, pickled again) until None."""
    die_with_parent(parent_pid)
    while (obj := inbox.get()) is not None:
        outbox.put(obj)


def mp_queue_sink(inbox: Queue[Any], outbox: Queue[Any], parent_pid: int) -> None:
    """Count objects; at each None put the count back; stop at the string 'end'."""
    die_with_parent(parent_pid)
    count = 0
    while True:
        obj = inbox.get()
        if obj is None:
            outbox.put(count)
            count = 0
        elif isinstance(obj, str) and obj == "end":
            return
        else:
            count += 1


# ------------------------------------------------------------------- pyzmq


def zmq_main(mode: str, size: str, addr: str) -> None:
    """Echo (decode, re-encode) or count msgspec frames on a PAIR socket until ``b""``."""
    import zmq  # noqa: PLC0415 - optional

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.connect(addr)
    encode, decode = msgspec.msgpack.Encoder().encode, decoder_for(size).decode
    try:
        count = 0
        while True:
            frame = sock.recv()
            if mode == "echo":
                if frame == EMPTY:
                    return
                sock.send(encode(decode(frame)))
            elif frame == EMPTY:
                sock.send(encode(count))
                count = 0
            elif frame == b"end":
                return
            else:
                decode(frame)
                count += 1
    finally:
        sock.close(linger=1000)
        ctx.term()


# ------------------------------------------------------------------- Pyro5


class PyroService:
    """The Pyro5 object: a round trip, a one-way sink, and the sink's count."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def ping(self, value: Any) -> Any:
        return value

    def sink(self, value: Any) -> None:
        # Pyro5 runs each one-way call on a thread of its own: count under a lock.
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def take_count(self, expected: int, timeout: float) -> int:
        """Wait until ``expected`` one-way calls have arrived (or ``timeout`` s); reset."""
        with self._changed:
            self._changed.wait_for(lambda: self._count >= expected, timeout)
            count, self._count = self._count, 0
        return count


def pyro5_main(path: str) -> None:
    """Serve a :class:`PyroService` on the Unix socket ``path`` until stdin ends."""
    api: Any = importlib.import_module("Pyro5.api")  # optional, and without type hints

    api.oneway(PyroService.sink)  # the caller does not wait for these
    api.expose(PyroService)
    daemon = api.Daemon(unixsocket=path)
    daemon.register(PyroService(), objectId="bench")

    def stop_at_eof() -> None:
        sys.stdin.buffer.read()
        daemon.shutdown()

    threading.Thread(target=stop_at_eof, name="stdin-watch", daemon=True).start()
    print("ready", flush=True)
    try:
        daemon.requestLoop()
    finally:
        daemon.close()


def main(argv: list[str]) -> int:
    """``zmq {echo|sink} {small|64k} ADDR PPID`` or ``pyro5 PATH PPID``."""
    peer, *rest = argv
    die_with_parent(int(rest[-1]))
    if peer == "zmq":
        mode, size, addr, _ = rest
        zmq_main(mode, size, addr)
    elif peer == "pyro5":
        pyro5_main(rest[0])
    else:
        print(f"unknown peer {peer!r}: expected zmq or pyro5", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
