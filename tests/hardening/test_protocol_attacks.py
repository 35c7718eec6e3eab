"""Attacks on the protocol engine over real sockets: BDAT smuggling, bare CR/LF in BDAT,
Unicode look-alike verbs, addresses without brackets, control characters in xtext and
over-long reply lines (issue 10). Each test failed on the engine before its fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
import trio.lowlevel

from trio_smtp import Reply
from trio_smtp.testing import SMTPClient as Client
from trio_smtp.testing import SMTPTestServer as Live
from trio_smtp.testing import serving


def running_server(
    events: Mapping[str, Any] | None = None, *, config: Mapping[str, Any] | None = None
) -> AbstractAsyncContextManager[Live]:
    """A server named ``mx.test`` serving in this run, its hooks untouched."""
    schema = {"events": dict(events or {}), "config": {"hostname": "mx.test", **(config or {})}}
    return serving(schema, faults=False)


EHLO = "EHLO attacker.test"
SMUGGLED = b"RCPT TO:<victim@x.test>\r\nBDAT 7 LAST\r\nSMUG!\r\n"


async def _in_transaction(live: Live) -> Client:
    client = await live.connect()
    await client.reply()
    await client.expect(EHLO, 250)
    await client.expect("MAIL FROM:<a@x.test>", 250)
    await client.expect("RCPT TO:<b@y.test>", 250)
    return client


async def _no_victim(live: Live) -> None:
    await live.wait_idle()
    for mail in live.sink.messages:
        assert "victim@x.test" not in mail.rcpt_tos
        assert b"SMUG!" not in mail.content or mail.rcpt_tos == ["b@y.test"]


async def test_bdat_size_with_leading_zeros_never_runs_the_chunk_as_commands() -> None:
    chunk = SMUGGLED + b"X" * (48 - len(SMUGGLED) - 2) + b"\r\n"
    assert len(chunk) == 48
    async with running_server() as live:
        client = await _in_transaction(live)
        await client.send(b"BDAT 000000000000000000048 LAST\r\n" + chunk)
        code, _ = await client.reply()
        assert code == 250
        assert await client.cmd("QUIT") == (221, "2.0.0 mx.test closing connection")
        await _no_victim(live)
        [mail] = live.sink.messages
        assert mail.rcpt_tos == ["b@y.test"]
        assert mail.content == chunk


@pytest.mark.parametrize(
    "line",
    [
        b"BDAT 48  LAST",
        b"BDAT  48 LAST",
        b"BDAT\t48 LAST",
        b"BDAT 48\tLAST",
        b"BDAT +48 LAST",
        b"BDAT 48 LAST now",
        b"BDAT 48 LAST\r",
        "BDAT \u0664\u0668 LAST".encode(),
        b"BDAT " + b"0" * 40 + b"48 LAST",
    ],
)
async def test_bdat_size_that_cannot_be_trusted_closes_the_connection(line: bytes) -> None:
    chunk = SMUGGLED.ljust(48, b"X")
    async with running_server() as live:
        client = await _in_transaction(live)
        await client.send(line + b"\r\n" + chunk)
        code, text = await client.reply()
        assert (code, text) == (
            421,
            "4.5.4 BDAT needs exactly: BDAT chunk-size [LAST]; closing connection",
        )
        assert await client.closed()
        await _no_victim(live)
        assert live.sink.messages == []


REJECT = {"bare_lf": "reject"}


@pytest.mark.parametrize(
    "body",
    [
        b"Subject: x\r\n\r\nbare LF\nhere\r\n",
        b"Subject: x\r\n\r\nbare CR\rhere\r\n",
        b"Subject: x\r\n\r\nend\r\n\r.\r\nMAIL FROM:<evil@x>\r\n",
    ],
)
async def test_bdat_body_with_bare_lf_or_cr_is_refused_under_reject(body: bytes) -> None:
    async with running_server(config=REJECT) as live:
        client = await _in_transaction(live)
        await client.send(b"BDAT %d LAST\r\n" % len(body) + body)
        assert await client.reply() == (
            550,
            "5.6.0 bare LF or CR in message; use CRLF line endings",
        )
        await client.expect("RSET", 250)
        await client.expect("QUIT", 221)
        await live.wait_idle()
        assert live.sink.messages == []


async def test_bdat_body_with_bare_lf_is_normalized_by_default() -> None:
    async with running_server() as live:
        client = await _in_transaction(live)
        body = b"Subject: x\r\n\r\none\ntwo\rthree\r\n"
        await client.send(b"BDAT %d LAST\r\n" % len(body) + body)
        assert (await client.reply())[0] == 250
        await client.expect("QUIT", 221)
        await live.wait_idle()
        [mail] = live.sink.messages
        assert mail.content == b"Subject: x\r\n\r\none\r\ntwo\r\nthree\r\n"


async def test_bdat_line_of_5016_octets_is_refused() -> None:
    async with running_server() as live:
        client = await _in_transaction(live)
        body = b"Subject: x\r\n\r\n" + b"A" * 5014 + b"\r\n"
        await client.send(b"BDAT %d LAST\r\n" % len(body) + body)
        assert await client.reply() == (500, "5.5.6 line too long")
        await client.expect("QUIT", 221)
        await live.wait_idle()
        assert live.sink.messages == []


async def test_binarymime_bdat_body_is_kept_as_sent() -> None:
    async with running_server(config=REJECT) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect("MAIL FROM:<a@x.test> BODY=BINARYMIME", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        body = b"\x00\x01\n\r" + b"B" * 5000
        await client.send(b"BDAT %d LAST\r\n" % len(body) + body)
        assert (await client.reply())[0] == 250
        await client.expect("QUIT", 221)
        await live.wait_idle()
        assert [m.content for m in live.sink.messages] == [body]


@pytest.mark.parametrize(
    "line",
    [
        "ma\u0131l FROM:<a@x.test>",
        "r\u017fet",
        "\ufb06ARTTLS",
    ],
)
async def test_unicode_look_alike_verbs_are_unknown_commands(line: str) -> None:
    async with running_server() as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        assert await client.cmd(line.encode()) == (500, "5.5.2 command not recognized")
        await client.expect("QUIT", 221)


async def test_unicode_look_alike_body_keyword_is_unsupported() -> None:
    async with running_server() as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        code, text = await client.cmd("MAIL FROM:<a@x.test> BODY=8b\u0131tm\u0131me".encode())
        assert code == 501
        assert "unsupported BODY" in text
        await client.expect("QUIT", 221)


async def test_last_spelled_with_a_long_s_is_not_last() -> None:
    async with running_server() as live:
        client = await _in_transaction(live)
        await client.send("BDAT 4 la\u017ft\r\nabcd".encode())
        assert (await client.reply())[0] == 421
        assert await client.closed()
        await live.wait_idle()
        assert live.sink.messages == []


@pytest.mark.parametrize("line", ["MAIL FROM:a@x.test", "MAIL FROM:<ilo.@x.test>"])
async def test_sender_without_brackets_is_refused(line: str) -> None:
    async with running_server() as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        code, text = await client.cmd(line)
        assert code == 501
        assert text.startswith("5.1.7 ")
        await client.expect("QUIT", 221)


async def test_lenient_addresses_let_old_devices_through() -> None:
    async with running_server(config={"lenient_addresses": True}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect("MAIL FROM:ilo.@x.test", 250)
        await client.expect("RCPT TO:admin@y.test", 250)
        await client.expect("DATA", 354)
        await client.send(b"Subject: iLO\r\n\r\nfan failed\r\n.\r\n")
        assert (await client.reply())[0] == 250
        await client.expect("QUIT", 221)
        await live.wait_idle()
        [mail] = live.sink.messages
        assert (mail.mail_from, mail.rcpt_tos) == ("ilo.@x.test", ["admin@y.test"])


@pytest.mark.parametrize(
    "line",
    [
        "MAIL FROM:<a@x.test> ENVID=x+0D+0ABcc:+20evil@x+00",
        "MAIL FROM:<a@x.test> RET=HDRS ENVID=id+0A",
    ],
)
async def test_envid_decoding_to_controls_is_refused(line: str) -> None:
    async with running_server() as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        code, text = await client.cmd(line)
        assert (code, text[:6]) == (501, "5.5.4 ")
        await client.expect("QUIT", 221)


async def test_orcpt_decoding_to_controls_is_refused() -> None:
    async with running_server() as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        code, _ = await client.cmd("RCPT TO:<b@y.test> ORCPT=rfc822;b+0D+0ABcc:evil@x")
        assert code == 501
        await client.expect("QUIT", 221)


async def test_a_hook_reply_of_100_kb_goes_out_in_lines_of_at_most_512_octets() -> None:
    def rcpt(ctx: Any) -> Reply:
        return Reply(550, "5.7.1 " + "no " * 33_000)

    async with running_server({"RCPT": rcpt}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect(EHLO, 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.send(b"RCPT TO:<b@y.test>\r\n")
        lines = []
        while True:
            line = await client.line()
            lines.append(line)
            if line[3:4] != b"-":
                break
        assert len(lines) > 150
        assert all(len(line) + 2 <= 512 for line in lines)
        assert all(line.startswith((b"550-5.7.1 ", b"550 5.7.1 ")) for line in lines)
        await client.expect("QUIT", 221)


async def test_client_gets_closed_cleanly_after_untrusted_bdat_even_when_dribbling() -> None:
    async with running_server() as live:
        client = await _in_transaction(live)
        for octet in b"BDAT 5  LAST\r\n":
            await client.send(bytes([octet]))
            await trio.lowlevel.checkpoint()
        assert (await client.reply())[0] == 421
        assert await client.closed()


async def test_xclient_from_an_untrusted_client_is_refused_and_changes_nothing() -> None:
    # Postfix XCLIENT_README: only authorised clients; others get 550 (issue 12).
    async with running_server() as live:
        client = await live.connect()
        await client.reply()
        assert "XCLIENT" not in await client.expect(EHLO, 250)
        assert await client.cmd("XCLIENT ADDR=192.0.2.66 NAME=trusted.example LOGIN=admin") == (
            550,
            "5.7.0 XCLIENT not permitted from this client",
        )
        await client.expect("MAIL FROM:<a@x.test>", 250)
        await client.expect("RCPT TO:<b@y.test>", 250)
        await client.expect("DATA", 354)
        await client.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        assert (await client.reply())[0] == 250
        await client.expect("QUIT", 221)
        await live.wait_idle()
        [mail] = live.sink.messages
        assert mail.session.peer[0] == "127.0.0.1"
        assert mail.session.authenticated_as is None
