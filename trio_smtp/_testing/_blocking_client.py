"""The blocking twin of :class:`~trio_smtp.testing.SMTPClient`, for synchronous tests.

For a test without an event loop of its own (a :class:`~trio_smtp.testing.ThreadedServer`,
a server in a subprocess) that needs the wire exactly: a transaction held open while
something else happens, a command ``smtplib`` will not send. It reads replies as the Trio
client does (every line checked against RFC 5321 §4.2, one :class:`ServerReply` per
reply) and bounds every wait by ``timeout``, a hang guard, not a speed check.
"""

from __future__ import annotations

import socket
from types import TracebackType

from ._client import CLIENT_TIMEOUT, ServerClosed, ServerReply, one_reply, take_line


class BlockingSMTPClient:
    """A minimal SMTP client over a blocking socket, for exact control of the bytes.

    ::

        with BlockingSMTPClient.connect("127.0.0.1", port) as client:
            assert client.reply().code == 220
            client.expect("EHLO client.test", 250)

    Args:
        sock: A connected socket (the client closes it).
        timeout: The bound on each single wait, in seconds.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = CLIENT_TIMEOUT) -> None:
        sock.settimeout(timeout)
        self.sock = sock
        self.timeout = timeout
        #: Bytes read but not yet consumed as a reply line.
        self.buffer = bytearray()

    @classmethod
    def connect(
        cls, host: str, port: int, *, timeout: float = CLIENT_TIMEOUT
    ) -> BlockingSMTPClient:
        """Open a TCP connection with TCP_NODELAY."""
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout=timeout)

    def __repr__(self) -> str:
        return f"<BlockingSMTPClient on {self.sock!r}>"

    def __enter__(self) -> BlockingSMTPClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, data: bytes | str) -> None:
        """Send exactly these bytes (a ``str`` is UTF-8 encoded); nothing is added."""
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ServerClosed("connection reset", bytes(self.buffer)) from exc
        if not chunk:
            raise ServerClosed(
                f"end of file; unread: {bytes(self.buffer[:80])!r}", bytes(self.buffer)
            )
        self.buffer += chunk

    def line(self) -> bytes:
        """One reply line without its CRLF, asserted to be well formed."""
        while (line := take_line(self.buffer)) is None:
            self._fill()
        return line

    def reply(self) -> ServerReply:
        """One whole (maybe multi-line) reply; every line must carry the same code."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        return one_reply(lines)

    def command(self, line: bytes | str) -> ServerReply:
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    cmd = command

    def expect(self, line: bytes | str, code: int) -> str:
        """Send ``line``, assert the reply has ``code``, return its text."""
        reply = self.command(line)
        assert reply.code == code, f"{line!r} got {reply.code} {reply.text!r}, expected {code}"
        return reply.text

    def closed(self) -> bool:
        """Whether the server closes the connection with nothing more to say."""
        if self.buffer:
            return False
        try:
            self._fill()
        except ServerClosed:
            return True
        return False

    def close(self) -> None:
        """Close the socket (without QUIT)."""
        self.sock.close()
