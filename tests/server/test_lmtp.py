"""LMTP (RFC 2033): LHLO, and one reply per recipient after the message."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
import trio
from _live_server import Client, Live, running_server

from trio_smtp import HookReturnError, Mail, Reply

LMTP = {"lmtp": True}
RCPTS = ("one@y.test", "two@y.test", "three@y.test")


async def lmtp_client(live: Live) -> Client:
    client = await live.connect()
    assert await client.reply() == (220, "mx.test LMTP")
    await client.expect("LHLO client.test", 250)
    return client


async def send(client: Client, body: bytes = b"Subject: l\r\n\r\nx\r\n") -> list[tuple[int, str]]:
    """A transaction to :data:`RCPTS`; returns the replies after the final dot."""
    await client.expect("MAIL FROM:<a@x.test>", 250)
    for rcpt in RCPTS:
        await client.expect(f"RCPT TO:<{rcpt}>", 250)
    await client.expect("DATA", 354)
    await client.send(body + b".\r\n")
    return [await client.reply() for _ in RCPTS]


async def test_smtplib_lmtp_client_delivers() -> None:
    def deliver(host: str, port: int) -> dict[str, Any]:
        with smtplib.LMTP(host, port) as client:
            code, _ = client.ehlo("client.test")  # smtplib.LMTP sends LHLO here
            assert code == 250
            return client.sendmail("a@x.test", ["b@y.test"], b"Subject: via LMTP\r\n\r\nhi\r\n")

    async with running_server(config=LMTP) as live:
        refused = await trio.to_thread.run_sync(deliver, live.host, live.port)
    assert refused == {}
    [mail] = live.sink.messages
    assert mail.message["Subject"] == "via LMTP"
    assert mail.session.lmtp
    assert mail.session.protocol == "LMTP"
    assert mail.session.helo_name == "client.test"


async def test_helo_and_ehlo_are_refused() -> None:
    async with running_server(config=LMTP) as live:
        client = await live.connect()
        await client.reply()
        assert (await client.cmd("HELO client.test"))[0] == 500
        assert (await client.cmd("EHLO client.test"))[0] == 500
        await client.expect("LHLO client.test", 250)


async def test_lhlo_hook_fires() -> None:
    names: list[str | None] = []

    def lhlo(ctx: Any) -> None:
        names.append(ctx.argument)

    async with running_server({"LHLO": lhlo}, config=LMTP) as live:
        await lmtp_client(live)
    assert names == ["client.test"]


async def test_one_default_reply_per_recipient() -> None:
    async with running_server(config=LMTP) as live:
        client = await lmtp_client(live)
        replies = await send(client)
        await client.expect("NOOP", 250)  # nothing extra was queued behind them
    assert replies == [(250, f"2.1.5 <{r}> delivered") for r in RCPTS]
    [mail] = live.sink.messages
    assert mail.rcpt_tos == list(RCPTS)


async def test_done_returning_a_list_answers_each_recipient() -> None:
    def done(mail: Mail) -> list[Reply | None]:
        return [
            Reply(250, "2.1.5 stored for one"),
            Reply(550, "5.2.1 mailbox two is disabled"),
            None,  # the default
        ]

    async with running_server({"done": done}, config=LMTP) as live:
        client = await lmtp_client(live)
        replies = await send(client)
        await client.expect("NOOP", 250)
    assert replies == [
        (250, "2.1.5 stored for one"),
        (550, "5.2.1 mailbox two is disabled"),
        (250, "2.1.5 <three@y.test> delivered"),
    ]
    [line] = live.logger.find("Message accepted")
    assert "to=<one@y.test>,<three@y.test> " in line


async def test_done_returning_a_mapping_answers_by_address() -> None:
    async def done(mail: Mail) -> dict[str, Reply]:
        await trio.lowlevel.checkpoint()
        return {"two@y.test": Reply(452, "4.2.2 mailbox two is full")}

    async with running_server({"done": done}, config=LMTP) as live:
        client = await lmtp_client(live)
        replies = await send(client)
    assert replies == [
        (250, "2.1.5 <one@y.test> delivered"),
        (452, "4.2.2 mailbox two is full"),
        (250, "2.1.5 <three@y.test> delivered"),
    ]


@pytest.mark.parametrize("raise_it", [False, True], ids=["return", "raise"])
async def test_done_with_a_single_reply_gives_it_to_every_recipient(raise_it: bool) -> None:
    def done(mail: Mail) -> Reply:
        reply = Reply(554, "5.6.0 content rejected")
        if raise_it:
            raise reply
        return reply

    async with running_server({"done": done}, config=LMTP) as live:
        client = await lmtp_client(live)
        replies = await send(client)
        await client.expect("NOOP", 250)
    assert replies == [(554, "5.6.0 content rejected")] * len(RCPTS)
    assert not live.logger.find("Message accepted")


async def test_done_returning_the_wrong_number_of_replies_is_a_hook_failure() -> None:
    errors: list[BaseException] = []
    events = {
        "done": lambda mail: [Reply(250, "2.0.0 only one")],
        "error": lambda exc, mail: errors.append(exc),
    }
    async with running_server(events, config=LMTP) as live:
        client = await lmtp_client(live)
        replies = await send(client)
        await client.expect("NOOP", 250)
    assert [code for code, _ in replies] == [451, 451, 451]
    [error] = errors
    assert isinstance(error, HookReturnError)


async def test_done_raising_gives_451_for_every_recipient() -> None:
    def done(mail: Mail) -> None:
        raise RuntimeError("store is down")

    async with running_server({"done": done}, config=LMTP) as live:
        client = await lmtp_client(live)
        replies = await send(client)
        await client.expect("NOOP", 250)
    assert replies == [(451, "4.3.0 local error in processing; try again later")] * len(RCPTS)


async def test_bdat_last_gets_only_the_per_recipient_replies() -> None:
    async with running_server(config=LMTP) as live:
        client = await lmtp_client(live)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        for rcpt in RCPTS[:2]:
            await client.expect(f"RCPT TO:<{rcpt}>", 250)
        await client.send(b"BDAT 2 LAST\r\nhi")
        replies = [await client.reply() for _ in range(2)]
        assert replies == [(250, f"2.1.5 <{r}> delivered") for r in RCPTS[:2]]
        assert await client.cmd("NOOP") == (250, "2.0.0 OK")
