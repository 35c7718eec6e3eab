"""The server SSL context, SNI, tls_info() and the localhost certificate tooling.

Handshakes run for real, over in-memory streams, between a server-side
:class:`trio.SSLStream` using :func:`server_ssl_context` and a client context that
trusts a trustme CA.
"""

from __future__ import annotations

import datetime
import os
import shutil
import ssl
import sys
import warnings
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trio_smtp import certs
from trio_smtp._tls import (
    TLS_HANDSHAKE_TIMEOUT,
    TLSConfigError,
    server_ssl_context,
    tls_info,
)

REPO = Path(certs.__file__).resolve().parents[1]
COMMITTED_CERT = REPO / "certs" / "localhost.pem"
COMMITTED_KEY = REPO / "certs" / "localhost-key.pem"


@attrs.frozen(kw_only=True)
class Pair:
    cert: Path
    key: Path


@attrs.frozen(kw_only=True)
class PKI:
    ca: trustme.CA
    ca_file: Path
    localhost: Pair
    mail_example_org: Pair
    wildcard_example_net: Pair
    client_ca_file: Path
    client_cert: trustme.LeafCert
    stranger_cert: trustme.LeafCert
    garbage: Path
    encrypted_key: Path


def _write_pair(leaf: trustme.LeafCert, directory: Path, name: str) -> Pair:
    pair = Pair(cert=directory / f"{name}.pem", key=directory / f"{name}-key.pem")
    leaf.cert_chain_pems[0].write_to_path(str(pair.cert))
    leaf.private_key_pem.write_to_path(str(pair.key))
    return pair


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_ca = trustme.CA()
    client_ca_file = directory / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_file))
    localhost = ca.issue_cert("localhost", "127.0.0.1")
    garbage = directory / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    key = serialization.load_pem_private_key(localhost.private_key_pem.bytes(), None)
    encrypted_key = directory / "encrypted-key.pem"
    encrypted_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return PKI(
        ca=ca,
        ca_file=ca_file,
        localhost=_write_pair(localhost, directory, "localhost"),
        mail_example_org=_write_pair(
            ca.issue_cert("mail.example.org"), directory, "mail.example.org"
        ),
        wildcard_example_net=_write_pair(
            ca.issue_cert("*.example.net"), directory, "wildcard.example.net"
        ),
        client_ca_file=client_ca_file,
        client_cert=client_ca.issue_cert("client@example.org"),
        # Issued by the server's CA, which the server does not trust for clients.
        stranger_cert=ca.issue_cert("stranger@example.org"),
        garbage=garbage,
        encrypted_key=encrypted_key,
    )


def _client_context(ca_file: Path, *, check_hostname: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = check_hostname
    return context


async def _handshake(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_hostname: str | None = "localhost",
) -> tuple[trio.SSLStream[Any], trio.SSLStream[Any]]:
    client_transport, server_transport = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_transport, server_context, server_side=True)
    client = trio.SSLStream(client_transport, client_context, server_hostname=server_hostname)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client


async def _failed_handshake(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_hostname: str | None = "localhost",
) -> tuple[BaseException | None, BaseException | None]:
    """Run a handshake that should fail; return the (server, client) errors' causes."""
    client_transport, server_transport = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_transport, server_context, server_side=True)
    client = trio.SSLStream(client_transport, client_context, server_hostname=server_hostname)
    errors: dict[str, BaseException | None] = {"server": None, "client": None}

    async def serve() -> None:
        try:
            await server.do_handshake()
        except trio.BrokenResourceError as exc:
            errors["server"] = exc.__cause__ or exc
        finally:
            await trio.aclose_forcefully(server)

    async def connect() -> None:
        try:
            await client.do_handshake()
            # Under TLS 1.3 the client is done before the server has judged its
            # certificate; reading is what surfaces the server's alert.
            await client.receive_some()
        except trio.BrokenResourceError as exc:
            errors["client"] = exc.__cause__ or exc
        finally:
            await trio.aclose_forcefully(client)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(connect)
    return errors["server"], errors["client"]


