"""``trio-stream-floor``: the floor in idiomatic Trio, ``serve_tcp`` and ``SocketStream``.

Run as ``python bench/floor/trio_stream_floor.py --port 0``; prints ``READY <port>`` once
bound, serves until SIGTERM or SIGINT.

Every read is ``SocketStream.receive_some`` and every reply ``send_all``: each is a
checkpoint, so every command takes at least two trips through the scheduler (the read that
finds the command, the send of its reply) where ``trio_floor.py`` takes one. Replies come
from :class:`_answers.Answers`: no parsing, no checks. A floor, not a server.
"""

from __future__ import annotations

import argparse
import signal
from functools import partial
from typing import Final

import trio
from _answers import GREETING, Answers

READ_SIZE: Final = 65536


async def handle(stream: trio.SocketStream) -> None:
    """Answer one client until it says QUIT or goes away."""
    answers = Answers()
    async with stream:
        try:
            await stream.send_all(GREETING)
            while True:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    return
                replies, done = answers.feed(data)
                if replies:
                    await stream.send_all(replies)
                if done:
                    return
        except trio.BrokenResourceError:
            return


async def main_async(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, port, host=host))
        print(f"READY {listeners[0].socket.getsockname()[1]}", flush=True)
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
