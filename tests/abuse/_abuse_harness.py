"""What every attack test needs: a live server, raw attackers and ordinary clients.

Theory of operation: the server runs in the test's own Trio loop on a real socket
(port 0). Attackers are raw Trio streams in that same loop, so hundreds of them cost
a task each, not a thread. Ordinary clients are :mod:`smtplib` in worker threads,
exactly what a real sender would be, and :class:`Traffic` keeps some of them sending
for the whole attack so each test can check they all got through.

The clocks here are real: the server reads real sockets, where an autojump clock
would fire timeouts while bytes are still in flight. No test here measures how long
anything took (the suite must pass on a loaded 2-core machine): they check counts,
log lines and the order of events instead, and real time only bounds a hang.
"""

from __future__ import annotations

import contextlib
import functools
import re
import resource
import smtplib
import socket
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from email.message import EmailMessage
from typing import Any, Final

import attrs
import pytest
import trio

from trio_smtp import Server
from trio_smtp.sinks import MemorySink

#: One reply line: RFC 5321 §4.2: a 3-digit code, then SP (last line) or "-" (more lines).
REPLY_LINE: Final = re.compile(rb"^(\d{3})([ -])(.*)$")
#: How long any single wait in these tests may take before the test is declared hung.
HANG: Final = 20.0
#: Log fragments that must never appear: a bug escaped to the connection boundary.
FORBIDDEN_LOG: Final = ("internal error", "Traceback")


class RecordingLogger:
    """A logger that keeps every line (``level, message``) but debug ones, for assertions.

    Debug lines (one per refused command) are only counted: an attack of 10,000
    commands must not fill the test's own memory and hide the server's.
    """

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.debug_lines = 0

    def _keep(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def fatal(self, message: str) -> None:
        self._keep("fatal", message)

    def error(self, message: str) -> None:
        self._keep("error", message)

    def warn(self, message: str) -> None:
        self._keep("warn", message)

    def info(self, message: str) -> None:
        self._keep("info", message)

    def log(self, message: str) -> None:
        self._keep("log", message)

    def debug(self, message: str) -> None:
        self.debug_lines += 1

    def matching(self, fragment: str) -> list[str]:
        """The messages that contain ``fragment``."""
        return [m for _, m in self.lines if fragment in m]


@attrs.define
class Running:
    """A server under test and what it is connected to."""

    server: Server
    host: str
    port: int
    sink: Any
    logger: RecordingLogger
    clients: list[RawClient] = attrs.field(factory=list)

    async def client(self, *, source: str | None = None) -> RawClient:
        """A raw client connected to this server, closed when the server stops."""
        client = await RawClient.connect(self.port, source=source)
        self.clients.append(client)
        return client

    async def wait_idle(self, within: float = HANG) -> None:
        """Wait until the server holds no connection at all."""
        await settle(lambda: self.server.connections == 0, within)


@contextlib.asynccontextmanager
async def running_server(
    config: Mapping[str, Any] | None = None,
    *,
    events: Mapping[str, Any] | None = None,
    sink: Any = None,
    data: Callable[[], Any] | None = None,
    internal_errors: bool = False,
) -> AsyncIterator[Running]:
    """Serve on 127.0.0.1, port 0, for the body of the ``async with``.

    Limits default to values no attack here reaches by accident (many connections
    from one address), so each test sets exactly the limit it attacks. On exit the
    server is shut down and its log is checked for escaped internal errors (unless
    ``internal_errors`` says the test provokes them on purpose).
    """
    logger = RecordingLogger()
    cfg: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "hostname": "mx.test",
        "shutdown_grace": 1.0,
        "max_connections": 5000,
        "max_connections_per_ip": 5000,
        **(config or {}),
    }
    server = Server(
        {"events": dict(events or {}), "config": cfg, "data": data},
        {"sink": sink if sink is not None else MemorySink(), "logger": logger},
    )
    async with trio.open_nursery() as nursery:
        (host, port), *_ = await nursery.start(server.serve)
        running = Running(server, host, port, server.sink, logger)
        try:
            yield running
        finally:
            for client in running.clients:
                await trio.aclose_forcefully(client.stream)
            server.shutdown()
    for fragment in FORBIDDEN_LOG if not internal_errors else ():
        assert not logger.matching(fragment), logger.matching(fragment)


# ---------------------------------------------------------------------- raw attackers


class Closed(Exception):
    """The server closed the connection (or reset it) before a whole reply came."""


@attrs.define
class Reply:
    """One whole reply as read off the wire."""

    code: int
    lines: list[bytes]

    @property
    def text(self) -> bytes:
        """Every line's text after the code and separator, joined by LF."""
        return b"\n".join(line[4:] for line in self.lines)

    def __str__(self) -> str:
        return b" | ".join(self.lines).decode("utf-8", "replace")


