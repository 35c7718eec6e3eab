"""Implicit TLS (SMTPS, RFC 8314) on ``tls_port``, and SNI, over real sockets.

The helpers (server runner, raw client, log collector) are shared with
``test_starttls.py``.
"""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme
from test_starttls import (
    CLIENT_TIMEOUT,
    MESSAGE,
    PATIENT_HANDSHAKE_TIMEOUT,
    RawClient,
    Running,
    allow_auth,
    in_thread,
    running,
)

from trio_smtp._tls import server_ssl_context

SNI_NAMES = ("alpha.test", "beta.test")


@attrs.frozen(kw_only=True)
class SniFiles:
    by_name: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def sni_files(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> SniFiles:
    """A certificate for each of two names, from the CA the client trusts."""
    directory = tmp_path_factory.mktemp("sni")
    by_name = {}
    for name in SNI_NAMES:
        leaf = tls_ca.issue_cert(name)
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        by_name[name] = (str(cert), str(key))
    return SniFiles(by_name=by_name)


def dns_names(cert: dict[str, Any] | None) -> set[str]:
    assert cert is not None
    return {value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}


async def smtps_client(
    srv: Running, context: ssl.SSLContext, server_hostname: str | None = "localhost"
) -> tuple[RawClient, trio.SSLStream[trio.abc.Stream]]:
    """A raw client through the handshake on the implicit-TLS port."""
    client = await srv.connect(srv.server.addresses[-1][1])
    stream = await client.starttls(context, server_hostname=server_hostname)
    return client, stream


async def test_smtp_ssl_delivers_on_the_tls_port(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files, tls_port=0, events={"AUTH": allow_auth}) as srv:
        addresses = srv.server.addresses
        tls_port = addresses[1][1]

        def client() -> tuple[bool, str | None, tuple[int, bytes]]:
            with smtplib.SMTP_SSL(
                "127.0.0.1",
                tls_port,
                context=client_ssl_context,
                local_hostname="client.test",
                timeout=CLIENT_TIMEOUT,
            ) as smtp:
                smtp.ehlo()
                offers = (smtp.has_extn("starttls"), smtp.esmtp_features.get("auth"))
                again = smtp.docmd("STARTTLS")
                smtp.login("user", "right")
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)
                return offers[0], offers[1], again

        offers_starttls, auth, again = await in_thread(client)

    # The plain listener comes first, then the implicit-TLS one.
    assert [host for host, _ in addresses] == ["127.0.0.1", "127.0.0.1"]
    assert addresses[0][1] == srv.port != tls_port
    assert offers_starttls is False
    assert auth is not None
    assert auth.split() == ["PLAIN", "LOGIN"]
    assert again == (503, b"5.5.1 TLS is already active")
    [mail] = srv.sink.messages
    assert mail.content == MESSAGE
    assert mail.session.tls is not None
    assert mail.session.tls.implicit is True
    assert mail.session.tls.version in ("TLSv1.2", "TLSv1.3")
    assert mail.session.authenticated_as == "user"
    assert mail.session.protocol == "ESMTPSA"
    assert "tls=implicit" in srv.logger.text


