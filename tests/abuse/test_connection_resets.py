"""Clients that reset the connection (TCP RST, SO_LINGER 0) at every point of a transaction.

A connection that breaks before the server has read the final dot delivers nothing
(SPEC §6): no ``done``, no sink, no 250 that nobody could receive. Whatever the point,
the server releases the connection (its count and per-address slot), fires ``close``
exactly once, and keeps serving everyone else.

Right after the final dot the outcome depends on a race the server cannot see: if the
dot was read before the RST arrived, the message is complete and is delivered (the
client simply never reads the 250: a duplicate, SMTP's accepted failure mode, RFC 5321
§6.1); if the RST arrived first, the kernel discards the unread bytes and nothing is
delivered. Both are correct; what must never happen is a partial message. (On Linux
over loopback the server is already waiting in ``recv`` when the dot arrives, so in
practice every such message is delivered and only the 250 is lost.)
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
from _abuse_harness import ordinary_traffic, running_server

from trio_smtp import Mail
from trio_smtp.testing import SMTPClient, SMTPTestServer

BODY = b"Subject: reset\r\n\r\nline one\r\nline two\r\n"


async def _to(point: str, client: SMTPClient) -> None:
    """Drive a transaction up to ``point``; the caller then resets the connection."""
    assert (await client.reply()).code == 220
    if point == "after-greeting":
        return
    assert (await client.command(b"EHLO resetter.test")).code == 250
    if point == "after-ehlo":
        return
    if point == "mid-mail-line":
        await client.send(b"MAIL FROM:<reset@exam")
        return
    assert (await client.command(b"MAIL FROM:<reset@example.org>")).code == 250
    assert (await client.command(b"RCPT TO:<bob@example.net>")).code == 250
    if point == "after-rcpt":
        return
    assert (await client.command(b"DATA")).code == 354
    if point == "mid-data":
        await client.send(BODY[:20])
        return
    if point == "mid-data-dot-pending":
        # Everything but the terminator's last LF: the message is not complete.
        await client.send(BODY + b".\r")
        return
    assert point == "after-final-dot"
    await client.send(BODY + b".\r\n")


POINTS_WITHOUT_DELIVERY = [
    "after-greeting",
    "after-ehlo",
    "mid-mail-line",
    "after-rcpt",
    "mid-data",
    "mid-data-dot-pending",
]


async def _reset_at(srv: SMTPTestServer, point: str, n: int) -> None:
    async def one() -> None:
        client = await SMTPClient.connect("127.0.0.1", srv.port)
        await _to(point, client)
        client.reset()

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)


@attrs.define
class Record:
    """What the lifecycle hooks saw."""

    connect: list[str] = attrs.field(factory=list)
    close: list[str] = attrs.field(factory=list)
    done: list[Mail] = attrs.field(factory=list)

    def hooks(self) -> dict[str, Any]:
        return {
            "connect": lambda session: self.connect.append(session.id),
            "close": lambda session: self.close.append(session.id),
            "done": self.done.append,
        }


@pytest.mark.parametrize("point", POINTS_WITHOUT_DELIVERY)
async def test_reset_before_the_final_dot_delivers_nothing_and_leaks_nothing(point: str) -> None:
    record = Record()
    n = 20
    async with running_server({"max_connections_per_ip": n}, events=record.hooks()) as srv:
        await _reset_at(srv, point, n)
        await srv.wait_idle()
        assert record.done == []
        assert sorted(record.close) == sorted(record.connect)  # once each
        assert len(record.connect) == n
        assert srv.server.connections_per_address == {}
        # The per-address quota is whole again: n ordinary clients at once get through.
        async with ordinary_traffic(srv.port, senders=n, at_least=n) as traffic:
            await traffic.wait_sent(n)
        traffic.check(at_least=n)
        assert all(m.mail_from == "ann@example.org" for m in record.done)
    # Each reset was seen as such (ECONNRESET), not as a timeout or an internal error.
    assert len(srv.logger.matching("(connection lost)")) == n


async def test_reset_right_after_the_final_dot_delivers_the_whole_message_or_nothing() -> None:
    record = Record()
    n = 20
    async with running_server({}, events=record.hooks()) as srv:
        await _reset_at(srv, "after-final-dot", n)
        await srv.wait_idle()
        assert len(record.close) == len(record.connect) == n
        delivered = record.done
        assert len(delivered) <= n
        for mail in delivered:
            assert mail.content == BODY
        assert srv.server.connections_per_address == {}
    assert len(srv.logger.matching("(connection lost)")) == n
