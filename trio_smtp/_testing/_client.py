"""A byte-exact SMTP client on any Trio stream, for tests that need control of the wire.

``smtplib`` is the right client for testing an application; this one is for testing a
server: it sends exactly the bytes it is given (pipelined, split, malformed) and checks
that every reply line it reads is well formed (RFC 5321 §4.2).
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
import struct
from typing import Final, NamedTuple

import trio

#: One reply line, RFC 5321 §4.2: a 3-digit code, then SP (last line) or "-" (more).
REPLY_LINE: Final = re.compile(rb"^(\d{3})([ -])(.*)$", re.S)
#: Any single wait of the client; a test that hits it has found a hang, not a slow machine.
CLIENT_TIMEOUT: Final = 10.0
#: A reply line longer than this is a runaway, not a reply (RFC 5321 §4.5.3.1.5: 512).
MAX_REPLY_LINE: Final = 4096


class ServerClosed(EOFError):
    """The server closed (or reset) the connection before a whole reply came.

    Attributes:
        unread: The bytes that came before the end and were not a whole line.
    """

    def __init__(self, message: str, unread: bytes = b"") -> None:
        super().__init__(message)
        self.unread = unread


class ServerReply(NamedTuple):
    """One whole reply, comparable to a ``(code, text)`` tuple.

    ``text`` is the text of every line after the code and separator, joined by ``\\n``
    (bytes that are not UTF-8 survive as surrogate escapes, so ``lines`` is exact).
    """

    code: int
    text: str

    @property
    def lines(self) -> list[bytes]:
        """The reply's lines exactly as they came, without CRLF."""
        texts = self.text.encode("utf-8", "surrogateescape").split(b"\n")
        code = b"%03d" % self.code
        return [code + (b" " if i == len(texts) - 1 else b"-") + t for i, t in enumerate(texts)]

    def __str__(self) -> str:
        return b" | ".join(self.lines).decode("utf-8", "replace")


def parse_replies(data: bytes) -> list[ServerReply]:
    """Split raw server output into replies, asserting that every line is well formed."""
    replies: list[ServerReply] = []
    pending: list[bytes] = []
    lines = data.split(b"\r\n")
    assert lines[-1] == b"", f"output does not end with CRLF: {data[-80:]!r}"
    for line in lines[:-1]:
        assert REPLY_LINE.match(line), f"malformed reply line {line!r}"
        if pending:
            assert line[:3] == pending[0][:3], f"code changed inside a reply: {[*pending, line]!r}"
        pending.append(line)
        if line[3:4] == b" ":
            replies.append(_reply(pending))
            pending = []
    assert not pending, f"unfinished multi-line reply {pending!r}"
    return replies


def take_line(buffer: bytearray) -> bytes | None:
    """Cut one reply line (without its CRLF) off the front of ``buffer``, asserted to be
    well formed; ``None`` while no whole line is there (asserted not to be a runaway)."""
    end = buffer.find(b"\r\n")
    if end < 0:
        assert len(buffer) < MAX_REPLY_LINE, f"runaway line {bytes(buffer[:80])!r}"
        return None
    line = bytes(buffer[:end])
    del buffer[: end + 2]
    assert REPLY_LINE.match(line), f"malformed reply line {line!r}"
    return line


def one_reply(lines: list[bytes]) -> ServerReply:
    """The reply made of these lines, asserted to carry one code."""
    codes = {line[:3] for line in lines}
    assert len(codes) == 1, f"reply lines with different codes: {lines!r}"
    return _reply(lines)


def _reply(lines: list[bytes]) -> ServerReply:
    text = b"\n".join(line[4:] for line in lines).decode("utf-8", "surrogateescape")
    return ServerReply(int(lines[0][:3]), text)


def auth_plain(login: str, password: str) -> str:
    """The RFC 4616 initial response for ``AUTH PLAIN`` (base64 of NUL login NUL password)."""
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