async def test_tls_port_alone(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    async with running(tls_files, port=None, tls_port=0) as srv:
        [(host, port)] = srv.server.addresses
        assert port == srv.port
        client, _ = await smtps_client(srv, client_ssl_context)
        assert await client.reply() == (220, "mx.test ESMTP trio_smtp")
        await client.aclose()
    assert host == "127.0.0.1"


async def test_connect_hook_sees_tls_details_on_smtps(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    seen: list[Any] = []
    async with running(tls_files, tls_port=0, events={"connect": seen.append}) as srv:
        client, stream = await smtps_client(srv, client_ssl_context)
        assert (await client.reply())[0] == 220
        version, cipher = stream.version(), stream.cipher()
        await client.aclose()
    [session] = seen
    assert session.tls is not None
    assert session.tls.version == version
    assert cipher is not None
    assert session.tls.cipher == cipher[0]
    assert session.tls.server_name == "localhost"
    assert session.tls.implicit is True


@pytest.mark.parametrize("name", SNI_NAMES)
@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
async def test_sni_picks_the_certificate_for_the_name(
    tls_files: dict[str, Path],
    client_ssl_context: ssl.SSLContext,
    sni_files: SniFiles,
    name: str,
    implicit: bool,
) -> None:
    connect_names: list[str | None] = []

    def on_connect(session: Any) -> None:
        connect_names.append(session.tls.server_name if session.tls else None)

    async with running(
        tls_files, tls_port=0, tls_sni=sni_files.by_name, events={"connect": on_connect}
    ) as srv:
        if implicit:
            # check_hostname is on: the handshake fails unless the certificate is for `name`.
            client, stream = await smtps_client(srv, client_ssl_context, name)
            await client.reply()
        else:
            client = await srv.connect()
            await client.reply()
            await client.command("STARTTLS")
            stream = await client.starttls(client_ssl_context, server_hostname=name)
        assert dns_names(stream.getpeercert()) == {name}
        await client.command("EHLO client.test")
        await client.command("MAIL FROM:<a@client.test>")
        await client.command("RCPT TO:<b@mx.test>")
        await client.command("DATA")
        assert (await client.command(MESSAGE.decode() + "."))[0] == 250
        await client.aclose()
    [mail] = srv.sink.messages
    assert mail.session.tls is not None
    assert mail.session.tls.server_name == name
    assert mail.session.tls.implicit is implicit
    assert connect_names == ([name] if implicit else [None])
    assert f"sni={name}" in srv.logger.text


@pytest.mark.parametrize("server_hostname", [None, "gamma.test"], ids=["no-sni", "unknown"])
async def test_other_names_get_the_default_certificate(
    tls_files: dict[str, Path],
    sni_files: SniFiles,
    tls_ca: trustme.CA,
    server_hostname: str | None,
) -> None:
    # Hostname checking off: the point is which certificate comes back.
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    context.check_hostname = False
    async with running(tls_files, tls_port=0, tls_sni=sni_files.by_name) as srv:
        client, stream = await smtps_client(srv, context, server_hostname)
        assert (await client.reply())[0] == 220
        names = dns_names(stream.getpeercert())
        await client.aclose()
    assert "localhost" in names
    assert names.isdisjoint(SNI_NAMES)


async def test_smtps_client_that_never_finishes_the_handshake_is_dropped(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    connects: list[Any] = []
    async with running(
        tls_files,
        tls_port=0,
        tls_handshake_timeout=PATIENT_HANDSHAKE_TIMEOUT,
        events={"connect": connects.append},
    ) as srv:
        silent = await srv.connect(srv.server.addresses[1][1])
        # No greeting before the handshake: the server says nothing and hangs up.
        rest = await silent.read_to_eof()
        await silent.aclose()
        # Meanwhile and afterwards, others are served.
        client, _ = await smtps_client(srv, client_ssl_context)
        assert (await client.reply())[0] == 220
        await client.aclose()
    assert rest == b""
    assert len(connects) == 1
    assert "TLS handshake timed out" in srv.logger.text


async def test_plaintext_client_on_the_tls_port_gets_no_greeting(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    calls: list[str] = []
    events = {
        "connect": lambda session: calls.append("connect"),
        "EHLO": lambda ctx: calls.append("EHLO"),
    }
    async with running(tls_files, tls_port=0, events=events) as srv:
        plain = await srv.connect(srv.server.addresses[1][1])
        await plain.send(b"EHLO client.test\r\n")
        rest = await plain.read_to_eof()
        await plain.aclose()
        client, _ = await smtps_client(srv, client_ssl_context)
        assert (await client.reply())[0] == 220
        await client.aclose()
    assert b"220" not in rest
    assert b"250" not in rest
    assert calls == ["connect"]
    assert "TLS handshake failed" in srv.logger.text


async def test_smtps_client_that_does_not_trust_the_certificate_ends_only_its_connection(
    tls_files: dict[str, Path], client_ssl_context: ssl.SSLContext
) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    async with running(tls_files, tls_port=0) as srv:
        tls_port = srv.server.addresses[1][1]

        def distrustful() -> None:
            with pytest.raises(ssl.SSLCertVerificationError):
                smtplib.SMTP_SSL("127.0.0.1", tls_port, context=stranger, timeout=CLIENT_TIMEOUT)

        def deliver() -> None:
            with smtplib.SMTP_SSL(
                "127.0.0.1", tls_port, context=client_ssl_context, timeout=CLIENT_TIMEOUT
            ) as smtp:
                smtp.sendmail("a@client.test", ["b@mx.test"], MESSAGE)

        await in_thread(distrustful)
        await in_thread(deliver)
    assert len(srv.sink.messages) == 1
    assert srv.logger.text.count("TLS handshake failed:") == 1


@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
async def test_hooks_see_the_client_certificate(
    tls_files: dict[str, Path], tls_ca: trustme.CA, tmp_path: Path, implicit: bool
) -> None:
    # ServerConfig has no key for a client CA yet: give the server such a context
    # directly, as server_ssl_context() builds it.
    client_ca = tmp_path / "client-ca.pem"
    tls_ca.cert_pem.write_to_path(str(client_ca))
    context = server_ssl_context(tls_files["cert"], tls_files["key"], client_ca=client_ca)
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    tls_ca.issue_cert("client@client.test", common_name="relay.client.test").configure_cert(
        client_context
    )
    seen: dict[str, Any] = {}

    def on_connect(session: Any) -> None:
        seen["connect"] = session.tls

    def on_starttls(ctx: Any) -> None:
        seen["STARTTLS"] = ctx.session.tls

    events = {"connect": on_connect, "STARTTLS": on_starttls}
    async with running(tls_files, tls_port=0, events=events) as srv:
        srv.server.ssl_context = context
        if implicit:
            client, _ = await smtps_client(srv, client_context)
            await client.reply()
        else:
            client = await srv.connect()
            await client.reply()
            await client.command("STARTTLS")
            await client.starttls(client_context)
        assert (await client.command("EHLO client.test"))[0] == 250
        await client.aclose()
    tls = seen["connect" if implicit else "STARTTLS"]
    assert tls is not None
    assert tls.peer_certificate is not None
    assert dict(item[0] for item in tls.peer_certificate["subject"])["commonName"] == (
        "relay.client.test"
    )
    if not implicit:
        assert seen["connect"] is None
