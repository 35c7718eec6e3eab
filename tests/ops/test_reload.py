"""SIGHUP: new certificates (openssl s_client sees them) while old connections finish."""

from __future__ import annotations

import re
import signal
import smtplib
import ssl
import subprocess
from pathlib import Path

import trustme
from _proc import TIMEOUT, cli
from conftest import require_tool


def served_certificate(port: int) -> str:
    openssl = require_tool("openssl")
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts"],
        input="",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    assert m, result.stdout + result.stderr
    return m[0]


def install(leaf: trustme.LeafCert, cert: Path, key: Path) -> str:
    leaf.private_key_pem.write_to_path(str(key))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    return leaf.cert_chain_pems[0].bytes().decode().strip()


def test_sighup_loads_the_new_certificate_and_keeps_the_old_on_a_bad_file(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = install(ca.issue_cert("127.0.0.1", "mx.test"), cert, key)
    with cli(
        "--port", "0", "--tls-port", "0", "--hostname", "mx.test",
        "--tls-cert", str(cert), "--tls-key", str(key),
    ) as server:  # fmt: skip
        server.port()
        tls_port = int(server.wait_err(r"port: (\d+) \(smtps\)")[1])
        assert served_certificate(tls_port) == first
        # An old connection, in the middle of a transaction, when the signal comes.
        context = ssl.create_default_context()
        ca.configure_trust(context)
        old = smtplib.SMTP_SSL("127.0.0.1", tls_port, timeout=TIMEOUT, context=context)
        old.ehlo("old.test")
        old.mail("a@x.test")
        old.rcpt("b@y.test")
        assert old.docmd("DATA")[0] == 354
        second = install(ca.issue_cert("127.0.0.1", "mx2.test"), cert, key)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_err(rf"Reload: certificate {re.escape(str(cert))} loaded")
        assert served_certificate(tls_port) == second
        # The old connection finishes its message over the old TLS session.
        old.send(b"Subject: old\r\n\r\nstill here\r\n.\r\n")
        assert old.getreply()[0] == 250
        old.quit()
        # A broken renewal (half-written file): logged, the good certificate stays.
        cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
        server.proc.send_signal(signal.SIGHUP)
        line = server.wait_err(r"\[ERROR\] - Reload: keeping the old certificate").string
        assert served_certificate(tls_port) == second
        assert server.stop() == 0
    assert str(cert) in line


def test_sighup_reloads_the_auth_file(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:one\n")
    with cli(
        "--port", "0", "--hostname", "mx.test", "--auth-file", str(users), "--auth-insecure"
    ) as server:
        port = server.port()

        def login(password: str) -> int:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.ehlo()
                try:
                    return client.login("alice", password)[0]
                except smtplib.SMTPAuthenticationError as exc:
                    return exc.smtp_code

        assert login("one") == 235
        users.write_text("alice:two\n")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_err(r"Reload: auth file .* loaded")
        assert login("two") == 235
        assert login("one") == 535
        users.write_text("alice:\n")  # refused by the loader: the old file stays
        server.proc.send_signal(signal.SIGHUP)
        server.wait_err(r"\[ERROR\] - Reload: keeping the old auth file")
        assert login("two") == 235
        assert server.stop() == 0


def test_the_supervisor_passes_sighup_to_every_worker(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:one\n")
    with cli(
        "--port", "0", "--hostname", "mx.test", "--auth-file", str(users), "--auth-insecure",
        "--workers", "2",
    ) as server:  # fmt: skip
        server.wait_err(r"worker: \d")
        server.wait_err(r"worker: \d")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_err(r"Reload: auth file .* loaded")
        server.wait_err(r"Reload: auth file .* loaded")
        assert server.stop() == 0
