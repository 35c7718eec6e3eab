"""STARTTLS (RFC 3207) end to end, over real sockets on 127.0.0.1.

smtplib runs in a thread; the raw-socket clients are Trio streams in the test's own
run, so that the bytes on the wire (one send holding STARTTLS and more) are exactly
what the test says. The handshake timeouts are real, short ones: the autojump clock
cannot apply while a real socket is involved.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme

from trio_smtp import Reply, Server
from trio_smtp.sinks.memory import MemorySink
from trio_smtp.testing import RecordingLogger, SMTPClient, SMTPTestServer, serving

CLIENT_TIMEOUT = 10.0
#: For a client that never finishes its handshake: it is dropped quickly.
HANDSHAKE_TIMEOUT = 0.5
#: Where an ordinary client's real handshake must also beat the timeout: a loaded
#: machine may take more than 0.5 s over one (the silent client waits this long).
PATIENT_HANDSHAKE_TIMEOUT = 3.0
MESSAGE = b"Subject: hello\r\n\r\nover TLS\r\n"

# ---------------------------------------------------------------------------- helpers


LineLogger = RecordingLogger
RawClient = SMTPClient


@attrs.frozen(kw_only=True)
class Running:
    server: Server
    port: int
    sink: MemorySink
    logger: RecordingLogger
    live: SMTPTestServer

    async def connect(self, port: int | None = None) -> SMTPClient:
        """A raw client on ``port`` (the plain port by default), closed with the server."""
        client = await SMTPClient.connect("127.0.0.1", self.port if port is None else port)
        self.live.clients.append(client)
        return client


@asynccontextmanager
async def running(
    tls_files: dict[str, Path] | None,
    *,
    events: dict[str, Any] | None = None,
    deps: dict[str, Any] | None = None,
    **config: Any,
) -> AsyncIterator[Running]:
    """A server on a free port of 127.0.0.1, with a certificate unless ``tls_files`` is None."""
    cfg: dict[str, Any] = {"hostname": "mx.test"}
    if tls_files is not None:
        cfg.update(tls_cert=str(tls_files["cert"]), tls_key=str(tls_files["key"]))
    cfg.update(config)
    sink = MemorySink()
    logger = RecordingLogger()
    dependencies = {"sink": sink, "logger": logger, **(deps or {})}
    schema = {"events": events or {}}
    async with serving(schema, dependencies, faults=False, **cfg) as live:
        yield Running(server=live.server, port=live.port, sink=sink, logger=logger, live=live)


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


def smtplib_client(port: int) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=CLIENT_TIMEOUT)


def client_hello(context: ssl.SSLContext) -> bytes:
    """The bytes a TLS client sends first, made without a socket."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def allow_auth(ctx: Any) -> bool:
    return bool(ctx.password == "right")


# ---------------------------------------------------------------------------- tests


