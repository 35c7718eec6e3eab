"""The trio_smtp side of the benchmark: a discard ``done`` hook on the public API (SPEC §4).

Run as ``python bench/trio_server.py --port 0``; once every listener is bound it prints
``READY <port>`` on stdout and then serves until killed (SIGTERM or SIGINT).

The flags and defaults mirror ``bench/aiosmtpd_server.py`` so that the two differ only in
the library under test: same host, fixed hostname, 32 MiB size limit, STARTTLS offered but
not required when a certificate is given, and a logger that keeps quiet.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import trio

from trio_smtp import Logger, Server

#: Equal to aiosmtpd's ``data_size_limit`` in ``bench/aiosmtpd_server.py``.
DEFAULT_MAX_MESSAGE_SIZE = 33554432
#: Far above any bench's connection count, so ``memory_bench`` (thousands of connections
#: from 127.0.0.1) meets no ``421`` from the per-IP and global limits; aiosmtpd has none.
DEFAULT_MAX_CONNECTIONS = 100_000


def quiet_logger() -> Logger:
    """The built-in logger at ``error``: failures show, nothing is written per message.

    Logging every connection would measure stderr, not the server. The built-in logger
    also lets the server skip building records it would drop (the Subject of each
    message), which a custom logger object cannot.
    """
    return Logger(level="error", stream=sys.stderr)


async def discard(mail: object) -> None:
    """Accept the message and forget it (the client gets ``250``)."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--hostname", default="localhost", help="name in greeting and EHLO")
    parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE)
    parser.add_argument("--tls-cert", help="PEM certificate chain; enables STARTTLS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    parser.add_argument(
        "--cprofile",
        metavar="FILE",
        help="profile with cProfile, timed by CPU time, and write pstats to FILE at exit",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="global and per-IP connection limit",
    )
    parser.add_argument(
        "--sink",
        choices=("discard", "print", "memory", "maildir"),
        default="discard",
        help="discard: a done hook that drops the message (default); print: no hook, the "
        "default print sink; memory: MemorySink (keeps every message); maildir: --maildir",
    )
    parser.add_argument("--maildir", help="the Maildir for --sink maildir")
    args = parser.parse_args(argv)
    if (args.sink == "maildir") != bool(args.maildir):
        parser.error("--sink maildir and --maildir DIR go together")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return args


def _config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "hostname": args.hostname,
        "max_message_size": args.max_message_size,
        "max_connections": args.max_connections,
        "max_connections_per_ip": args.max_connections,
    }
    if args.tls_cert:
        config["tls_cert"] = args.tls_cert
        config["tls_key"] = args.tls_key
    return config


async def _serve(args: argparse.Namespace) -> None:
    from trio_smtp.sinks import MaildirSink, MemorySink

    events: dict[str, Any] = {"done": discard} if args.sink == "discard" else {}
    deps: dict[str, Any] = {"logger": quiet_logger()}
    if args.sink == "memory":
        deps["sink"] = MemorySink()
    elif args.sink == "maildir":
        deps["sink"] = MaildirSink(args.maildir)
    server = Server({"events": events, "config": _config(args)}, deps)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.serve)
        print(f"READY {addresses[0][1]}", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    args = _parse_args(argv)
    if not args.cprofile:
        trio.run(_serve, args)
        return 0
    import cProfile
    import time

    # CPU time, not the wall clock: on a shared machine the wall clock charges whatever
    # function was running when another process took the core.
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        trio.run(_serve, args)
    finally:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
