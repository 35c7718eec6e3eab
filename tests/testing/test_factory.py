"""The factory fixtures and their shortcuts: TLS, AUTH, LMTP, any config key; isolation."""

from __future__ import annotations

import smtplib
import ssl

import pytest
import trio

from trio_smtp.testing import (
    SMTPServerFactory,
    SMTPTestServer,
    ThreadedServer,
    ThreadedServerFactory,
    serving,
)

MESSAGE = b"Subject: hi\r\n\r\nhi\r\n"


def _tls_auth_send(server: ThreadedServer | SMTPTestServer, password: str) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        smtp.starttls(context=server.client_ssl_context)
        smtp.login("ann", password)
        smtp.sendmail("ann@example.org", ["bob@example.com"], MESSAGE)


async def test_tls_and_auth(smtp_server_factory: SMTPServerFactory) -> None:
    server = await smtp_server_factory(tls=True, auth={"ann": "pw"})
    await trio.to_thread.run_sync(_tls_auth_send, server, "pw")
    await server.wait_for(1)
    session = server.messages[0].session
    assert session.authenticated_as == "ann"
    assert session.tls is not None
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await trio.to_thread.run_sync(_tls_auth_send, server, "wrong")
    assert server.certificate is not None
    assert server.certificate.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE")


async def test_auth_over_tls_only_when_tls_is_on(smtp_server_factory: SMTPServerFactory) -> None:
    server = await smtp_server_factory(tls=True, auth={"ann": "pw"})
    client = await server.connect()
    reply = await client.greet()
    assert "AUTH" not in reply.text  # not before STARTTLS (RFC 4954 §4)
    plain = await smtp_server_factory(auth={"ann": "pw"})
    client = await plain.connect()
    assert "AUTH PLAIN LOGIN" in (await client.greet()).text


async def test_implicit_tls_port_too(smtp_server_factory: SMTPServerFactory) -> None:
    server = await smtp_server_factory(tls=True, tls_port=0)
    host, port = server.addresses[1]

    def smtps() -> None:
        with smtplib.SMTP_SSL(host, port, context=server.client_ssl_context, timeout=10) as smtp:
            smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)

    await trio.to_thread.run_sync(smtps)
    await server.wait_for(1)


async def test_no_certificate_without_tls(smtp_server: SMTPTestServer) -> None:
    with pytest.raises(RuntimeError, match="start it with tls=True"):
        smtp_server.client_ssl_context  # noqa: B018


async def test_lmtp(smtp_server_factory: SMTPServerFactory) -> None:
    server = await smtp_server_factory(lmtp=True)

    def lmtp() -> None:
        with smtplib.LMTP(server.host, server.port) as client:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)

    await trio.to_thread.run_sync(lmtp)
    await server.wait_for(1)
    assert server.messages[0].session.lmtp
    assert "LHLO" in server.log[1]


async def test_any_config_key_and_the_schema(smtp_server_factory: SMTPServerFactory) -> None:
    server = await smtp_server_factory(
        {"config": {"hostname": "mx.schema.test", "max_recipients": 5}}, max_recipients=1
    )
    client = await server.connect()
    greeting = await client.reply()
    assert greeting.text.startswith("mx.schema.test")
    await client.command("EHLO c.test")
    await client.expect("MAIL FROM:<a@example.org>", 250)
    await client.expect("RCPT TO:<b@example.com>", 250)
    assert (await client.command("RCPT TO:<c@example.com>")).code == 452


async def test_two_servers_in_one_test_are_isolated(
    smtp_server_factory: SMTPServerFactory, smtp_server: SMTPTestServer
) -> None:
    other = await smtp_server_factory()
    assert other.port != smtp_server.port
    other.fail("RCPT", 550, "5.1.1 only here")

    def send(port: int) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            return smtp.sendmail("a@example.org", ["b@example.com"], MESSAGE)

    assert await trio.to_thread.run_sync(send, smtp_server.port) == {}
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await trio.to_thread.run_sync(send, other.port)
    assert len(smtp_server.messages) == 1
    assert other.messages == []
    assert not any("550" in line for line in smtp_server.log)


def test_threaded_factory_stops_what_it_started(
    threaded_smtp_server_factory: ThreadedServerFactory,
) -> None:
    one = threaded_smtp_server_factory(tls=True, auth={"ann": "pw"}, auth_required=True)
    two = threaded_smtp_server_factory(lmtp=True)
    _tls_auth_send(one, "pw")
    one.wait_for(1)
    assert two.messages == []
    assert threaded_smtp_server_factory.started == [one, two]


async def test_wait_for_lists_what_arrived(smtp_server: SMTPTestServer) -> None:
    def send() -> None:
        with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as smtp:
            smtp.sendmail("a@example.org", ["b@example.com"], b"Subject: the one\r\n\r\nx\r\n")

    await trio.to_thread.run_sync(send)
    with pytest.raises(TimeoutError) as info:
        await smtp_server.wait_for(2, timeout=0.05)
    text = str(info.value)
    assert "expected 2 message(s) within 0.05 s, got 1" in text
    assert "from <a@example.org> to ['b@example.com'] subject 'the one'" in text
    assert "RCPT b@example.com" in text


async def test_serving_outside_pytest_fixtures_with_a_raw_client() -> None:
    async with serving(hostname="mx.test") as server:
        client = await server.connect()
        await client.greet()
        reply = await client.transaction(b"Subject: raw\r\n\r\nbody\r\n")
        assert reply.code == 250
        assert reply == (250, reply.text)  # a ServerReply is a (code, text) tuple
        assert reply.lines[0].startswith(b"250 ")
        assert (await client.command("QUIT")).code == 221
        assert await client.closed()
        await server.wait_idle()
    assert server.messages[0].text == "body\n"


def test_client_ssl_context_trusts_only_the_test_ca() -> None:
    with ThreadedServer(tls=True) as server:
        context = server.client_ssl_context
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
