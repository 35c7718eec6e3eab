"""The aiosmtpd 1.4.6 side of the benchmark: a discard sink on a plain asyncio server.

Run as ``python bench/aiosmtpd_server.py --port 0``; once the socket is bound it prints
``READY <port>`` on stdout and then serves until killed (SIGTERM or SIGINT).

It builds :class:`aiosmtpd.smtp.SMTP` protocols with ``loop.create_server`` rather than the
``Controller``, which would add a thread and a self-test connection to every start. Like
``bench/trio_server.py`` it passes a fixed hostname, so neither server looks up its FQDN
per connection (aiosmtpd calls ``socket.getfqdn()`` in every ``SMTP()`` when given none).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from typing import Any

from aiosmtpd.smtp import SMTP

#: Big enough for the 1 MiB scenario; it equals trio_smtp's default ``max_message_size``.
DEFAULT_MAX_MESSAGE_SIZE = 33554432
#: asyncio's default (100) drops SYNs when ``memory_bench`` opens connections in bursts.
LISTEN_BACKLOG = 1024


class DiscardHandler:
    """Accept every message and forget it, as trio_smtp's discard ``done`` hook does."""

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        return "250 OK"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--hostname", default="localhost", help="name in greeting and EHLO")
    parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE)
    parser.add_argument("--tls-cert", help="PEM certificate chain; enables STARTTLS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="accepted for symmetry with trio_server.py; aiosmtpd has no such limit",
    )
    parser.add_argument(
        "--maildir", help="store messages in this Maildir (aiosmtpd.handlers.Mailbox)"
    )
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return args


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    # A server context verifies no client certificate (CERT_NONE), which is what
    # aiosmtpd wants; STARTTLS is offered but not required, as in trio_smtp's bench.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    handler: Any = DiscardHandler()
    if args.maildir:
        from aiosmtpd.handlers import Mailbox

        handler = Mailbox(args.maildir)
    tls_context = _tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname=args.hostname,
            data_size_limit=args.max_message_size,
            tls_context=tls_context,
            require_starttls=False,
        )

    server = await loop.create_server(
        factory, host=args.host, port=args.port, backlog=LISTEN_BACKLOG
    )
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    async with server:
        await stop


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
