"""The end-to-end server tests' view of :mod:`trio_smtp.testing`, plus what only they need.

``running_server`` is :func:`trio_smtp.testing.serving` with this suite's defaults (host
name ``mx.test``, the test's hooks untouched); ``Client`` and ``ListLogger`` are the
public :class:`~trio_smtp.testing.SMTPClient` and
:class:`~trio_smtp.testing.RecordingLogger`. ``memory_connection`` serves one session
over an in-memory stream (:meth:`Server.serve_stream`), so that timeout tests can use
Trio's autojump clock instead of waiting for real time.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import trio
import trio.testing

from trio_smtp import Server
from trio_smtp.sinks import MemorySink
from trio_smtp.testing import CLIENT_TIMEOUT as CLIENT_TIMEOUT
from trio_smtp.testing import (
    RecordingLogger,
    SMTPClient,
    SMTPTestServer,
    build_server,
    serving,
)
from trio_smtp.testing import auth_plain as auth_plain

T = TypeVar("T")

#: The bound on a wait that only a hang reaches, however loaded the machine: never a
#: speed check.
HANG = 60.0


def ipv6_available() -> bool:
    """Whether this machine can listen on ``::1``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


#: The end-to-end server tests' names for the public helpers of trio_smtp.testing.
ListLogger = RecordingLogger
Client = SMTPClient
Live = SMTPTestServer


async def with_smtp(live: Live, use: Callable[[smtplib.SMTP], T], index: int = 0) -> T:
    """Run ``use(client)`` on a fresh :class:`smtplib.SMTP` connection, in a thread."""
    host, port = live.addresses[index]

    def session() -> T:
        with smtplib.SMTP(host, port, timeout=CLIENT_TIMEOUT) as client:
            return use(client)

    return await trio.to_thread.run_sync(session)


def _schema(
    events: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    data: Callable[[], Any] | None,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {"hostname": "mx.test", "shutdown_grace": 2.0, **(config or {})}
    schema: dict[str, Any] = {"events": dict(events or {}), "config": cfg}
    if data is not None:
        schema["data"] = data
    return schema


def make_server(
    events: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    data: Callable[[], Any] | None = None,
    deps: Mapping[str, Any] | None = None,
) -> tuple[Server, MemorySink, ListLogger]:
    """A server on port 0 named ``mx.test`` with a memory sink and a recording logger.

    The hooks run exactly as given (``faults=False``): these tests are about the
    server's own hook handling.
    """
    sink = MemorySink()
    logger = ListLogger()
    dependencies: dict[str, Any] = {"sink": sink, "logger": logger, **(deps or {})}
    server, _, _ = build_server(_schema(events, config, data), dependencies, faults=False)
    return server, sink, logger


@asynccontextmanager
async def running_server(
    events: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    data: Callable[[], Any] | None = None,
    deps: Mapping[str, Any] | None = None,
) -> AsyncIterator[Live]:
    """Serve until the block ends, then shut down gracefully and wait for ``serve``."""
    dependencies: dict[str, Any] = {"sink": MemorySink(), "logger": ListLogger(), **(deps or {})}
    async with serving(_schema(events, config, data), dependencies, faults=False) as live:
        yield live


@asynccontextmanager
async def memory_connection(
    server: Server,
    *,
    peer: tuple[str, int] = ("192.0.2.1", 40000),
    lockstep: bool = False,
    wrap: Callable[[trio.abc.Stream], trio.abc.Stream] | None = None,
) -> AsyncIterator[tuple[Client, SessionRun]]:
    """Serve one session over an in-memory stream (works with the autojump clock).

    ``wrap`` may wrap the server's end (to record what it sends). Yields the client
    and a handle telling when the session has ended.
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    stream: trio.abc.Stream = wrap(server_stream) if wrap is not None else server_stream
    run = SessionRun()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.run, partial(server.serve_stream, stream, peer=peer))
        # Under the autojump clock a client timeout must outlast every server timeout.
        yield Client(client_stream, timeout=10_000), run
        with trio.fail_after(10_000):
            await client_stream.aclose()
            await run.finished.wait()


class SessionRun:
    """Runs :meth:`Server.serve_stream` and records when it returned."""

    def __init__(self) -> None:
        self.finished = trio.Event()
        self.ended_at: float | None = None

    async def run(self, serve: Callable[[], Any]) -> None:
        try:
            await serve()
        finally:
            self.ended_at = trio.current_time()
            self.finished.set()
