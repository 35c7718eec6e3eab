"""Connection, size and recipient limits over real sockets."""

from __future__ import annotations

import smtplib

import pytest
import trio
from _live_server import HANG, ipv6_available, running_server, with_smtp

BUSY = (421, "4.7.0 too many connections, try again later")
BUSY_IP = (421, "4.7.0 too many connections from your address")
TOO_BIG = (552, "5.3.4 message size exceeds fixed maximum message size")


async def test_max_connections_refuses_the_extra_one_and_recovers() -> None:
    async with running_server(config={"max_connections": 2}) as live:
        first, second = await live.connect(), await live.connect()
        assert (await first.reply())[0] == 220
        assert (await second.reply())[0] == 220
        extra = await live.connect()
        assert await extra.reply() == BUSY
        assert await extra.closed()
        assert live.server.connections == 2
        assert live.logger.find("max_connections 2 reached", "warn")

        await first.expect("QUIT", 221)
        await second.aclose()
        await live.wait_idle()  # no task left behind
        again = await live.connect()
        assert (await again.reply())[0] == 220
        await again.expect("NOOP", 250)


async def test_max_connections_per_ip() -> None:
    hosts = ["127.0.0.1", "::1"] if ipv6_available() else ["127.0.0.1"]
    config = {"max_connections_per_ip": 1, "host": hosts}
    async with running_server(config=config) as live:
        first = await live.connect()
        assert (await first.reply())[0] == 220
        second = await live.connect()
        assert await second.reply() == BUSY_IP
        assert await second.closed()
        if len(hosts) == 2:
            # Another address has its own count.
            other = await live.connect(1)
            assert (await other.reply())[0] == 220
            await other.expect("QUIT", 221)
        await first.expect("QUIT", 221)
        await live.wait_idle()
        # The count was released with the connection.
        third = await live.connect()
        assert (await third.reply())[0] == 220
    assert live.logger.find("max_connections_per_ip 1", "warn")


async def test_max_message_size_without_size_parameter_then_a_good_message() -> None:
    async with running_server(config={"max_message_size": 1000}) as live:
        client = await live.connect()
        await client.reply()
        ehlo = await client.expect("EHLO client.test", 250)
        assert "SIZE 1000" in ehlo.splitlines()
        assert await client.transaction(b"x" * 70 + b"\r\n" + b"y" * 998 + b"\r\n") == TOO_BIG
        # The same connection goes on and can send a message within the limit.
        code, _ = await client.transaction(b"small\r\n")
        assert code == 250
    [mail] = live.sink.messages
    assert mail.content == b"small\r\n"
    assert live.logger.find("Message refused")


async def test_declared_size_over_the_limit_is_refused_at_mail() -> None:
    def send(client: smtplib.SMTP) -> None:
        # smtplib declares SIZE because the server advertises it.
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@x.test", ["b@y.test"], b"z" * 2000)
        assert refused.value.smtp_code == 552
        client.rset()
        client.sendmail("a@x.test", ["b@y.test"], b"fits\r\n")

    async with running_server(config={"max_message_size": 1000}) as live:
        await with_smtp(live, send)
    assert [m.content for m in live.sink.messages] == [b"fits\r\n"]


async def test_max_recipients() -> None:
    async with running_server(config={"max_recipients": 3}) as live:
        client = await live.connect()
        await client.reply()
        await client.expect("EHLO client.test", 250)
        await client.expect("MAIL FROM:<a@x.test>", 250)
        for n in range(3):
            await client.expect(f"RCPT TO:<r{n}@y.test>", 250)
        code, text = await client.cmd("RCPT TO:<r3@y.test>")
        assert (code, text[:5]) == (452, "4.5.3")
        await client.expect("DATA", 354)
        await client.send(b"to three\r\n.\r\n")
        assert (await client.reply())[0] == 250
    assert live.sink.messages[0].rcpt_tos == ["r0@y.test", "r1@y.test", "r2@y.test"]


async def test_connections_are_counted_while_open_and_released_after() -> None:
    async with running_server() as live:
        clients = [await live.connect() for _ in range(5)]
        for client in clients:
            await client.reply()
        assert live.server.connections == 5
        for client in clients:
            await client.aclose()
        await live.wait_idle()
        assert live.server.connections_per_address == {}


async def test_refused_connections_do_not_wait_for_the_client() -> None:
    # The refusal must not hang on a client that never reads or closes.
    async with running_server(config={"max_connections": 1}) as live:
        keeper = await live.connect()
        await keeper.reply()
        with trio.fail_after(HANG):  # 20 refusals: a wait of 3 s each would reach it
            for _ in range(20):
                extra = await live.connect()
                assert await extra.reply() == BUSY
                assert await extra.closed()
        assert live.server.connections == 1
