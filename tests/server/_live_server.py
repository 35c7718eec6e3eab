"""Helpers for the end-to-end server tests: a running server, a raw client, a list logger.

``running_server`` serves on real loopback sockets (port 0); ``memory_connection`` runs a
single :class:`ConnectionTask` over an in-memory stream, so that timeout tests can use
Trio's autojump clock instead of waiting for real time.
"""

from __future__ import annotations

import base64
import smtplib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio
import trio.testing

from trio_smtp import Server
from trio_smtp._connection_task import ConnectionTask
from trio_smtp.sinks import MemorySink

#: Any single wait of the raw client; a test that hits it has found a hang.
CLIENT_TIMEOUT = 10.0

T = TypeVar("T")


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


class ListLogger:
    """Collects ``(level, message)`` pairs; the smtpjs logger interface."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _add(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def fatal(self, message: str) -> None:
        self._add("fatal", message)

    def error(self, message: str) -> None:
        self._add("error", message)

    def warn(self, message: str) -> None:
        self._add("warn", message)

    def info(self, message: str) -> None:
        self._add("info", message)

    def log(self, message: str) -> None:
        self._add("log", message)

    def debug(self, message: str) -> None:
        self._add("debug", message)

    def messages(self, level: str | None = None) -> list[str]:
        return [m for lv, m in self.lines if level is None or lv == level]

    def find(self, fragment: str, level: str | None = None) -> list[str]:
        return [m for m in self.messages(level) if fragment in m]


@attrs.define
class Live:
    """A server that is serving."""

    server: Server
    addresses: list[tuple[str, int]]
    sink: MemorySink
    logger: ListLogger
    nursery: trio.Nursery
    clients: list[Client] = attrs.field(factory=list)

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    async def connect(self, index: int = 0) -> Client:
        host, port = self.addresses[index]
        client = Client(await trio.open_tcp_stream(host, port))
        self.clients.append(client)
        return client

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` until it holds (the server runs in this same Trio run)."""
        with trio.fail_after(CLIENT_TIMEOUT):
            # The server has no event for "connection count changed": poll.
            while not condition():  # noqa: ASYNC110
                await trio.sleep(0.005)

    async def wait_idle(self) -> None:
        """Wait until every connection task has ended (``server.connections == 0``)."""
        await self.wait_until(lambda: self.server.connections == 0)


async def with_smtp(live: Live, use: Callable[[smtplib.SMTP], T], index: int = 0) -> T:
    """Run ``use(client)`` on a fresh :class:`smtplib.SMTP` connection, in a thread."""
    host, port = live.addresses[index]

    def session() -> T:
        with smtplib.SMTP(host, port, timeout=CLIENT_TIMEOUT) as client:
            return use(client)

    return await trio.to_thread.run_sync(session)


def make_server(
    events: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    data: Callable[[], Any] | None = None,
    deps: Mapping[str, Any] | None = None,
) -> tuple[Server, MemorySink, ListLogger]:
    """A server on port 0 named ``mx.test`` with a memory sink and a list logger."""
    sink = MemorySink()
    logger = ListLogger()
    cfg: dict[str, Any] = {"port": 0, "hostname": "mx.test", "shutdown_grace": 2.0}
    cfg.update(config or {})
    schema: dict[str, Any] = {"events": dict(events or {}), "config": cfg}
    if data is not None:
        schema["data"] = data
    dependencies: dict[str, Any] = {"sink": sink, "logger": logger}
    dependencies.update(deps or {})
    return Server(schema, dependencies), sink, logger


@asynccontextmanager
async def running_server(
    events: Mapping[str, Any] | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    data: Callable[[], Any] | None = None,
    deps: Mapping[str, Any] | None = None,
) -> AsyncIterator[Live]:
    """Serve until the block ends, then shut down gracefully and wait for ``serve``."""
    server, sink, logger = make_server(events, config=config, data=data, deps=deps)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.serve)
        live = Live(server, addresses, sink, logger, nursery)
        try:
            yield live
        finally:
            server.shutdown()
            with trio.CancelScope(shield=True):
                for client in live.clients:
                    await client.aclose()