class SMTPClient:
    """A minimal SMTP client over a Trio stream, for exact control of the bytes.

    ::

        client = await SMTPClient.connect(server.host, server.port)
        assert (await client.reply()).code == 220
        assert await client.command("EHLO client.test") == (250, ...)

    Every wait is bounded by ``timeout`` (a hang guard, not a speed check).

    Args:
        stream: Any Trio stream: a socket, a TLS stream, one end of a memory stream pair.
        timeout: The bound on each single wait, in seconds.
    """

    def __init__(self, stream: trio.abc.Stream, *, timeout: float = CLIENT_TIMEOUT) -> None:
        self.stream = stream
        self.timeout = timeout
        #: Bytes read but not yet consumed as a reply line.
        self.buffer = bytearray()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        source: str | None = None,
        timeout: float = CLIENT_TIMEOUT,  # noqa: ASYNC109 - the client's bound on every wait
    ) -> SMTPClient:
        """Open a TCP connection (from the ``source`` address, if given), with TCP_NODELAY."""
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port, local_address=source)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(stream, timeout=timeout)

    def __repr__(self) -> str:
        return f"<SMTPClient on {self.stream!r}>"

    async def send(self, data: bytes | str) -> None:
        """Send exactly these bytes (a ``str`` is UTF-8 encoded); nothing is added."""
        if isinstance(data, str):
            data = data.encode()
        with trio.fail_after(self.timeout):
            await self.stream.send_all(data)

    async def _fill(self) -> None:
        with trio.fail_after(self.timeout):
            try:
                chunk = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ServerClosed("connection reset", bytes(self.buffer)) from exc
        if not chunk:
            raise ServerClosed(
                f"end of file; unread: {bytes(self.buffer[:80])!r}", bytes(self.buffer)
            )
        self.buffer += chunk

    async def line(self) -> bytes:
        """One reply line without its CRLF, asserted to be well formed."""
        while (line := take_line(self.buffer)) is None:
            await self._fill()
        return line

    async def reply(self) -> ServerReply:
        """One whole (maybe multi-line) reply; every line must carry the same code."""
        lines = [await self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(await self.line())
        return one_reply(lines)

    async def command(self, line: bytes | str) -> ServerReply:
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode()
        await self.send(line + b"\r\n")
        return await self.reply()

    cmd = command

    async def expect(self, line: bytes | str, code: int) -> str:
        """Send ``line``, assert the reply has ``code``, return its text."""
        reply = await self.command(line)
        assert reply.code == code, f"{line!r} got {reply.code} {reply.text!r}, expected {code}"
        return reply.text

    async def greet(self, helo: bytes | str = b"EHLO client.test") -> ServerReply:
        """Read the greeting and say hello, asserting both succeed; return the EHLO reply."""
        greeting = await self.reply()
        assert greeting.code == 220, str(greeting)
        reply = await self.command(helo)
        assert reply.code == 250, str(reply)
        return reply

    async def transaction(
        self,
        body: bytes,
        *,
        sender: str = "a@x.test",
        rcpts: tuple[str, ...] = ("b@y.test",),
    ) -> ServerReply:
        """MAIL, RCPT, DATA and ``body`` (already dot-stuffed, CRLF-terminated); the last reply."""
        await self.expect(f"MAIL FROM:<{sender}>", 250)
        for rcpt in rcpts:
            await self.expect(f"RCPT TO:<{rcpt}>", 250)
        await self.expect("DATA", 354)
        await self.send(body + b".\r\n")
        return await self.reply()

    async def read_to_eof(self, within: float | None = None) -> bytes:
        """Everything until the server closes (or resets) the connection, unparsed."""
        data = bytes(self.buffer)
        self.buffer.clear()
        with trio.fail_after(self.timeout if within is None else within):
            while True:
                try:
                    chunk = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return data
                if not chunk:
                    return data
                data += chunk

    expect_closed = read_to_eof

    async def closed(self) -> bool:
        """Whether the server closes the connection with nothing more to say."""
        if self.buffer:
            return False
        try:
            await self._fill()
        except ServerClosed:
            return True
        return False

    async def starttls(
        self, context: ssl.SSLContext, server_hostname: str | None = "localhost"
    ) -> trio.SSLStream[trio.abc.Stream]:
        """Run the TLS handshake on this connection (after the server's 220 to STARTTLS)."""
        assert not self.buffer, "bytes after the 220 would be lost"
        ssl_stream = trio.SSLStream(self.stream, context, server_hostname=server_hostname)
        with trio.fail_after(self.timeout):
            await ssl_stream.do_handshake()
        self.stream = ssl_stream
        return ssl_stream

    def reset(self) -> None:
        """Abort the connection with a TCP RST instead of a FIN (SO_LINGER 0)."""
        assert isinstance(self.stream, trio.SocketStream), "only a TCP connection can be reset"
        sock = self.stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    async def aclose(self) -> None:
        """Close the connection at once (never waits for a TLS close_notify)."""
        await trio.aclose_forcefully(self.stream)
