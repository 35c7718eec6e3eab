"""``python -m trio_smtp --verify ... --dns-server ...`` as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import re
import selectors
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .knot import Knot, start_knot, txt
from .signing import message, rsa_key, sign

RSA = rsa_key("rsa1", "example.test")
START = re.compile(rb"Server start on ip: (\S+) port: (\d+)")


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    records = [
        ("example", "TXT", txt("v=spf1 ip4:127.0.0.1 -all")),
        ("_dmarc.example", "TXT", txt("v=DMARC1; p=reject")),
        ("rsa1._domainkey.example", "TXT", txt(RSA.txt)),
    ]
    with start_knot(tmp_path_factory.mktemp("knot"), records) as server:
        yield server


def _port(proc: subprocess.Popen[bytes]) -> int:
    """The port in the server's start line. Read from the pipe itself, not through the
    buffered file: a ``readline`` that took two lines from one read would leave the
    start line in Python's buffer, where the selector cannot see it."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while sel.select(60):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            seen += chunk
            # Whole lines only: a read may end in the middle of the port number.
            m = START.search(seen[: seen.rfind(b"\n") + 1])
            if m:
                return int(m.group(2))
    proc.kill()
    raise AssertionError(f"the server did not start: {seen.decode(errors='replace')}")


def _exchange(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("mail.example.test")
        client.sendmail("alice@example.test", ["bob@example.org"], sign(message(), RSA))
    # Unsigned, from an address outside the SPF record: DMARC fails, p=reject applies.
    with smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=("127.0.0.2", 0)) as c:
        c.ehlo("mail.example.test")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("alice@example.test", ["bob@example.org"], message())
    assert refused.value.smtp_code == 550
    error = refused.value.smtp_error
    assert isinstance(error, bytes)
    assert error.startswith(b"5.7.1")


def test_cli_verifies_and_the_maildir_gets_the_header(knot: Knot, tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    argv = [
        sys.executable, "-m", "trio_smtp", "--port", "0", "--hostname", "mx.example.org",
        "--maildir", str(maildir), "--verify", "spf,dkim,dmarc,arc",
        "--dns-server", knot.server, "--dmarc-enforce",
    ]  # fmt: skip
    with subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL) as proc:
        try:
            _exchange(_port(proc))
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
    (stored,) = list((maildir / "new").iterdir())
    text = stored.read_bytes()
    assert b"Authentication-Results: mx.example.org;\r\n\tspf=pass" in text
    assert b"\tdkim=pass header.d=example.test header.s=rsa1" in text
    assert b"\tdmarc=pass (p=reject sp=reject pct=100) header.from=example.test" in text


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--verify", "spf,spam"], "--verify"),
        (["--verify", "spf", "--dns-server", "resolver.example"], "--dns-server"),
        (["--dns-server", "127.0.0.1"], "--dns-server"),
        (["--dmarc-enforce"], "--dmarc-enforce"),
    ],
)
def test_bad_verify_flags_exit_2_naming_the_flag(argv: list[str], flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trio_smtp", "--port", "0", *argv],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert flag in lines[-1]
    assert "Traceback" not in done.stderr.decode()
