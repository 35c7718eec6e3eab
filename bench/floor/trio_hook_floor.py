"""``trio-hook-floor``: ``trio-floor`` plus the Trio structure a real server cannot skip.

Run as ``python bench/floor/trio_hook_floor.py --port 0``; prints ``READY <port>`` once
bound, serves until SIGTERM or SIGINT.

Everything ``trio_floor.py`` does, and two things more, both on Trio's public API:

- an I/O deadline per connection: the connection runs in a :class:`trio.CancelScope`
  whose deadline is pushed :data:`IDLE_TIMEOUT` ahead before every wait for the client
  (each real ``wait_readable``; a read that finds bytes already there moves nothing);
- a hook per message: when a message's CRLF.CRLF arrives, an ``async`` hook (which discards
  it) is awaited under its own :class:`trio.CancelScope` with a :data:`HOOK_TIMEOUT`
  deadline, before the ``250`` goes out, as trio_smtp runs its ``done`` hook.

Still no parsing, no checks, no message object: the difference to ``trio-floor`` is the
price of the deadline and the hook scope alone.
"""

from __future__ import annotations

import argparse
import socket
from typing import Final

import trio
import trio_floor
from _answers import GREETING, Answers

#: Seconds; far beyond any bench run, only their bookkeeping is measured.
IDLE_TIMEOUT: Final = 300.0
HOOK_TIMEOUT: Final = 300.0


async def discard(body: bytes) -> None:
    """The hook: accept the message and forget it."""


async def handle(sock: socket.socket) -> None:
    """Answer one client until it says QUIT, goes away or stays idle too long."""
    with sock, trio.CancelScope() as io_scope:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = Answers()
        try:
            trio_floor.send_reply(sock, GREETING)
            reads = 0
            while True:
                if reads < trio_floor.MAX_READS_WITHOUT_CHECKPOINT:
                    try:
                        data = sock.recv(trio_floor.READ_SIZE)
                        reads += 1
                    except BlockingIOError:
                        io_scope.deadline = trio.current_time() + IDLE_TIMEOUT
                        data = await trio_floor.receive_when_readable(sock)
                        reads = 0
                else:
                    await trio.lowlevel.checkpoint()
                    reads = 0
                    continue
                if not data:
                    return
                before = answers.messages
                replies, done = answers.feed(data)
                for _ in range(answers.messages - before):
                    with trio.CancelScope(deadline=trio.current_time() + HOOK_TIMEOUT):
                        await discard(data)
                if replies:
                    trio_floor.send_reply(sock, replies)
                if done:
                    return
        except ConnectionError:
            return
        finally:
            trio.lowlevel.notify_closing(sock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(trio_floor.main_async, args.host, args.port, handle)


if __name__ == "__main__":
    main()
