"""Input past every bound, and input that is not SMTP at all.

Each attack runs while ordinary senders are served; each checks the standard reply,
that the server's memory stays bounded while the attack streams in, and that the
connection is either still usable (where RFC 5321 allows) or closed cleanly.
"""

from __future__ import annotations

import collections
import random
import smtplib
import ssl
import tracemalloc

import pytest
import trio
from _abuse_harness import HANG, make_message, ordinary_traffic, running_server

from trio_smtp.testing import SMTPClient, parse_replies

MiB = 1024 * 1024


class PeakMemory:
    """Peak traced memory above the level when it started."""

    def __enter__(self) -> PeakMemory:
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        self.peak = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1] - self.base
        tracemalloc.stop()


async def _send_concurrently(
    client: SMTPClient, data: bytes, n_replies: int
) -> tuple[list[bytes], collections.Counter[bytes]]:
    """Send ``data`` while reading ``n_replies`` replies, so neither side's buffer jams.

    Returns the reply lines in order, interned (10,000 replies must not cost the
    test itself megabytes that would hide the server's memory), and their counts.
    """
    replies: list[bytes] = []
    seen: dict[bytes, bytes] = {}

    async def read() -> None:
        for _ in range(n_replies):
            reply = await client.reply()
            assert len(reply.lines) == 1, reply
            replies.append(seen.setdefault(reply.lines[0], reply.lines[0]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for i in range(0, len(data), 65536):
            await client.send(data[i : i + 65536])
    return replies, collections.Counter(replies)


async def test_giant_command_line_gets_500_5_5_6_and_the_connection_stays_usable() -> None:
    async with running_server() as srv, ordinary_traffic(srv.port) as traffic:
        client = await srv.connect()
        await client.greet()
        with PeakMemory() as mem:
            for _ in range(16):
                await client.send(b"A" * (MiB // 16))
            reply = await client.command(b"")
        assert reply.lines == [b"500 5.5.6 line too long"]
        # A client streaming a megabyte costs the server a bounded read buffer, not a copy.
        assert mem.peak < 768 * 1024, mem.peak
        assert (await client.command(b"NOOP")).code == 250
        assert (await client.command(b"MAIL FROM:<ann@example.org>")).code == 250
        assert (await client.command(b"QUIT")).code == 221
        await client.aclose()
    traffic.check(at_least=2)


@pytest.mark.parametrize("shape", ["lines", "one-line"])
async def test_giant_message_gets_552_after_the_dot_and_the_connection_stays_usable(
    shape: str,
) -> None:
    limit = MiB
    config = {"max_message_size": limit, "max_line_length": None}
    async with running_server(config) as srv, ordinary_traffic(srv.port) as traffic:
        client = await srv.connect()
        await client.greet()
        # No SIZE parameter: the server only learns the size as the body streams in.
        for line in (b"MAIL FROM:<big@example.org>", b"RCPT TO:<bob@example.net>"):
            assert (await client.command(line)).code == 250
        assert (await client.command(b"DATA")).code == 354
        if shape == "lines":
            body = (b"x" * 998 + b"\r\n") * (10 * limit // 1000 + 1)
        else:
            body = b"x" * (10 * limit) + b"\r\n"
        with PeakMemory() as mem:
            for i in range(0, len(body), 65536):
                await client.send(body[i : i + 65536])
            reply = await client.command(b".")
        assert reply.lines == [b"552 5.3.4 message size exceeds fixed maximum message size"]
        # The server keeps at most the limit of content, plus its read buffers: nothing of
        # the 9 MiB past the limit.
        assert mem.peak < 3 * limit, mem.peak
        # The same connection can still send a message that fits.
        for line in (b"MAIL FROM:<small@example.org>", b"RCPT TO:<bob@example.net>", b"DATA"):
            assert (await client.command(line)).code in (250, 354)
        assert (await client.command(b"Subject: small\r\n\r\nfits\r\n.")).code == 250
        await client.aclose()
    traffic.check(at_least=2)
    big = [m for m in srv.sink.messages if m.mail_from == "big@example.org"]
    assert big == []
    assert [m.content for m in srv.sink.messages if m.mail_from == "small@example.org"] == [
        b"Subject: small\r\n\r\nfits\r\n"
    ]


async def test_declared_size_over_the_limit_is_refused_at_mail() -> None:
    async with running_server({"max_message_size": 1000}) as srv:

        def send() -> None:
            with smtplib.SMTP(srv.host, srv.port, timeout=HANG) as smtp:
                # smtplib declares SIZE= itself when the server advertises SIZE.
                smtp.sendmail("a@example.org", ["b@example.net"], make_message("x", "y" * 5000))

        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            await trio.to_thread.run_sync(send)
        assert info.value.smtp_code == 552
        assert info.value.smtp_error.startswith(b"5.3.4")
        assert srv.sink.messages == []


async def test_ten_thousand_recipients_get_452_past_the_limit_and_the_first_ones_get_the_mail() -> (
    None
):
    n, limit = 10_000, 100
    async with running_server({"max_recipients": limit}) as srv, ordinary_traffic(srv.port) as t:
        client = await srv.connect()
        await client.greet()
        assert (await client.command(b"MAIL FROM:<ann@example.org>")).code == 250
        # RFC 2920: RCPT may be pipelined; all 10,000 go in one stream.
        rcpts = b"".join(b"RCPT TO:<user%d@example.net>\r\n" % i for i in range(n))
        with PeakMemory() as mem:
            replies, counts = await _send_concurrently(client, rcpts, n)
        assert replies[:limit] == [b"250 2.1.5 recipient OK"] * limit
        assert counts == {
            b"250 2.1.5 recipient OK": limit,
            b"452 4.5.3 too many recipients": n - limit,
        }
        # The 300 KB of commands are read 16 KiB at a time; refused recipients cost nothing.
        assert mem.peak < 1.5 * MiB, mem.peak
        assert (await client.command(b"DATA")).code == 354
        reply = await client.command(b"Subject: many\r\n\r\nhello\r\n.")
        assert reply.code == 250, reply
        await client.aclose()
    t.check(at_least=2)
    (mail,) = [m for m in srv.sink.messages if m.content.startswith(b"Subject: many")]
    assert mail.rcpt_tos == [f"user{i}@example.net" for i in range(limit)]


async def test_ten_thousand_pipelined_noops_each_get_250() -> None:
    n = 10_000
    async with running_server() as srv, ordinary_traffic(srv.port) as traffic:
        client = await srv.connect()
        await client.greet()
        with PeakMemory() as mem:
            _, counts = await _send_concurrently(client, b"NOOP\r\n" * n, n)
        assert counts == {b"250 2.0.0 OK": n}
        assert mem.peak < 1.5 * MiB, mem.peak
        assert (await client.command(b"QUIT")).code == 221
        assert await client.expect_closed() == b""
        await client.aclose()
    traffic.check(at_least=2)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_binary_garbage_gets_error_replies_then_421_and_close(seed: int) -> None:
    rng = random.Random(seed)
    garbage = rng.randbytes(256 * 1024)
    # The garbage ends the session by its errors (421 4.7.0), not by a timeout: a long
    # command_timeout, which the ordinary senders beside it never meet on a loaded machine.
    async with running_server({"command_timeout": 30.0}) as srv, ordinary_traffic(srv.port) as t:
        client = await srv.connect()
        assert (await client.reply()).code == 220
        try:
            await client.send(garbage)
        except trio.BrokenResourceError:
            pass  # the server may hang up before it has read everything: that is the point
        output = await client.expect_closed()
        await client.aclose()
        replies = parse_replies(output)
        assert replies, "the server said nothing"
        # Every reply is an error; the last is the 421 that ends the session.
        assert all(r.code >= 500 for r in replies[:-1]), [str(r) for r in replies]
        assert replies[-1].lines[0].startswith(b"421 4.7.0"), str(replies[-1])
        await srv.wait_idle()
    t.check(at_least=2)
    assert all(m.mail_from == "ann@example.org" for m in srv.sink.messages)


def _client_hello() -> bytes:
    """The first flight of a real TLS client."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="mx.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def test_tls_client_hello_on_the_plain_port_is_closed_cleanly() -> None:
    # The command timeout is longer than the wait for the close: a server that waited
    # for it would fail here.
    config = {"command_timeout": 2 * HANG}
    async with running_server(config) as srv, ordinary_traffic(srv.port) as t:
        # A raw ClientHello is recognised at once (no waiting for a line end that may
        # never come, nor for the command timeout): one 421, then the server hangs up.
        client = await srv.connect()
        await client.send(_client_hello())
        output = await client.expect_closed(within=HANG)
        await client.aclose()
        replies = parse_replies(output)
        assert [r.code for r in replies] == [220, 421]
        assert replies[1].lines[0].startswith(b"421 4.7.0"), str(replies[1])
        # A real implicit-TLS client pointed at the plain port fails fast and cleanly.
        ctx = ssl.create_default_context()

        def smtps() -> None:
            with smtplib.SMTP_SSL(srv.host, srv.port, timeout=HANG, context=ctx):
                pass

        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            await trio.to_thread.run_sync(smtps)
        await srv.wait_idle(within=HANG)
    t.check(at_least=2)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n",
        # A cross-protocol attack: a browser form posting SMTP commands as its body.
        b"POST /form HTTP/1.1\r\nHost: mx.test\r\nContent-Length: 60\r\n\r\n"
        b"EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
    ],
    ids=["GET", "POST-with-smtp-body"],
)
async def test_http_request_gets_421_and_close(request_bytes: bytes) -> None:
    async with running_server() as srv, ordinary_traffic(srv.port) as traffic:
        client = await srv.connect()
        assert (await client.reply()).code == 220
        await client.send(request_bytes)
        output = await client.expect_closed(within=HANG)
        await client.aclose()
        # One reply, nothing executed after it.
        assert output == b"421 4.7.0 this is an SMTP server, not an HTTP server\r\n"
        await srv.wait_idle()
    traffic.check(at_least=1)
    assert all(m.mail_from == "ann@example.org" for m in srv.sink.messages)
