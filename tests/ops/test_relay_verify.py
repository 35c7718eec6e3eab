"""--relay verifies the upstream's certificate for every TLS, STARTTLS included (issue 12)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from _proc import TIMEOUT, cli

MESSAGE = b"Subject: hop\r\n\r\nover starttls\r\n"


def _send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.sendmail("a@x.test", ["b@y.test"], MESSAGE)


def test_a_starttls_upstream_whose_certificate_does_not_verify_is_refused_by_default(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    maildir = tmp_path / "Maildir"
    with cli(
        "--port", "0", "--hostname", "up.test", "--maildir", str(maildir),
        "--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"]),
    ) as upstream:  # fmt: skip
        target = f"127.0.0.1:{upstream.port()}"  # plain SMTP: STARTTLS is offered
        relay_args = ["--port", "0", "--hostname", "mx.test", "--relay", target]
        relay_args += ["--relay-from", "127.0.0.1/32"]

        # The test CA is not in the system store: the certificate does not verify.
        with cli(*relay_args) as strict:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                _send(strict.port())
            # A temporary refusal: the sender keeps the message and retries.
            assert refused.value.smtp_code == 451
            error = refused.value.smtp_error
            assert isinstance(error, bytes)
            assert error.startswith(b"4.7.5 upstream certificate")
            line = strict.wait_err(r"\[ERROR\] - Message failed: ").string
            assert strict.stop() == 0
        assert f"upstream=smtp://{target}" in line
        assert "certificate verify failed for 127.0.0.1" in line
        # Not sent in the clear instead, nor over the unverified TLS.
        assert not (maildir / "new").exists() or list((maildir / "new").iterdir()) == []

        # The same upstream, trusted (SSL_CERT_FILE is the system store for OpenSSL).
        with cli(*relay_args, env={"SSL_CERT_FILE": str(tls_files["ca"])}) as trusting:
            _send(trusting.port())
            trusting.wait_err(r"Message accepted: .* upstream=")
            assert trusting.stop() == 0
        # The explicit opt-out for a self-signed upstream.
        with cli(*relay_args, "--relay-no-verify") as lenient:
            _send(lenient.port())
            lenient.wait_err(r"Message accepted: .* upstream=")
            assert lenient.stop() == 0
        upstream.wait_err(r"Message accepted: ")
        upstream.wait_err(r"Message accepted: ")
        assert upstream.stop() == 0
    stored = sorted(p.read_bytes() for p in (maildir / "new").iterdir())
    assert len(stored) == 2
    for message in stored:
        assert message.endswith(MESSAGE)
        assert b"by up.test with ESMTPS" in message  # both hops over TLS
