"""A real Dovecot (unprivileged test instance): LMTP relay into it, and our Maildir read by it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _proc import TIMEOUT, cli
from conftest import require_tool


class Dovecot:
    def __init__(self, root: Path, lmtp_port: int) -> None:
        self.root = root
        self.conf = root / "dovecot.conf"
        self.port = lmtp_port
        self.socket = root / "run" / "lmtp"
        self.mail = root / "mail"

    def doveadm(self, *args: str) -> str:
        result = subprocess.run(
            [require_tool("doveadm"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    binary = require_tool("dovecot")
    require_tool("doveadm")
    # Not under pytest's 0700 tmp_path: Dovecot delivers as an unprivileged user.
    base = Path(tempfile.mkdtemp(prefix="trio-smtp-dovecot-"))
    base.chmod(0o755)
    root = base / "dovecot"
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(parents=True)
    # Mail is written as an unprivileged user: as root, nobody; otherwise ourselves.
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", str(os.getuid()))
    for sub in ("mail", "home"):
        os.chmod(root / sub, 0o777)
    instance = Dovecot(root, _free_port())
    instance.conf.write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = trio-smtp-test-{os.getpid()}
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = {user}
default_internal_group = {"root" if os.geteuid() == 0 else user}
default_login_user = {user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%n
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {instance.port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
"""
    )
    subprocess.run([binary, "-c", str(instance.conf)], check=True, timeout=TIMEOUT)
    try:
        for _ in range(200):  # the master forks its listeners in the background
            if instance.socket.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        yield instance
    finally:
        subprocess.run([binary, "-c", str(instance.conf), "stop"], timeout=TIMEOUT, check=False)
        shutil.rmtree(base, ignore_errors=True)


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
