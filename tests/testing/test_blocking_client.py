"""BlockingSMTPClient: the synchronous raw client reads replies as SMTPClient does."""

from __future__ import annotations

import socket
import threading

import pytest

from trio_smtp.testing import BlockingSMTPClient, ServerClosed, ThreadedServer


def test_a_transaction_with_multi_line_replies_and_a_close() -> None:
    with ThreadedServer() as server:
        with BlockingSMTPClient.connect(server.host, server.port) as client:
            greeting = client.reply()
            assert greeting.code == 220
            ehlo = client.command("EHLO client.test")
            assert ehlo.code == 250
            assert len(ehlo.lines) > 1  # a multi-line reply is read whole
            assert all(line.startswith(b"250") for line in ehlo.lines)
            client.expect("MAIL FROM:<a@x.test>", 250)
            client.expect(b"RCPT TO:<b@y.test>", 250)
            client.expect("DATA", 354)
            client.send(b"Subject: hi\r\n\r\nbody\r\n")
            assert client.expect(".", 250)
            client.expect("QUIT", 221)
            assert client.closed()
        server.wait_for(1)
        assert server.messages[0].content.endswith(b"body\r\n")


def _serve_once(payload: bytes) -> tuple[socket.socket, threading.Thread]:
    """A listener that sends ``payload`` to its one client, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(payload)
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"250-first\r\n251 second\r\n", "different codes"),
        (b"hello there\r\n", "malformed reply line"),
        (b"250 " + b"x" * 5000, "runaway line"),
    ],
)
def test_bad_replies_fail_the_assertions(payload: bytes, message: str) -> None:
    listener, thread = _serve_once(payload)
    with BlockingSMTPClient.connect(*listener.getsockname()[:2], timeout=60) as client:
        with pytest.raises(AssertionError, match=message):
            client.reply()
    thread.join(60)


def test_an_end_of_file_mid_reply_is_server_closed_with_what_came() -> None:
    listener, thread = _serve_once(b"220 hi\r\n250-more")
    with BlockingSMTPClient.connect(*listener.getsockname()[:2], timeout=60) as client:
        assert client.reply() == (220, "hi")
        with pytest.raises(ServerClosed) as caught:
            client.reply()
        assert caught.value.unread == b"250-more"
    thread.join(60)