async def _refused_handshake(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_hostname: str | None = "localhost",
) -> ssl.SSLError:
    """Run a handshake that the server must refuse; return the server's SSL error."""
    error, _ = await _failed_handshake(server_context, client_context, server_hostname)
    assert isinstance(error, ssl.SSLError), f"the server did not refuse: {error!r}"
    return error


def _san(stream: trio.SSLStream[Any]) -> tuple[tuple[str, str], ...]:
    cert = stream.getpeercert()
    assert cert is not None
    return tuple(cert["subjectAltName"])


# --- the context itself ---------------------------------------------------------------


def test_context_is_hardened(pki: PKI) -> None:
    context = server_ssl_context(pki.localhost.cert, pki.localhost.key)
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode == ssl.CERT_NONE
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:
        assert cipher["kea"] in ("kx-ecdhe", "kx-dhe"), cipher["name"]
        assert cipher["aead"], cipher["name"]


def test_handshake_timeout_is_thirty_seconds() -> None:
    assert TLS_HANDSHAKE_TIMEOUT == 30.0


async def test_modern_client_gets_tls_1_3_and_tls_info_reports_it(pki: PKI) -> None:
    context = server_ssl_context(pki.localhost.cert, pki.localhost.key)
    server, client = await _handshake(context, _client_context(pki.ca_file))
    assert ("DNS", "localhost") in _san(client)
    info = tls_info(server, implicit=True)
    assert info.version == "TLSv1.3"
    assert info.cipher is not None
    assert info.cipher.startswith("TLS_")
    assert info.cipher == client.cipher()[0]
    assert info.bits is not None
    assert info.bits >= 128
    assert info.server_name == "localhost"
    assert info.peer_certificate is None
    assert info.implicit is True
    assert tls_info(server, implicit=False).implicit is False


async def test_tls_1_2_client_gets_forward_secret_aead_cipher(pki: PKI) -> None:
    context = server_ssl_context(pki.localhost.cert, pki.localhost.key)
    client_context = _client_context(pki.ca_file)
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    server, _ = await _handshake(context, client_context)
    info = tls_info(server, implicit=False)
    assert info.version == "TLSv1.2"
    assert info.cipher is not None
    assert info.cipher.startswith("ECDHE-")
    assert "GCM" in info.cipher or "CHACHA20" in info.cipher


async def test_tls_1_1_client_is_refused(pki: PKI) -> None:
    context = server_ssl_context(pki.localhost.cert, pki.localhost.key)
    client_context = _client_context(pki.ca_file)
    with warnings.catch_warnings():
        # Python rightly deprecates TLS 1.1; this client exists to be refused.
        warnings.simplefilter("ignore", DeprecationWarning)
        client_context.minimum_version = ssl.TLSVersion.TLSv1
        client_context.maximum_version = ssl.TLSVersion.TLSv1_1
    # Let OpenSSL offer TLS 1.1 at all, so that it is the server that says no.
    client_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    error = await _refused_handshake(context, client_context)
    assert error.reason == "UNSUPPORTED_PROTOCOL"


async def test_client_offering_only_cbc_sha1_cipher_is_refused(pki: PKI) -> None:
    context = server_ssl_context(pki.localhost.cert, pki.localhost.key)
    client_context = _client_context(pki.ca_file)
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    client_context.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    error = await _refused_handshake(context, client_context)
    assert error.reason == "NO_SHARED_CIPHER"


# --- SNI ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sni_context(pki: PKI) -> ssl.SSLContext:
    return server_ssl_context(
        pki.localhost.cert,
        pki.localhost.key,
        sni={
            # Keys are matched without regard to case or a trailing dot.
            "MAIL.Example.ORG.": (pki.mail_example_org.cert, pki.mail_example_org.key),
            "*.example.net": (pki.wildcard_example_net.cert, pki.wildcard_example_net.key),
        },
    )


