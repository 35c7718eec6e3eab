"""SMTP smuggling (CVE-2023-51764/51765/51766) against a live server.

An attacker ends a message with a fake end-of-data sequence that some server in the
chain takes for ``<CRLF>.<CRLF>`` and follows it with a second, forged transaction.
Only ``<CRLF>.<CRLF>`` ends DATA here (RFC 5321 §4.1.1.4): whatever the fake
terminator, exactly one message is delivered, the forged commands are part of its
content, and the client sees exactly one reply for it. With ``bare_lf="reject"`` the
message is refused with 550 5.6.0 and nothing is delivered.
"""

from __future__ import annotations

import pytest
import trio
from _abuse_harness import HANG, ordinary_traffic, running_server

from trio_smtp.testing import SMTPClient, SMTPTestServer

FAKE_ENDS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CR.CR": b"\r.\r",
}
SMUGGLED = (
    b"MAIL FROM:<evil@forged.test>\r\n"
    b"RCPT TO:<victim@example.net>\r\n"
    b"DATA\r\n"
    b"From: ceo@example.net\r\n"
    b"Subject: smuggled\r\n"
    b"\r\n"
    b"wire the money\r\n"
)


async def _open_transaction(srv: SMTPTestServer) -> SMTPClient:
    client = await srv.connect()
    await client.greet()
    for line in (b"MAIL FROM:<ann@example.org>", b"RCPT TO:<bob@example.net>"):
        assert (await client.command(line)).code == 250
    assert (await client.command(b"DATA")).code == 354
    return client


async def _send_body(client: SMTPClient, body: bytes, split: str) -> None:
    if split == "one-write":
        await client.send(body)
        return
    # Byte by byte: every fake terminator is seen split across reads.
    for i in range(len(body)):
        await client.send(body[i : i + 1])


@pytest.mark.parametrize("split", ["one-write", "byte-by-byte"])
@pytest.mark.parametrize("fake_end", list(FAKE_ENDS), ids=list(FAKE_ENDS))
async def test_fake_end_of_data_delivers_exactly_one_message_with_the_smuggled_text(
    fake_end: str, split: str
) -> None:
    async with running_server() as srv, ordinary_traffic(srv.port, senders=1) as traffic:
        client = await _open_transaction(srv)
        body = b"Subject: hello\r\n\r\nhi" + FAKE_ENDS[fake_end] + SMUGGLED + b".\r\n"
        await _send_body(client, body, split)
        with trio.fail_after(HANG):
            reply = await client.reply()
            assert reply.code == 250, reply
            # Nothing more was answered: no 250/354 for forged MAIL, RCPT or DATA.
            assert client.buffer == b""
            assert (await client.command(b"QUIT")).code == 221
            assert await client.expect_closed() == b""
        traffic.stop()
    # Everything but the ordinary senders' mail: exactly the one message.
    (mail,) = [m for m in srv.sink.messages if b"Subject: ordinary" not in m.content]
    assert mail.mail_from == "ann@example.org"
    assert mail.rcpt_tos == ["bob@example.net"]
    assert b"MAIL FROM:<evil@forged.test>" in mail.content
    assert b"wire the money" in mail.content
    assert not [m for m in srv.sink.messages if m.mail_from == "evil@forged.test"]
    # Bare line endings were normalized to CRLF (the default policy).
    assert mail.content.count(b"\n") == mail.content.count(b"\r\n")
    assert mail.content.count(b"\r") == mail.content.count(b"\r\n")


@pytest.mark.parametrize("fake_end", list(FAKE_ENDS), ids=list(FAKE_ENDS))
async def test_fake_end_of_data_under_bare_lf_reject_is_550_and_nothing_is_delivered(
    fake_end: str,
) -> None:
    async with running_server({"bare_lf": "reject"}) as srv:
        client = await _open_transaction(srv)
        await client.send(b"Subject: hello\r\n\r\nhi" + FAKE_ENDS[fake_end] + SMUGGLED + b".\r\n")
        with trio.fail_after(HANG):
            reply = await client.reply()
            assert reply.lines[0].startswith(b"550 5.6.0"), reply
            assert client.buffer == b""
            # The session goes on, and the forged transaction was never run: RCPT now
            # needs a MAIL first.
            assert (await client.command(b"RCPT TO:<victim@example.net>")).code == 503
            assert (await client.command(b"QUIT")).code == 221
    assert srv.sink.messages == []
