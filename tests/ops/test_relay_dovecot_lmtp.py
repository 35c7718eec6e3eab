"""An LMTP front relaying into a real Dovecot: each recipient gets Dovecot's own answer.

Dovecot (unprivileged test instance, passwd-file users) refuses an unknown user at RCPT
and a user over quota after the data; our ``--lmtp --relay lmtp://`` server passes each
answer on to the client for that recipient, and delivers to the others.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _proc import TIMEOUT, cli
from conftest import require_tool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Dovecot:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.conf = root / "dovecot.conf"
        self.port = port
        self.socket = root / "run" / "lmtp"

    def fetch(self, user: str) -> str:
        result = subprocess.run(
            [require_tool("doveadm"), "-c", str(self.conf), "fetch", "-u", user, "body", "all"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.fixture
def dovecot_users() -> Iterator[_Dovecot]:
    binary = require_tool("dovecot")
    require_tool("doveadm")
    # Not under pytest's 0700 tmp_path: Dovecot delivers as an unprivileged user.
    base = Path(tempfile.mkdtemp(prefix="trio-smtp-dovecot-lmtp-"))
    base.chmod(0o755)
    root = base / "dovecot"
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(parents=True)
    for sub in ("mail", "home"):
        os.chmod(root / sub, 0o777)
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", str(os.getuid()))
    # bob and carol exist; carol's quota is 1 KiB, smaller than the message.
    users = root / "users"
    users.write_text(
        f"bob::{uid}:{gid}::{root}/home/bob::\n"
        f"carol::{uid}:{gid}::{root}/home/carol::userdb_quota_rule=*:storage=1K\n"
    )
    users.chmod(0o644)
    instance = _Dovecot(root, _free_port())
    instance.conf.write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = trio-smtp-lmtp-test-{os.getpid()}
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_internal_user = {user}
default_internal_group = {"root" if os.geteuid() == 0 else user}
default_login_user = {user}
first_valid_uid = 1
auth_username_format = %Ln
mail_location = maildir:{root}/mail/%n
mail_plugins = quota
plugin {{
  quota = maildir:User quota
}}
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
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


def _lmtp(port: int, recipients: list[str], body: bytes) -> list[bytes]:
    """A whole LMTP transaction: the replies after the data, one per recipient."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            return lines[-1]

        def cmd(line: bytes) -> bytes:
            sock.sendall(line + b"\r\n")
            return reply()

        assert reply().startswith(b"220 ")
        assert cmd(b"LHLO client.test").startswith(b"250 ")
        assert cmd(b"MAIL FROM:<alice@x.test>").startswith(b"250 ")
        for rcpt in recipients:
            assert cmd(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250 ")
        assert cmd(b"DATA").startswith(b"354 ")
        sock.sendall(body + b".\r\n")
        replies = [reply() for _ in recipients]
        cmd(b"QUIT")
        f.close()
        return replies


def test_each_recipient_gets_dovecots_answer(dovecot_users: _Dovecot) -> None:
    target = f"lmtp://127.0.0.1:{dovecot_users.port}"
    body = b"Subject: per recipient\r\n\r\n" + b"a line of the body, long enough\r\n" * 100
    with cli(
        "--port", "0", "--lmtp", "--hostname", "mx.test",
        "--relay", target, "--relay-from", "127.0.0.1/32",
    ) as server:  # fmt: skip
        port = server.port()
        bob, nobody, carol = _lmtp(
            port, ["bob@example.test", "nobody@example.test", "carol@example.test"], body
        )
        accepted = server.wait_err(r"Message accepted: .* upstream=").string
        refused = [server.wait_err(r"Message refused: ").string for _ in range(2)]
        assert server.stop(signal.SIGTERM) == 0
    # The log says who got it and who did not, and why.
    assert "to=<bob@example.test>" in accepted
    assert "nobody" not in accepted
    assert "carol" not in accepted
    assert [("nobody" in line, "carol" in line) for line in refused] == [
        (True, False),
        (False, True),
    ]
    assert "Quota exceeded" in refused[1]
    assert bob.startswith(b"250 2.1.5 <bob@example.test> relayed"), bob
    # Unknown at Dovecot's RCPT: permanent, for that recipient only.
    assert nobody.startswith(b"550 5.1.1 upstream refused <nobody@example.test>: "), nobody
    # Over quota after the data: Dovecot's own code and enhanced code, for carol only.
    assert carol.startswith(b"552 5.2.2 upstream refused <carol@example.test>: "), carol
    assert b"Quota exceeded" in carol, carol
    assert "a line of the body" in dovecot_users.fetch("bob")