class RawClient:
    """A byte-level client on a real socket, for speaking anything but good SMTP."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def connect(cls, port: int, *, source: str | None = None) -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        try:
            chunk = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise Closed("connection reset") from exc
        if not chunk:
            raise Closed(f"end of file; unread: {bytes(self.buf[:80])!r}")
        self.buf += chunk

    async def line(self) -> bytes:
        """One line without its CRLF; asserts it is a well-formed reply line."""
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                assert REPLY_LINE.match(line), f"malformed reply line {line!r}"
                return line
            assert len(self.buf) < 4096, f"runaway reply line {bytes(self.buf[:80])!r}"
            await self._fill()

    async def reply(self) -> Reply:
        """One whole (maybe multi-line) reply; every line must carry the same code."""
        lines = [await self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(await self.line())
        codes = {line[:3] for line in lines}
        assert len(codes) == 1, f"reply lines with different codes: {lines!r}"
        return Reply(int(lines[0][:3]), lines)

    async def command(self, line: bytes) -> Reply:
        """Send one command line and read its reply."""
        await self.send(line + b"\r\n")
        return await self.reply()

    async def expect_closed(self, within: float = HANG) -> bytes:
        """Read until the server closes; return what came before the end (no reply parsing)."""
        data = bytes(self.buf)
        self.buf.clear()
        with trio.fail_after(within):
            while True:
                try:
                    chunk = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return data
                if not chunk:
                    return data
                data += chunk

    async def greet(self, helo: bytes = b"EHLO attacker.test") -> None:
        """Read the greeting and say EHLO, asserting both succeed."""
        greeting = await self.reply()
        assert greeting.code == 220, greeting
        reply = await self.command(helo)
        assert reply.code == 250, reply

    async def aclose(self) -> None:
        await self.stream.aclose()

    def reset(self) -> None:
        """Abort the connection with a TCP RST instead of a FIN (SO_LINGER 0)."""
        sock = self.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def parse_replies(data: bytes) -> list[Reply]:
    """Split raw server output into replies, asserting every line is well formed."""
    replies: list[Reply] = []
    pending: list[bytes] = []
    lines = data.split(b"\r\n")
    assert lines[-1] == b"", f"output does not end with CRLF: {data[-80:]!r}"
    for line in lines[:-1]:
        assert REPLY_LINE.match(line), f"malformed reply line {line!r}"
        if pending:
            assert line[:3] == pending[0][:3], f"code changed inside a reply: {[*pending, line]!r}"
        pending.append(line)
        if line[3:4] == b" ":
            replies.append(Reply(int(line[:3]), pending))
            pending = []
    assert not pending, f"unfinished multi-line reply {pending!r}"
    return replies


# ---------------------------------------------------------------------- ordinary clients


def make_message(subject: str, body: str = "Hello.\n") -> bytes:
    """A small well-formed message."""
    msg = EmailMessage()
    msg["From"] = "ann@example.org"
    msg["To"] = "bob@example.net"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg.as_bytes()


def send_mail(
    port: int,
    *,
    subject: str = "ordinary",
    source: str | None = None,
    rcpts: tuple[str, ...] = ("bob@example.net",),
    timeout: float = HANG,
) -> None:
    """Send one message with smtplib (blocking), asserting every recipient was accepted."""
    source_address = (source, 0) if source is not None else None
    with smtplib.SMTP(
        "127.0.0.1",
        port,
        local_hostname="ordinary.test",
        timeout=timeout,
        source_address=source_address,
    ) as smtp:
        refused = smtp.sendmail("ann@example.org", list(rcpts), make_message(subject))
        assert refused == {}, refused


@attrs.define
class Traffic:
    """Ordinary senders running during an attack, and how they fared.

    :meth:`stop` only takes effect once ``at_least`` sessions have completed, so the
    count a test checks never depends on how fast the machine is.
    """

    port: int
    at_least: int = 1
    sent: int = 0
    failures: list[BaseException] = attrs.field(factory=list)
    _stop: trio.Event = attrs.field(factory=trio.Event)
    _progress: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, *, senders: int = 2, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``senders`` smtplib clients sending until :meth:`stop` (and ``at_least``)."""

        async def sender(n: int) -> None:
            i = 0
            while not (self._stop.is_set() and self.sent >= self.at_least):
                i += 1
                try:
                    await trio.to_thread.run_sync(
                        functools.partial(send_mail, self.port, subject=f"ordinary {n}.{i}")
                    )
                except (OSError, smtplib.SMTPException) as exc:
                    self.failures.append(exc)
                    return
                self.sent += 1
                self._progress.set()
                self._progress = trio.Event()
                await trio.sleep(0.02)

        async with trio.open_nursery() as nursery:
            for n in range(senders):
                nursery.start_soon(sender, n)
            task_status.started()

    async def wait_sent(self, n: int) -> None:
        """Wait until ``n`` ordinary sessions have completed (or one has failed)."""
        with trio.fail_after(HANG):
            while self.sent < n and not self.failures:
                await self._progress.wait()
        assert not self.failures, f"ordinary clients failed: {self.failures!r}"

    def stop(self) -> None:
        self._stop.set()

    def check(self, *, at_least: int) -> None:
        """Assert every ordinary session got through, and enough of them."""
        assert not self.failures, f"ordinary clients failed: {self.failures!r}"
        assert self.sent >= at_least, f"only {self.sent} messages sent"


@contextlib.asynccontextmanager
async def ordinary_traffic(
    port: int, *, senders: int = 2, at_least: int = 2
) -> AsyncIterator[Traffic]:
    """Run :class:`Traffic` for the body of the ``async with`` (and ``at_least`` sessions)."""
    traffic = Traffic(port, at_least=at_least)
    # Each smtplib session has its own HANG timeout, so the exit cannot hang.
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: traffic.run(senders=senders, task_status=task_status)
        )
        try:
            yield traffic
        finally:
            traffic.stop()


# ---------------------------------------------------------------------- resources


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; skip if that is still too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        pytest.skip(f"needs {needed} file descriptors, RLIMIT_NOFILE allows {soft}")


def tasks_living() -> int:
    """How many Trio tasks exist in this run."""
    return trio.lowlevel.current_statistics().tasks_living


async def settle(predicate: Callable[[], bool], within: float = HANG) -> None:
    """Wait (polling) until ``predicate()`` holds.

    Polling, because what is awaited (a connection count, a task count, a list that
    worker threads append to) has no event to wait on.
    """
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)
