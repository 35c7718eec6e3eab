"""Real messages from :mod:`smtplib` (in a thread) through a real server into the sink."""

from __future__ import annotations

import email.message
import smtplib
from typing import Any

import pytest
import trio
import trio.testing
from _live_server import ipv6_available, make_server, memory_connection, running_server, with_smtp

from trio_smtp import Reply

#: Lines that need dot-stuffing, 8-bit bytes, an empty line, trailing spaces: all must
#: come out exactly as they went in.
TRICKY = (
    b"From: Alice <a@x.test>\r\n"
    b"To: Bob <b@y.test>\r\n"
    b"Subject: tricky\r\n"
    b"\r\n"
    b".\r\n"
    b"..\r\n"
    b".leading dot\r\n"
    b"...three\r\n"
    b"caf\xc3\xa9 \xff\xfe raw 8-bit\r\n"
    b"\r\n"
    b"trailing spaces   \r\n"
    b" .space then dot\r\n"
)


async def test_content_is_exact_after_dot_unstuffing() -> None:
    async with running_server() as live:
        refused = await with_smtp(
            live, lambda c: c.sendmail("a@x.test", ["b@y.test"], TRICKY, ["BODY=8BITMIME"])
        )
    assert refused == {}
    [mail] = live.sink.messages
    assert mail.content == TRICKY
    assert mail.mail_from == "a@x.test"
    assert mail.rcpt_tos == ["b@y.test"]
    assert mail.body_type == "8BITMIME"


async def test_bare_lf_from_a_str_message_arrives_as_crlf() -> None:
    # smtplib turns LF into CRLF for str messages; the server keeps CRLF as it is.
    async with running_server() as live:
        await with_smtp(
            live, lambda c: c.sendmail("a@x.test", ["b@y.test"], "Subject: s\n\nl1\nl2")
        )
    assert live.sink.messages[0].content == b"Subject: s\r\n\r\nl1\r\nl2\r\n"