class Client:
    """A minimal SMTP client over any Trio stream, for exact control of the bytes."""

    def __init__(self, stream: trio.abc.Stream, *, timeout: float = CLIENT_TIMEOUT) -> None:
        self.stream = stream
        self.timeout = timeout
        self._buf = bytearray()

    async def _fill(self) -> bool:
        with trio.fail_after(self.timeout):
            data = await self.stream.receive_some(65536)
        if not data:
            return False
        self._buf += data
        return True

    async def line(self) -> bytes:
        """One reply line without its CRLF."""
        while b"\r\n" not in self._buf:
            if not await self._fill():
                raise EOFError(f"connection closed; unread bytes: {bytes(self._buf)!r}")
        end = self._buf.index(b"\r\n")
        out = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return out

    async def reply(self) -> tuple[int, str]:
        """One whole (possibly multi-line) reply as ``(code, text)``, lines joined by LF."""
        lines = []
        while True:
            raw = await self.line()
            lines.append(raw[4:].decode("utf-8", "replace"))
            if raw[3:4] != b"-":
                return int(raw[:3]), "\n".join(lines)

    async def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        with trio.fail_after(self.timeout):
            await self.stream.send_all(data)

    async def cmd(self, line: str | bytes) -> tuple[int, str]:
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode()
        await self.send(line + b"\r\n")
        return await self.reply()

    async def expect(self, line: str, code: int) -> str:
        got, text = await self.cmd(line)
        assert got == code, f"{line!r} got {got} {text!r}, expected {code}"
        return text

    async def closed(self) -> bool:
        """Whether the server closes the connection with nothing more to say."""
        if self._buf:
            return False
        try:
            return not await self._fill()
        except trio.BrokenResourceError:
            return True

    async def transaction(
        self, body: bytes, *, sender: str = "a@x.test", rcpts: tuple[str, ...] = ("b@y.test",)
    ) -> tuple[int, str]:
        """MAIL, RCPT, DATA and ``body`` (already dot-stuffed, CRLF-terminated)."""
        await self.expect(f"MAIL FROM:<{sender}>", 250)
        for rcpt in rcpts:
            await self.expect(f"RCPT TO:<{rcpt}>", 250)
        await self.expect("DATA", 354)
        await self.send(body + b".\r\n")
        return await self.reply()

    async def aclose(self) -> None:
        await self.stream.aclose()


def auth_plain(login: str, password: str) -> str:
    """The RFC 4616 initial response for ``AUTH PLAIN``."""
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


@asynccontextmanager
async def memory_connection(
    server: Server,
    *,
    peer: tuple[str, int] = ("192.0.2.1", 40000),
    lockstep: bool = False,
) -> AsyncIterator[tuple[Client, ConnectionTaskRun]]:
    """Run one connection task over an in-memory stream (works with the autojump clock).

    Yields the client and a handle telling when the task has ended.
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    task = ConnectionTask(
        server._connection_settings(),
        server_stream,
        peer=peer,
        local=None,
        implicit_tls=False,
        limiter=server.address_limiter,
    )
    run = ConnectionTaskRun(task)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.run)
        # Under the autojump clock a client timeout must outlast every server timeout.
        yield Client(client_stream, timeout=10_000), run
        with trio.fail_after(10_000):
            await client_stream.aclose()
            await run.finished.wait()


class ConnectionTaskRun:
    """Runs a :class:`ConnectionTask` and records when it finished."""

    def __init__(self, task: ConnectionTask) -> None:
        self.task = task
        self.finished = trio.Event()
        self.ended_at: float | None = None

    async def run(self) -> None:
        try:
            await self.task.run()
        finally:
            self.ended_at = trio.current_time()
            self.finished.set()
