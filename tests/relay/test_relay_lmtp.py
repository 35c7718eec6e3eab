"""An LMTP server relaying: each recipient gets the upstream's own answer (RFC 2033 §4.2)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_smtp import Mail, Reply, Server
from trio_smtp.sinks import RelaySink
from trio_smtp.testing import SMTPClient

RECIPIENTS = ("ann@example.org", "nobody@example.org", "full@example.org", "bob@example.org")


class _Quiet:
    def __getattr__(self, _name: str) -> object:
        return lambda _message: None


def _upstream(*, lmtp: bool, stored: list[Mail]) -> Server:
    """Refuses nobody@ at RCPT; on LMTP, full@ after the data (a full mailbox)."""

    def rcpt(ctx: Any) -> Reply | None:
        return Reply(550, "5.1.1 no such user") if ctx.address.startswith("nobody@") else None

    def done(mail: Mail) -> dict[str, Reply] | None:
        stored.append(mail)
        if not lmtp:
            return None
        return {r: Reply(452, "4.2.2 mailbox full") for r in mail.rcpt_tos if "full@" in r}

    return Server(
        {
            "events": {"RCPT": rcpt, "done": done},
            "config": {"port": 0, "hostname": "up.test", "lmtp": lmtp},
        },
        {"logger": _Quiet()},
    )


async def _lmtp_transaction(port: int) -> list[str]:
    client = await SMTPClient.connect("127.0.0.1", port)
    await client.greet(b"LHLO client.test")
    await client.expect(b"MAIL FROM:<a@example.com>", 250)
    for rcpt in RECIPIENTS:
        await client.expect(f"RCPT TO:<{rcpt}>", 250)  # we accept; the upstream decides
    await client.expect(b"DATA", 354)
    await client.send(b"Subject: hi\r\n\r\n..dot line\r\n.\r\n")
    replies = [str(await client.reply()) for _ in RECIPIENTS]
    await client.expect(b"QUIT", 221)
    await client.aclose()
    return replies


@pytest.mark.parametrize("upstream_lmtp", [True, False], ids=["lmtp-upstream", "smtp-upstream"])
async def test_each_recipient_gets_the_upstreams_answer_for_it(upstream_lmtp: bool) -> None:
    stored: list[Mail] = []
    upstream = _upstream(lmtp=upstream_lmtp, stored=stored)
    async with trio.open_nursery() as nursery:
        (_, up_port), *_ = await nursery.start(upstream.serve)
        front = Server(
            {
                "config": {
                    "port": 0,
                    "hostname": "front.test",
                    "lmtp": True,
                    "relay_from": ["127.0.0.0/8"],
                }
            },
            {
                "sink": RelaySink(
                    "127.0.0.1", up_port, lmtp=upstream_lmtp, starttls="never", timeout=30
                ),
                "logger": _Quiet(),
            },
        )
        (_, front_port), *_ = await nursery.start(front.serve)
        replies = await _lmtp_transaction(front_port)
        front.shutdown()
        upstream.shutdown()
    ann, nobody, full, bob = replies
    assert ann.startswith("250 2.1.5 <ann@example.org> relayed"), replies
    assert bob.startswith("250 2.1.5 <bob@example.org> relayed"), replies
    assert nobody.startswith("550 5.1.1 upstream refused <nobody@example.org>: "), replies
    # The message went to the recipients the upstream took, once.
    [mail] = stored
    assert b"\r\n.dot line\r\n" in mail.content
    if upstream_lmtp:
        assert full.startswith("452 4.2.2 upstream refused <full@example.org>: "), replies
        assert mail.rcpt_tos == ["ann@example.org", "full@example.org", "bob@example.org"]
    else:
        assert full.startswith("250 "), replies
        assert mail.rcpt_tos == ["ann@example.org", "full@example.org", "bob@example.org"]


async def test_an_smtp_server_relaying_still_refuses_the_whole_message() -> None:
    stored: list[Mail] = []
    upstream = _upstream(lmtp=True, stored=stored)
    async with trio.open_nursery() as nursery:
        (_, up_port), *_ = await nursery.start(upstream.serve)
        front = Server(
            {"config": {"port": 0, "hostname": "front.test", "relay_from": ["127.0.0.0/8"]}},
            {
                "sink": RelaySink("127.0.0.1", up_port, lmtp=True, starttls="never", timeout=30),
                "logger": _Quiet(),
            },
        )
        (_, front_port), *_ = await nursery.start(front.serve)
        client = await SMTPClient.connect("127.0.0.1", front_port)
        await client.greet()
        await client.expect(b"MAIL FROM:<a@example.com>", 250)
        for rcpt in ("ann@example.org", "full@example.org"):
            await client.expect(f"RCPT TO:<{rcpt}>", 250)
        await client.expect(b"DATA", 354)
        await client.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        # One reply for the message: the temporary failure, so the sender retries.
        reply = str(await client.reply())
        await client.aclose()
        front.shutdown()
        upstream.shutdown()
    assert reply.startswith("452 4.2.2 upstream refused <full@example.org>: "), reply
