"""A real Dovecot (unprivileged test instance): LMTP relay into it, and our Maildir read by it."""

from __future__ import annotations

import re
import signal
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _dovecot import Dovecot, running_dovecot
from _proc import TIMEOUT, cli


def _static_accounts(root: Path, uid: int, gid: int) -> str:
    """Any user exists, with no password, and gets mail under ``mail/<user>``."""
    return f"""
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%n
}}
"""


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot("dovecot", _static_accounts) as instance:
        yield instance


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_mail_relayed_over_lmtp_is_found_with_doveadm_fetch(dovecot: Dovecot, via: str) -> None:
    target = f"lmtp://127.0.0.1:{dovecot.port}" if via == "tcp" else f"lmtp:{dovecot.socket}"
    with cli(
        "--port", "0", "--hostname", "mx.test", "--relay", target, "--relay-from", "127.0.0.1/32"
    ) as server:
        port = server.port()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.sendmail(
                "alice@x.test",
                ["bob@example.test", "carol@example.test"],
                f"Subject: relayed over {via}\r\nMessage-ID: <{via}@x.test>\r\n\r\n"
                ".dot line\r\nhello dovecot\r\n".encode(),
            )
        line = server.wait_err(r"Message accepted: .* upstream=").string
        assert server.stop(signal.SIGTERM) == 0
    assert "upstream=lmtp://" in line
    for user in ("bob", "carol"):
        out = dovecot.doveadm("fetch", "-u", user, "hdr.subject body", "all")
        assert f"hdr.subject: relayed over {via}" in out
        assert ".dot line" in out  # unstuffed on arrival, as sent
        assert "hello dovecot" in out


def test_dovecot_reads_every_message_of_our_maildir(dovecot: Dovecot) -> None:
    # Our --maildir writes the mailbox of user "dave" in the Dovecot instance's layout.
    maildir = dovecot.mail / "dave"
    with cli("--port", "0", "--hostname", "mx.test", "--maildir", str(maildir)) as server:
        port = server.port()
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            for n in range(3):
                client.sendmail(
                    "alice@x.test",
                    ["dave@example.test"],
                    f"Subject: number {n}\r\nX-Seq: {n}\r\n\r\nbody {n}\r\n".encode(),
                )
        assert server.stop() == 0
    subprocess.run(["chmod", "-R", "a+rwX", str(maildir)], check=True)
    out = dovecot.doveadm("fetch", "-u", "dave", "hdr.subject hdr.x-seq hdr.received", "all")
    assert sorted(re.findall(r"hdr\.subject: (number \d)", out)) == [
        "number 0",
        "number 1",
        "number 2",
    ]
    assert out.count("by mx.test") == 3  # our Received header, read back by Dovecot
    # Flag the first as seen: Dovecot renames it with the ":2,S" info suffix mutt uses.
    dovecot.doveadm("flags", "add", "-u", "dave", "\\Seen", "mailbox", "INBOX", "uid", "1")
    names = [p.name for sub in ("new", "cur") for p in (maildir / sub).iterdir()]
    assert len(names) == 3
    assert any(re.search(r":2,S$", n) for n in names), names