@pytest.mark.parametrize(
    ("server_name", "expected_san"),
    [
        ("mail.example.org", ("DNS", "mail.example.org")),
        ("smtp.example.net", ("DNS", "*.example.net")),
        ("localhost", ("DNS", "localhost")),
        # Unknown names, and names a one-label wildcard does not cover, get the default.
        ("other.example.org", ("DNS", "localhost")),
        ("example.net", ("DNS", "localhost")),
        ("a.b.example.net", ("DNS", "localhost")),
    ],
)
async def test_sni_selects_certificate(
    pki: PKI,
    sni_context: ssl.SSLContext,
    server_name: str,
    expected_san: tuple[str, str],
) -> None:
    # Hostname checking is off so that the default certificate can be inspected
    # when it does not match; the chain is still verified.
    client_context = _client_context(pki.ca_file, check_hostname=False)
    server, client = await _handshake(sni_context, client_context, server_name)
    assert _san(client)[0] == expected_san
    assert tls_info(server, implicit=False).server_name == server_name


async def test_sni_certificate_verifies_with_hostname_checking(
    pki: PKI, sni_context: ssl.SSLContext
) -> None:
    server, client = await _handshake(
        sni_context, _client_context(pki.ca_file), "relay.example.net"
    )
    assert _san(client) == (("DNS", "*.example.net"),)
    assert tls_info(server, implicit=True).server_name == "relay.example.net"


async def test_client_without_sni_gets_default_certificate(
    pki: PKI, sni_context: ssl.SSLContext
) -> None:
    client_context = _client_context(pki.ca_file, check_hostname=False)
    server, client = await _handshake(sni_context, client_context, None)
    assert ("DNS", "localhost") in _san(client)
    assert tls_info(server, implicit=False).server_name is None


@pytest.mark.parametrize("name", ["", "*", "mail.*.org", "m*il.example.org", "a..example.org"])
def test_invalid_sni_name_is_refused(pki: PKI, name: str) -> None:
    with pytest.raises(TLSConfigError, match="invalid SNI server name") as info:
        server_ssl_context(
            pki.localhost.cert,
            pki.localhost.key,
            sni={name: (pki.mail_example_org.cert, pki.mail_example_org.key)},
        )
    assert repr(name) in str(info.value)


# --- client certificates --------------------------------------------------------------


async def test_client_certificate_is_reported(pki: PKI) -> None:
    context = server_ssl_context(
        pki.localhost.cert, pki.localhost.key, client_ca=pki.client_ca_file
    )
    assert context.verify_mode == ssl.CERT_OPTIONAL
    client_context = _client_context(pki.ca_file)
    pki.client_cert.configure_cert(client_context)
    server, _ = await _handshake(context, client_context)
    peer = tls_info(server, implicit=False).peer_certificate
    assert peer is not None
    assert ("email", "client@example.org") in peer["subjectAltName"]


async def test_client_without_certificate_is_let_in(pki: PKI) -> None:
    context = server_ssl_context(
        pki.localhost.cert, pki.localhost.key, client_ca=pki.client_ca_file
    )
    server, _ = await _handshake(context, _client_context(pki.ca_file))
    info = tls_info(server, implicit=False)
    assert info.version is not None
    assert info.peer_certificate is None


async def test_client_certificate_from_unknown_ca_is_refused(pki: PKI) -> None:
    context = server_ssl_context(
        pki.localhost.cert, pki.localhost.key, client_ca=pki.client_ca_file
    )
    client_context = _client_context(pki.ca_file)
    pki.stranger_cert.configure_cert(client_context)
    error = await _refused_handshake(context, client_context)
    assert error.reason == "CERTIFICATE_VERIFY_FAILED"


