"""``asyncio-floor``: the floor as an :class:`asyncio.Protocol`, for context.

Run as ``python bench/floor/asyncio_floor.py --port 0``; prints ``READY <port>`` once
bound, serves until SIGTERM or SIGINT.

What the stdlib event loop alone costs per message: its selector calls ``data_received``
with what ``recv()`` returned and ``transport.write`` sends at once when nothing is queued.
Replies come from :class:`_answers.Answers`: no parsing, no checks. A floor, not a server.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from _answers import GREETING, Answers


class FloorProtocol(asyncio.Protocol):
    """One client: answer what it sends until it says QUIT."""

    def __init__(self) -> None:
        self.answers = Answers()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        replies, done = self.answers.feed(data)
        if replies:
            self.transport.write(replies)
        if done:
            self.transport.close()


async def main_async(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorProtocol, host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main_async(args.host, args.port))


if __name__ == "__main__":
    main()