async def test_smtplib_starttls_delivers_with_tls_details(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    seen: list[Any] = []

    def on_starttls(ctx: Any) -> None:
        # The hook runs after the handshake and after the session forgot EHLO.
        seen.append((ctx.session.tls, ctx.session.helo_name, ctx.session.esmtp))

    events = {"STARTTLS": on_starttls, "AUTH": allow_auth}
    async with running(tls_files, events=events) as srv:

        def client() -> dict[str, Any]:
            with smtplib_client(srv.port) as smtp:
                before = smtp.ehlo("before.test")
                offers_starttls = smtp.has_extn("starttls")
                offers_auth_before = smtp.has_extn("auth")
                code, text = smtp.starttls(context=client_ssl_context)
                after = smtp.ehlo("after.test")
                refused = smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
                assert isinstance(smtp.sock, ssl.SSLSocket)
                return {
                    "before": before[0],
                    "offers_starttls": offers_starttls,
                    "offers_auth_before": offers_auth_before,
                    "starttls": (code, text),
                    "after": after,
                    "offers_starttls_after": smtp.has_extn("starttls"),
                    "auth_after": smtp.esmtp_features.get("auth"),
                    "refused": refused,
                    "version": smtp.sock.version(),
                }

        result = await in_thread(client)

    assert result["before"] == 250
    assert result["offers_starttls"] is True
    assert result["offers_auth_before"] is False
    assert result["starttls"] == (220, b"2.0.0 ready to start TLS")
    assert result["after"][0] == 250
    assert result["offers_starttls_after"] is False
    assert result["auth_after"] is not None
    assert result["auth_after"].split() == ["PLAIN", "LOGIN"]
    assert result["refused"] == {}

    [mail] = srv.sink.messages
    assert mail.content == MESSAGE
    tls = mail.session.tls
    assert tls is not None
    assert tls.version == result["version"]
    assert tls.version in ("TLSv1.2", "TLSv1.3")
    assert tls.cipher
    assert tls.bits is not None
    assert tls.bits >= 128
    assert tls.implicit is False
    assert tls.peer_certificate is None
    assert mail.session.helo_name == "after.test"
    assert mail.session.protocol == "ESMTPS"

    [(hook_tls, hook_helo, hook_esmtp)] = seen
    assert hook_tls == tls
    assert hook_helo is None
    assert hook_esmtp is False
    assert f"TLS established: id={mail.session.id} {tls.version} {tls.cipher}" in srv.logger.text


async def test_session_forgets_ehlo_after_starttls(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    mails: list[str | None] = []
    async with running(tls_files, events={"MAIL": lambda ctx: mails.append(ctx.address)}) as srv:
        client = await srv.connect()
        assert (await client.reply())[0] == 220
        assert (await client.command("EHLO before.test"))[0] == 250
        assert await client.command("STARTTLS") == (220, "2.0.0 ready to start TLS")
        await client.starttls(client_ssl_context)
        # RFC 3207 §4.2: the EHLO before TLS counts for nothing.
        code, text = await client.command("MAIL FROM:<a@client.test>")
        assert code == 503
        assert text == "5.5.1 send HELO or EHLO first"
        assert (await client.command("EHLO after.test"))[0] == 250
        assert (await client.command("MAIL FROM:<a@client.test>"))[0] == 250
        await client.aclose()
    assert mails == ["a@client.test"]


async def test_starttls_is_refused_inside_a_transaction(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        assert (await client.command("MAIL FROM:<a@client.test>"))[0] == 250
        code, text = await client.command("STARTTLS")
        assert code == 503
        assert "transaction" in text
        assert (await client.command("RSET"))[0] == 250
        assert (await client.command("STARTTLS"))[0] == 220
        await client.starttls(client_ssl_context)
        assert (await client.command("EHLO client.test"))[0] == 250
        # The MAIL from before TLS is gone with the RSET and with the handshake.
        assert (await client.command("RCPT TO:<b@mx.test>"))[0] == 503
        await client.aclose()


async def test_starttls_inside_tls_is_503_and_the_session_goes_on(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    calls: list[str] = []
    async with running(tls_files, events={"STARTTLS": lambda ctx: calls.append("hook")}) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        await client.command("STARTTLS")
        await client.starttls(client_ssl_context)
        await client.command("EHLO client.test")
        assert await client.command("STARTTLS") == (503, "5.5.1 TLS is already active")
        assert (await client.command("NOOP"))[0] == 250
        assert (await client.command("QUIT"))[0] == 221
        await client.aclose()
    assert calls == ["hook"]


async def test_pipelined_ehlo_then_starttls_last_is_fine(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    # RFC 2920 §3.1 lets STARTTLS end a pipelined group: nothing follows it.
    async with running(tls_files) as srv:
        client = await srv.connect()
        await client.reply()
        await client.send(b"EHLO client.test\r\nSTARTTLS\r\n")
        assert (await client.reply())[0] == 250
        assert (await client.reply())[0] == 220
        await client.starttls(client_ssl_context)
        assert (await client.command("EHLO client.test"))[0] == 250
        await client.aclose()


async def test_starttls_without_a_certificate_is_502_and_not_advertised(
    tls_files: dict[str, Path],
) -> None:
    async with running(None) as srv:
        client = await srv.connect()
        await client.reply()
        code, text = await client.command("EHLO client.test")
        assert code == 250
        assert "STARTTLS" not in text.split("\n")
        assert await client.command("STARTTLS") == (502, "5.5.1 STARTTLS not available")
        assert (await client.command("NOOP"))[0] == 250
        await client.aclose()

    def client_side() -> None:
        with smtplib_client(srv.port) as smtp, pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.starttls()

    async with running(None) as srv:
        await in_thread(client_side)


INJECTIONS = [
    pytest.param(b"MAIL FROM:<evil@x>\r\n", id="mail"),
    pytest.param(b"RSET\r\n", id="rset"),
    pytest.param(b"QUIT\r\n", id="quit"),
    pytest.param(b"EHLO evil\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n", id="transaction"),
    pytest.param(b"NOOP", id="partial-line"),
]


@pytest.mark.parametrize("injected", INJECTIONS)
async def test_bytes_after_starttls_in_the_same_send_are_never_run(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext, injected: bytes
) -> None:
    """CVE-2011-0411 / CVE-2024-34083: plaintext after STARTTLS must not be executed.

    The client plays both parts of the attack: a man in the middle appends commands
    to the STARTTLS packet, then the real client goes on with its handshake. A
    vulnerable server would run the appended commands once TLS is up.
    """
    calls: list[str] = []

    def record(name: str) -> Callable[[Any], None]:
        return lambda ctx: calls.append(f"{name} {ctx.argument}".strip())

    events: dict[str, Any] = {
        name: record(name) for name in ("EHLO", "MAIL", "RCPT", "RSET", "NOOP", "QUIT")
    }
    events["STARTTLS"] = record("STARTTLS")
    closes: list[Any] = []
    events["close"] = closes.append
    async with running(tls_files, events=events) as srv:
        client = await srv.connect()
        await client.reply()
        assert (await client.command("EHLO client.test"))[0] == 250
        await client.send(b"STARTTLS\r\n" + injected)
        assert await client.reply() == (220, "2.0.0 ready to start TLS")
        with pytest.raises(trio.BrokenResourceError):
            await client.starttls(client_ssl_context)
        await client.aclose()

    assert calls == ["EHLO client.test"]
    assert srv.sink.messages == []
    [session] = closes
    assert session.tls is None
    assert session.helo_name == "client.test"
    assert "command injection attempt" in srv.logger.text
    assert "(starttls-injection)" in srv.logger.text


async def test_plaintext_sent_after_the_220_fails_the_handshake_and_is_not_run(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    calls: list[str] = []
    async with running(tls_files, events={"MAIL": lambda ctx: calls.append("MAIL")}) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        assert (await client.command("STARTTLS"))[0] == 220
        await client.send(b"MAIL FROM:<evil@x>\r\n")
        rest = await client.read_to_eof()
        await client.aclose()
        # Only that connection ended: a proper client still gets through.
        second = await srv.connect()
        await second.reply()
        await second.command("EHLO client.test")
        await second.command("STARTTLS")
        await second.starttls(client_ssl_context)
        assert (await second.command("EHLO client.test"))[0] == 250
        await second.aclose()
    assert b"250" not in rest
    assert calls == []
    assert "TLS handshake failed" in srv.logger.text


async def test_client_that_never_finishes_the_handshake_is_dropped(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files, tls_handshake_timeout=HANDSHAKE_TIMEOUT) as srv:
        silent = await srv.connect()
        await silent.reply()
        assert (await silent.command("STARTTLS"))[0] == 220
        # Half a ClientHello, then nothing.
        await silent.send(client_hello(client_ssl_context)[:20])
        rest = await silent.read_to_eof()
        await silent.aclose()
    assert rest == b""
    assert "TLS handshake timed out" in srv.logger.text
    assert "(TLS handshake timeout)" in srv.logger.text


async def test_handshake_timeout_does_not_stop_other_clients(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files, tls_handshake_timeout=PATIENT_HANDSHAKE_TIMEOUT) as srv:
        silent = await srv.connect()
        await silent.reply()
        await silent.command("STARTTLS")

        def deliver() -> None:
            with smtplib_client(srv.port) as smtp:
                smtp.starttls(context=client_ssl_context)
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)

        # Delivered while the silent client still holds its connection open.
        await in_thread(deliver)
        assert len(srv.sink.messages) == 1
        assert await silent.read_to_eof() == b""
        await silent.aclose()


async def test_client_hello_on_the_plain_port_gets_421_and_is_closed(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files) as srv:
        confused = await srv.connect()
        # A TLS client does not wait for the greeting: its ClientHello races it.
        await confused.send(client_hello(client_ssl_context))
        code, greeting = await confused.reply()
        assert (code, greeting) == (220, "mx.test ESMTP trio_smtp")
        code, text = await confused.reply()
        assert code == 421
        assert "STARTTLS" in text

        def deliver() -> None:
            with smtplib_client(srv.port) as smtp:
                smtp.starttls(context=client_ssl_context)
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)

        # Nothing the confused client sent was run; others are served as usual.
        await in_thread(deliver)
        await confused.aclose()
    assert len(srv.sink.messages) == 1


async def test_smtp_ssl_against_the_plain_port_fails_cleanly(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files) as srv:

        def wrong_port() -> None:
            with pytest.raises(ssl.SSLError):
                smtplib.SMTP_SSL(
                    "127.0.0.1", srv.port, context=client_ssl_context, timeout=CLIENT_TIMEOUT
                )

        def deliver() -> None:
            with smtplib_client(srv.port) as smtp:
                smtp.starttls(context=client_ssl_context)
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)

        await in_thread(wrong_port)
        await in_thread(deliver)
    assert len(srv.sink.messages) == 1


async def test_client_that_does_not_trust_the_certificate_ends_only_its_connection(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    closes: list[Any] = []
    async with running(tls_files, events={"close": closes.append}) as srv:

        def distrustful() -> None:
            smtp = smtplib_client(srv.port)
            try:
                with pytest.raises(ssl.SSLCertVerificationError):
                    smtp.starttls(context=stranger)
            finally:
                smtp.close()

        def deliver() -> None:
            with smtplib_client(srv.port) as smtp:
                smtp.starttls(context=client_ssl_context)
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)

        await in_thread(distrustful)
        await in_thread(deliver)
    assert len(srv.sink.messages) == 1
    assert len(closes) == 2
    failed = [s for s in closes if s.tls is None]
    assert len(failed) == 1
    assert f"TLS handshake failed: id={failed[0].id}" in srv.logger.text
    assert f"Connection closed: id={failed[0].id} (TLS handshake failed)" in srv.logger.text


async def test_starttls_hook_refusal_closes_with_421(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    seen: list[Any] = []

    def on_starttls(ctx: Any) -> Reply:
        seen.append(ctx.session.tls)
        return Reply(554, "5.7.1 not from you")

    async with running(tls_files, events={"STARTTLS": on_starttls}) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        assert (await client.command("STARTTLS"))[0] == 220
        await client.starttls(client_ssl_context)
        # The hook's text goes out under 421, its enhanced code moved to class 4.
        assert await client.reply() == (421, "4.7.1 not from you")
        assert await client.read_to_eof() == b""
        await client.aclose()
    [tls] = seen
    assert tls is not None
    assert tls.version is not None


async def test_require_tls_refuses_mail_until_starttls(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files, require_tls=True) as srv:
        client = await srv.connect()
        await client.reply()
        await client.command("EHLO client.test")
        assert await client.command("MAIL FROM:<a@client.test>") == (
            530,
            "5.7.0 must issue a STARTTLS command first",
        )
        assert (await client.command("NOOP"))[0] == 250
        await client.command("STARTTLS")
        await client.starttls(client_ssl_context)
        await client.command("EHLO client.test")
        assert (await client.command("MAIL FROM:<a@client.test>"))[0] == 250
        await client.aclose()


async def test_connect_hook_sees_no_tls_on_the_plain_port(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    at_connect: list[Any] = []
    at_close: list[Any] = []
    events = {
        "connect": lambda session: at_connect.append(session.tls),
        "close": lambda session: at_close.append(session.tls),
    }
    async with running(tls_files, events=events) as srv:

        def deliver() -> None:
            with smtplib_client(srv.port) as smtp:
                smtp.starttls(context=client_ssl_context)
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)

        await in_thread(deliver)
    # The server has stopped, so every close hook has run.
    assert at_connect == [None]
    assert at_close[0] is not None
    assert at_close[0] == srv.sink.messages[0].session.tls