async def test_client_certificate_is_not_requested_without_client_ca(pki: PKI) -> None:
    context = server_ssl_context(pki.localhost.cert, pki.localhost.key)
    client_context = _client_context(pki.ca_file)
    pki.client_cert.configure_cert(client_context)
    server, _ = await _handshake(context, client_context)
    assert tls_info(server, implicit=False).peer_certificate is None


# --- loading errors -------------------------------------------------------------------


def _assert_one_line(error: TLSConfigError, path: Path) -> None:
    message = str(error)
    assert repr(str(path)) in message
    assert "\n" not in message
    assert "_ssl.c" not in message
    # No chained OpenSSL or OS error in the traceback.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_missing_certificate(pki: PKI, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError) as info:
        server_ssl_context(missing, pki.localhost.key)
    assert str(info.value) == (
        f"cannot load TLS certificate {str(missing)!r}: No such file or directory"
    )
    _assert_one_line(info.value, missing)


def test_missing_key(pki: PKI, tmp_path: Path) -> None:
    missing = tmp_path / "nope-key.pem"
    with pytest.raises(TLSConfigError) as info:
        server_ssl_context(pki.localhost.cert, str(missing))
    assert str(info.value) == (
        f"cannot load TLS private key {str(missing)!r}: No such file or directory"
    )
    _assert_one_line(info.value, missing)


def test_directory_instead_of_certificate(pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="Is a directory") as info:
        server_ssl_context(tmp_path, pki.localhost.key)
    _assert_one_line(info.value, tmp_path)


def test_certificate_that_is_not_pem(pki: PKI) -> None:
    with pytest.raises(TLSConfigError, match="no PEM certificate found") as info:
        server_ssl_context(pki.garbage, pki.localhost.key)
    _assert_one_line(info.value, pki.garbage)


def test_key_that_is_not_pem(pki: PKI) -> None:
    with pytest.raises(TLSConfigError, match="no PEM private key found") as info:
        server_ssl_context(pki.localhost.cert, pki.garbage)
    _assert_one_line(info.value, pki.garbage)


def test_key_that_does_not_match_certificate(pki: PKI) -> None:
    with pytest.raises(TLSConfigError, match="does not match certificate") as info:
        server_ssl_context(pki.localhost.cert, pki.mail_example_org.key)
    _assert_one_line(info.value, pki.mail_example_org.key)
    assert repr(str(pki.localhost.cert)) in str(info.value)


def test_encrypted_key_is_refused_without_prompting(pki: PKI) -> None:
    # Without a password callback OpenSSL would read a passphrase from the terminal.
    with pytest.raises(TLSConfigError, match="encrypted") as info:
        server_ssl_context(pki.localhost.cert, pki.encrypted_key)
    _assert_one_line(info.value, pki.encrypted_key)


def test_missing_sni_certificate(pki: PKI, tmp_path: Path) -> None:
    missing = tmp_path / "sni.pem"
    with pytest.raises(TLSConfigError, match="No such file or directory") as info:
        server_ssl_context(
            pki.localhost.cert,
            pki.localhost.key,
            sni={"mail.example.org": (missing, pki.mail_example_org.key)},
        )
    _assert_one_line(info.value, missing)


def test_missing_client_ca(pki: PKI, tmp_path: Path) -> None:
    missing = tmp_path / "client-ca.pem"
    with pytest.raises(TLSConfigError) as info:
        server_ssl_context(pki.localhost.cert, pki.localhost.key, client_ca=missing)
    assert str(info.value) == (
        f"cannot load TLS client CA {str(missing)!r}: No such file or directory"
    )
    _assert_one_line(info.value, missing)


def test_client_ca_that_is_not_pem(pki: PKI) -> None:
    with pytest.raises(TLSConfigError, match="no certificate or crl found") as info:
        server_ssl_context(pki.localhost.cert, pki.localhost.key, client_ca=pki.garbage)
    _assert_one_line(info.value, pki.garbage)


