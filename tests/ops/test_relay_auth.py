"""--relay smtps:// with AUTH into a second trio_smtp: verified by default, never logged."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from _proc import TIMEOUT, cli


def test_relay_over_smtps_with_auth(tls_files: dict[str, Path], tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("relay:s3cret-pw\n")
    creds = tmp_path / "relay-auth"
    creds.write_text("relay:s3cret-pw\n")
    maildir = tmp_path / "Maildir"
    with cli(
        "--port", "0", "--tls-port", "0", "--hostname", "up.test", "--maildir", str(maildir),
        "--tls-cert", str(tls_files["cert"]), "--tls-key", str(tls_files["key"]),
        "--auth-file", str(users), "--auth-required", "--log-level", "debug",
    ) as upstream:  # fmt: skip
        upstream.port()
        tls_port = int(upstream.wait_err(r"port: (\d+) \(smtps\)")[1])
        target = f"smtps://127.0.0.1:{tls_port}"

        def send(port: int) -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                client.sendmail("a@x.test", ["b@y.test"], b"Subject: hop\r\n\r\nover tls\r\n")

        # Verification is on by default: the test CA is not in the system store.
        relay_args = ["--port", "0", "--hostname", "mx.test", "--relay", target]
        relay_args += ["--relay-from", "127.0.0.1/32", "--relay-auth-file", str(creds)]
        with cli(*relay_args) as strict:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                send(strict.port())
            assert refused.value.smtp_code == 451
            line = strict.wait_err(r"\[ERROR\] - Message failed: ").string
            assert "CERTIFICATE_VERIFY_FAILED" in line or "certificate verify failed" in line
            assert strict.stop() == 0
        with cli(*relay_args, "--relay-no-verify", "--log-level", "debug") as relay:
            send(relay.port())
            line = relay.wait_err(r"Message accepted: .* upstream=").string
            assert relay.stop() == 0
        upstream.wait_err(r"Authenticated: .* as 'relay'")
        upstream.wait_err(r"Message accepted: ")
        assert upstream.stop() == 0
    assert f"upstream=smtps://127.0.0.1:{tls_port}" in line
    for output in (strict.err, relay.err, upstream.err):
        assert not [ln for ln in output if "s3cret" in ln]
    [stored] = list((maildir / "new").iterdir())
    assert stored.read_bytes().endswith(b"over tls\r\n")


def test_relay_flags_refuse_what_cannot_work(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("no-colon-here\n")
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "trio_smtp", "--port", "0", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)

    result = run(
        "--relay", "127.0.0.1:25", "--relay-from", "127.0.0.1", "--relay-auth-file", str(bad)
    )
    assert result.returncode == 2
    assert "expected one line login:password" in result.stderr
    assert "no-colon-here" not in result.stderr  # the line may be a password
    result = run("--relay-no-verify")
    assert result.returncode == 2
    assert "--relay-no-verify needs --relay" in result.stderr
    result = run("--relay", "ftp://x:1")
    assert result.returncode == 2
    assert "smtp://, smtps:// or lmtp://" in result.stderr
