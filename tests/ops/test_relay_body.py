"""RelaySink never lets a body end DATA early upstream (issue 10), whatever its type."""

from __future__ import annotations

import re
import socket
import threading

import pytest

from trio_smtp._mail import Mail, Recipient
from trio_smtp._session import Session
from trio_smtp.engine import Reply
from trio_smtp.sinks import RelaySink


class RecordingUpstream:
    """A bare SMTP server in a thread that records every byte it receives."""

    def __init__(self, extensions: list[str]) -> None:
        self.extensions = extensions
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(60)
            buf = bytearray()

            def line() -> bytes:
                while b"\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        raise EOFError
                    buf.extend(data)
                    self.received.extend(data)
                end = buf.index(b"\r\n") + 2
                out = bytes(buf[:end])
                del buf[:end]
                return out

            def take(n: int) -> None:
                while len(buf) < n:
                    data = conn.recv(65536)
                    if not data:
                        raise EOFError
                    buf.extend(data)
                    self.received.extend(data)
                del buf[:n]

            conn.sendall(b"220 up.test ESMTP\r\n")
            try:
                while True:
                    cmd = line()
                    verb = cmd[:4].upper()
                    if verb == b"EHLO":
                        lines = ["up.test", *self.extensions]
                        conn.sendall(
                            "".join(
                                f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n"
                                for i, text in enumerate(lines)
                            ).encode()
                        )
                    elif verb == b"DATA":
                        conn.sendall(b"354 go\r\n")
                        # A strict reader: only CRLF.CRLF ends the data.
                        while line() != b".\r\n":
                            pass
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    elif verb == b"BDAT":
                        m = re.match(rb"BDAT (\d+)( LAST)?\r\n", cmd)
                        assert m
                        take(int(m[1]))
                        conn.sendall(b"250 2.0.0 chunk\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"250 2.0.0 ok\r\n")
            except EOFError:
                return

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=60)

    def body(self) -> bytes:
        data = bytes(self.received)
        if b"\r\nBDAT " in data:
            return data[data.index(b"\r\nBDAT ") + 2 : data.lower().rindex(b"quit\r\n")]
        start = data.index(b"DATA\r\n") + len(b"DATA\r\n")
        return data[start : data.lower().rindex(b"quit\r\n")]


def _mail(content: bytes, body_type: str) -> Mail:
    session = Session(id="S1", peer=("192.0.2.1", 4000), local=("127.0.0.1", 25))
    mail = Mail(id="S1.1", session=session, mail_from="a@x.test", body_type=body_type)
    mail.content = content
    mail.recipients.append(_recipient("b@y.test"))
    return mail


def _recipient(address: str) -> Recipient:
    return Recipient(address=address)


SMUGGLING = (
    b"Subject: x\r\n\r\n"
    b"one\r.\r\nMAIL FROM:<evil@x.test>\r\n"  # <CR>.<CRLF>
    b"two\n.\nRCPT TO:<victim@y.test>\n"  # <LF>.<LF>
    b"three\r\n.\r.\n"  # a dot line hidden behind a lone CR
    b".leading dot\r\n"
    b"end"
)


@pytest.mark.parametrize("body_type", ["7BIT", "8BITMIME"])
async def test_a_text_body_goes_out_with_crlf_only_and_every_dot_line_stuffed(
    body_type: str,
) -> None:
    upstream = RecordingUpstream(["8BITMIME", "SIZE 100000"])
    try:
        await RelaySink("127.0.0.1", upstream.port, starttls="never").deliver(
            _mail(SMUGGLING, body_type)
        )
    finally:
        upstream.close()
    sent = upstream.body()
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", sent) is None, sent  # no lone CR or LF
    lines = sent.split(b"\r\n")
    assert lines[-2:] == [b".", b""]  # the only end of data is ours
    assert all(not ln.startswith(b".") or ln.startswith(b"..") for ln in lines[:-2]), lines
    assert b"..leading dot" in lines
    assert sent.count(b"\r\n.\r\n") == 1


async def test_binarymime_goes_with_bdat_octet_for_octet() -> None:
    upstream = RecordingUpstream(["CHUNKING", "BINARYMIME", "8BITMIME"])
    try:
        await RelaySink("127.0.0.1", upstream.port, starttls="never").deliver(
            _mail(SMUGGLING, "BINARYMIME")
        )
    finally:
        upstream.close()
    data = bytes(upstream.received)
    assert b"BODY=BINARYMIME" in data
    assert b"\r\nDATA\r\n" not in data
    assert upstream.body().endswith(SMUGGLING)  # unchanged, after our trace header
    assert re.search(rb"BDAT \d+ LAST\r\n", data)


async def test_binarymime_is_refused_when_the_upstream_cannot_take_it() -> None:
    upstream = RecordingUpstream(["8BITMIME", "CHUNKING"])  # no BINARYMIME
    try:
        with pytest.raises(Reply) as refused:
            await RelaySink("127.0.0.1", upstream.port, starttls="never").deliver(
                _mail(b"Subject: x\r\n\r\nclean text\r\n", "BINARYMIME")
            )
    finally:
        upstream.close()
    assert (refused.value.code, refused.value.text.split()[0]) == (554, "5.6.3")
    assert b"DATA" not in bytes(upstream.received)
