"""``trio-floor``: the least a Trio server can do per message within Trio's public API.

Run as ``python bench/floor/trio_floor.py --port 0``; prints ``READY <port>`` once bound,
serves until SIGTERM or SIGINT.

A task per connection in a nursery, the stdlib non-blocking socket, and the shortcuts
trio_smtp's transport takes (``trio_smtp/_transport.py``, ``_link.py``): the listening
socket's ``accept()`` tried before waiting; a ``recv()`` tried at once, and
``trio.lowlevel.wait_readable`` only when it would block; replies sent with a direct
``sock.send()`` (they are small, the socket buffer is not). As in trio_smtp, at most
:data:`MAX_READS_WITHOUT_CHECKPOINT` reads in a row skip the scheduler before a
checkpoint, so a busy client cannot hold the loop. Replies come from
:class:`_answers.Answers`: no parsing, no checks. A floor, not a server.
"""

from __future__ import annotations

import argparse
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Final

import trio
from _answers import GREETING, Answers

#: trio_smtp's ``MAX_READS_WITHOUT_CHECKPOINT`` and ``COMMAND_READ_SIZE``.
MAX_READS_WITHOUT_CHECKPOINT: Final = 4
READ_SIZE: Final = 65536


def send_reply(sock: socket.socket, data: bytes) -> None:
    # A floor: replies are a few dozen octets and the kernel buffer holds far more.
    # (trio_smtp falls back to a waiting send_all; smtp-source never makes it wait.)
    sent = sock.send(data)
    if sent != len(data):
        raise RuntimeError(f"short send: {sent} of {len(data)} octets")


async def receive_when_readable(sock: socket.socket) -> bytes:
    """Wait (a checkpoint) until the socket is readable, then receive."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(READ_SIZE)
        except BlockingIOError:
            continue


async def handle(sock: socket.socket) -> None:
    """Answer one client until it says QUIT or goes away."""
    with sock:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = Answers()
        try:
            send_reply(sock, GREETING)
            reads = 0
            while True:
                if reads < MAX_READS_WITHOUT_CHECKPOINT:
                    try:
                        data = sock.recv(READ_SIZE)
                        reads += 1
                    except BlockingIOError:
                        data = await receive_when_readable(sock)
                        reads = 0
                else:
                    await trio.lowlevel.checkpoint()
                    reads = 0
                    continue
                if not data:
                    return
                replies, done = answers.feed(data)
                if replies:
                    send_reply(sock, replies)
                if done:
                    return
        except ConnectionError:
            return
        finally:
            trio.lowlevel.notify_closing(sock)


Handler = Callable[[socket.socket], Awaitable[None]]


async def serve(listener: socket.socket, handler: Handler) -> None:
    """Accept connections for ever, a task each running ``handler``."""
    async with trio.open_nursery() as nursery:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(listener)
                continue
            nursery.start_soon(handler, sock)


async def main_async(host: str, port: int, handler: Handler = handle) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    listener.setblocking(False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, listener, handler)
        print(f"READY {listener.getsockname()[1]}", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(main_async, args.host, args.port)


if __name__ == "__main__":
    main()