async def test_several_messages_on_one_connection() -> None:
    def three(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        client.ehlo("client.test")
        replies = []
        for n in range(3):
            client.mail(f"sender{n}@x.test")
            client.rcpt(f"rcpt{n}@y.test")
            replies.append(client.data(f"Subject: message {n}\r\n\r\nbody {n}\r\n".encode()))
        return replies

    async with running_server() as live:
        replies = await with_smtp(live, three)
    mails = live.sink.messages
    assert [m.mail_from for m in mails] == ["sender0@x.test", "sender1@x.test", "sender2@x.test"]
    assert [m.rcpt_tos for m in mails] == [["rcpt0@y.test"], ["rcpt1@y.test"], ["rcpt2@y.test"]]
    assert [m.message["Subject"] for m in mails] == ["message 0", "message 1", "message 2"]
    # Each reply names its own message; the three share one session.
    assert replies == [(250, f"2.0.0 OK queued as {m.id}".encode()) for m in mails]
    assert len({m.id for m in mails}) == 3
    assert len({m.session.id for m in mails}) == 1
    assert mails[0].session.messages == 3
    # The second transaction does not inherit the first one's recipients.
    assert all(len(m.recipients) == 1 for m in mails)


async def test_multiple_recipients_in_order_and_the_log_names_them_all() -> None:
    rcpts = ["one@y.test", "two@y.test", "three@z.test"]
    async with running_server() as live:
        await with_smtp(live, lambda c: c.sendmail("a@x.test", rcpts, b"Subject: m\r\n\r\nx\r\n"))
    [mail] = live.sink.messages
    assert mail.rcpt_tos == rcpts
    [line] = live.logger.find("Message accepted")
    assert f"id={mail.id} from=<a@x.test> to=<one@y.test>,<two@y.test>,<three@z.test>" in line
    assert line.endswith(f'size={len(mail.content)} subject="m"')


async def test_a_refused_recipient_is_reported_and_left_out() -> None:
    def rcpt(ctx: Any) -> None:
        if ctx.address == "nobody@y.test":
            raise Reply(550, "5.1.1 no such user")

    async with running_server({"RCPT": rcpt}) as live:
        refused = await with_smtp(
            live,
            lambda c: c.sendmail("a@x.test", ["b@y.test", "nobody@y.test"], b"x\r\n"),
        )
    assert refused == {"nobody@y.test": (550, b"5.1.1 no such user")}
    assert live.sink.messages[0].rcpt_tos == ["b@y.test"]


async def test_message_is_parsed_lazily_with_headers_and_body() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "Alice <a@x.test>"
    msg["To"] = "Bob <b@y.test>, Carol <c@y.test>"
    msg["Subject"] = "Grüße aus Köln"
    msg.set_content("Hallo Bob,\n\nbis bald.\n")
    async with running_server() as live:
        await with_smtp(live, lambda c: c.send_message(msg))
    [mail] = live.sink.messages
    assert mail.message["Subject"] == "Grüße aus Köln"
    assert mail.rcpt_tos == ["b@y.test", "c@y.test"]
    assert mail.message.get_content().replace("\r\n", "\n") == "Hallo Bob,\n\nbis bald.\n"


async def test_esmtp_and_dsn_parameters_are_kept() -> None:
    message = b"Subject: params\r\n\r\nx\r\n"

    def send(client: smtplib.SMTP) -> None:
        client.sendmail(
            "a@x.test",
            ["b@y.test"],
            message,
            mail_options=["BODY=8BITMIME", "RET=HDRS", "ENVID=QQ314159"],
            rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;b@y.test"],
        )

    async with running_server() as live:
        await with_smtp(live, send)
    [mail] = live.sink.messages
    # smtplib adds SIZE itself because the server advertises it.
    assert mail.mail_params == {
        "SIZE": str(len(message)),
        "BODY": "8BITMIME",
        "RET": "HDRS",
        "ENVID": "QQ314159",
    }
    assert (mail.size, mail.body_type, mail.ret, mail.envid) == (
        len(message),
        "8BITMIME",
        "HDRS",
        "QQ314159",
    )
    [rcpt] = mail.recipients
    assert rcpt.params == {"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;b@y.test"}
    assert rcpt.notify == ("SUCCESS", "DELAY")
    assert rcpt.orcpt == ("rfc822", "b@y.test")
    assert mail.rcpt_params == [rcpt.params]


async def test_smtputf8_addresses() -> None:
    body = "Subject: ünïcödé\r\n\r\nça va\r\n".encode()
    async with running_server() as live:
        await with_smtp(
            live, lambda c: c.sendmail("ålice@x.test", ["bøb@y.test"], body, ["SMTPUTF8"])
        )
    [mail] = live.sink.messages
    assert (mail.mail_from, mail.rcpt_tos, mail.smtputf8) == ("ålice@x.test", ["bøb@y.test"], True)
    assert mail.content == body


async def test_session_details_reach_the_mail() -> None:
    def send(client: smtplib.SMTP) -> tuple[str, int]:
        client.ehlo("client.example")
        client.sendmail("a@x.test", ["b@y.test"], b"x\r\n")
        assert client.sock is not None
        host, port = client.sock.getsockname()[:2]
        return str(host), int(port)

    async with running_server() as live:
        client_addr = await with_smtp(live, send)
    session = live.sink.messages[0].session
    assert session.helo_name == "client.example"
    assert session.esmtp
    assert session.peer == client_addr
    assert session.local == (live.host, live.port)
    assert session.hostname == "mx.test"
    assert session.protocol == "ESMTP"


async def test_ehlo_advertises_the_extensions() -> None:
    async with running_server(config={"max_message_size": 12345}) as live:
        code, text = await with_smtp(live, lambda c: c.ehlo("client.example"))
    assert code == 250
    lines = text.decode().splitlines()
    assert lines[0] == "mx.test"
    for extension in ("PIPELINING", "SIZE 12345", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
        assert extension in lines
    assert not [line for line in lines if line.startswith(("AUTH", "STARTTLS"))]


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback here")
async def test_ipv6_and_ipv4_listeners_at_once() -> None:
    async with running_server(config={"host": ["127.0.0.1", "::1"]}) as live:
        assert [a[0] for a in live.addresses] == ["127.0.0.1", "::1"]
        assert 0 not in [a[1] for a in live.addresses]
        await with_smtp(live, lambda c: c.sendmail("v4@x.test", ["b@y.test"], b"four\r\n"), 0)
        await with_smtp(live, lambda c: c.sendmail("v6@x.test", ["b@y.test"], b"six\r\n"), 1)
    v4, v6 = live.sink.messages
    assert (v4.mail_from, v4.content, v4.session.peer[0]) == ("v4@x.test", b"four\r\n", "127.0.0.1")
    assert (v6.mail_from, v6.content, v6.session.peer[0]) == ("v6@x.test", b"six\r\n", "::1")
    assert v6.session.local == live.addresses[1]
    starts = live.logger.find("Server start on ip:", "log")
    assert starts == [f"Server start on ip: {h} port: {p}" for h, p in live.addresses]


async def test_concurrent_clients_do_not_mix_their_messages() -> None:
    def send(n: int) -> None:
        with smtplib.SMTP(live.host, live.port, timeout=10) as client:
            for k in range(3):
                client.sendmail(f"c{n}@x.test", [f"r{n}@y.test"], f"from {n} #{k}\r\n".encode())

    async with running_server() as live, trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(trio.to_thread.run_sync, send, n)
    assert len(live.sink.messages) == 24
    for mail in live.sink.messages:
        sender = mail.mail_from[1 : mail.mail_from.index("@")]
        assert mail.rcpt_tos == [f"r{sender}@y.test"]
        assert mail.content.startswith(f"from {sender} #".encode())


class _RecordingStream(trio.abc.HalfCloseableStream):
    """Wraps a stream and records every ``send_all``."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.sends: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends.append(bytes(data))
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_replies_of_a_pipelined_batch_go_out_in_one_send() -> None:
    server, sink, _ = make_server()
    recorders: list[_RecordingStream] = []

    def record(stream: trio.abc.Stream) -> trio.abc.Stream:
        assert isinstance(stream, trio.abc.HalfCloseableStream)
        recorders.append(_RecordingStream(stream))
        return recorders[0]

    async with memory_connection(server, wrap=record) as (client, _run):
        [recorder] = recorders
        await client.reply()
        await client.expect("EHLO client.test", 250)
        recorder.sends.clear()
        # RFC 2920: the whole batch up to DATA, in one write.
        await client.send(
            b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
        )
        replies = [await client.reply() for _ in range(4)]
        assert [code for code, _ in replies] == [250, 250, 250, 354]
        assert len(recorder.sends) == 1
        await client.send(b"pipelined\r\n.\r\n")
        assert (await client.reply())[0] == 250
    assert sink.messages[0].rcpt_tos == ["b@y.test", "c@y.test"]