def test_tls_config_error_is_a_value_error() -> None:
    assert issubclass(TLSConfigError, ValueError)


# --- the committed localhost certificate ----------------------------------------------


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1", "::1"])
async def test_committed_certificate_verifies(server_hostname: str) -> None:
    context = server_ssl_context(COMMITTED_CERT, COMMITTED_KEY)
    client_context = ssl.create_default_context(cafile=str(COMMITTED_CERT))
    # What Python 3.13's default context adds; keeps the certificate usable there.
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT
    server, client = await _handshake(context, client_context, server_hostname)
    assert client.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    assert tls_info(server, implicit=False).version in ("TLSv1.2", "TLSv1.3")


async def test_committed_certificate_does_not_verify_other_names() -> None:
    context = server_ssl_context(COMMITTED_CERT, COMMITTED_KEY)
    client_context = ssl.create_default_context(cafile=str(COMMITTED_CERT))
    _, error = await _failed_handshake(context, client_context, "example.org")
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    assert "Hostname mismatch" in str(error)


def test_committed_certificate_is_valid_for_years() -> None:
    certificate = x509.load_pem_x509_certificate(COMMITTED_CERT.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    # Regenerate (see certs/README.md) when this starts failing.
    assert certificate.not_valid_after_utc - now > datetime.timedelta(days=365)
    assert certificate.issuer == certificate.subject


# --- python -m trio_smtp.certs --------------------------------------------------------


async def _assert_pair_works(cert: Path, key: Path, ca_file: Path) -> None:
    context = server_ssl_context(cert, key)
    for server_hostname in ("localhost", "127.0.0.1", "::1"):
        client_context = ssl.create_default_context(cafile=str(ca_file))
        client_context.verify_flags |= ssl.VERIFY_X509_STRICT
        _, client = await _handshake(context, client_context, server_hostname)
        sans = _san(client)
        assert ("DNS", "localhost") in sans
        assert ("IP Address", "127.0.0.1") in sans


async def test_certs_command_writes_a_loadable_pair(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "trio_smtp.certs", "--dir", str(out), "--days", "2"],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    cert, key = out / "localhost.pem", out / "localhost-key.pem"
    assert str(cert) in stdout
    await _assert_pair_works(cert, key, cert)
    # --days is honoured.
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    lifetime = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=1) < lifetime <= datetime.timedelta(days=2)
    # The key is not left readable by others.
    assert key.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("backend", certs.BACKENDS)
async def test_every_backend_makes_a_trusted_pair(tmp_path: Path, backend: str) -> None:
    if backend == "openssl" and shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    files = certs.generate(tmp_path, days=30, backend=backend)
    assert files.backend == backend
    assert (files.cert, files.key) == (tmp_path / "localhost.pem", tmp_path / "localhost-key.pem")
    if backend == "trustme":
        assert files.ca == tmp_path / "ca.pem"
        assert files.ca.read_bytes() in files.cert.read_bytes()
    else:
        assert files.ca is None
        certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
        assert certificate.issuer == certificate.subject
    # Clients trust localhost.pem itself, whichever backend made it.
    await _assert_pair_works(files.cert, files.key, files.cert)


def test_certs_command_fails_cleanly_without_any_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unavailable(directory: Path, days: int) -> certs.CertFiles:
        raise certs._BackendUnavailable("not here")

    for name in certs.BACKENDS:
        monkeypatch.setitem(certs._GENERATORS, name, unavailable)
    assert certs.main(["--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot generate a certificate: not here; not here; not here" in err
    assert not (tmp_path / "localhost.pem").exists()


def test_certs_command_refuses_nonpositive_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        certs.main(["--dir", str(tmp_path), "--days", "0"])
    assert info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
    with pytest.raises(certs.CertGenerationError, match="at least 1, not -5"):
        certs.generate(tmp_path, days=-5)
    assert not (tmp_path / "localhost.pem").exists()
