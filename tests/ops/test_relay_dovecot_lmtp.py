"""An LMTP front relaying into a real Dovecot: each recipient gets Dovecot's own answer.

Dovecot (unprivileged test instance, passwd-file users) refuses an unknown user at RCPT
and a user over quota after the data; our ``--lmtp --relay lmtp://`` server passes each
answer on to the client for that recipient, and delivers to the others.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _dovecot import Dovecot, running_dovecot
from _proc import TIMEOUT, cli


def _quota_accounts(root: Path, uid: int, gid: int) -> str:
    """bob and carol exist (no one else); carol's quota is 1 KiB, smaller than the message."""
    users = root / "users"
    users.write_text(
        f"bob::{uid}:{gid}::{root}/home/bob::\n"
        f"carol::{uid}:{gid}::{root}/home/carol::userdb_quota_rule=*:storage=1K\n"
    )
    users.chmod(0o644)
    return f"""
auth_username_format = %Ln
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
"""


@pytest.fixture
def dovecot_users() -> Iterator[Dovecot]:
    with running_dovecot("dovecot-lmtp", _quota_accounts) as instance:
        yield instance


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


def test_each_recipient_gets_dovecots_answer(dovecot_users: Dovecot) -> None:
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
    assert "a line of the body" in dovecot_users.doveadm("fetch", "-u", "bob", "body", "all")
