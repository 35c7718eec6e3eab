"""XCLIENT from --xclient-from only: the named client is what logs, limits and Received see."""

from __future__ import annotations

import mailbox
from pathlib import Path

from _proc import TIMEOUT, cli

from trio_smtp.testing import BlockingSMTPClient


def test_xclient_from_a_trusted_proxy_replaces_the_client(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with cli(
        "--port", "0", "--hostname", "mx.test", "--maildir", str(maildir),
        "--xclient-from", "127.0.0.0/8", "--max-connections-per-ip", "1",
    ) as server:  # fmt: skip
        port = server.port()
        c = BlockingSMTPClient.connect("127.0.0.1", port, timeout=TIMEOUT)
        assert c.reply().code == 220
        ehlo = c.expect("EHLO proxy.test", 250)
        assert any("XCLIENT" in line and "ADDR" in line for line in ehlo.splitlines())
        c.expect("XCLIENT ADDR=203.0.113.7 PORT=4000 NAME=client.example HELO=client", 220)
        # The per-address count moved to 203.0.113.7: the proxy may connect again.
        other = BlockingSMTPClient.connect("127.0.0.1", port, timeout=TIMEOUT)
        assert other.reply().code == 220
        other.close()
        c.expect("EHLO client.example", 250)
        c.expect("MAIL FROM:<a@x.test>", 250)
        c.expect("RCPT TO:<b@y.test>", 250)
        c.expect("DATA", 354)
        c.expect(b"Subject: via xclient\r\n\r\nhi\r\n.", 250)
        c.expect("QUIT", 221)
        c.close()
        line = server.wait_err(r"XCLIENT: ").string
        server.wait_err(r"Message accepted: ")
        assert server.stop() == 0
    assert "client 203.0.113.7:4000 name=client.example helo=client via 127.0.0.1:" in line
    [message] = list(mailbox.Maildir(str(maildir), create=False))
    assert "[203.0.113.7]" in message["Received"]
    assert "127.0.0.1" not in message["Received"]


def test_xclient_is_refused_and_not_advertised_to_others() -> None:
    with cli("--port", "0", "--hostname", "mx.test") as server:
        port = server.port()
        c = BlockingSMTPClient.connect("127.0.0.1", port, timeout=TIMEOUT)
        assert c.reply().code == 220
        assert "XCLIENT" not in c.expect("EHLO proxy.test", 250)
        assert c.expect("XCLIENT ADDR=203.0.113.7", 550).startswith("5.7.0")
        c.expect("QUIT", 221)
        c.close()
        assert server.stop() == 0
    assert not [line for line in server.err if "XCLIENT:" in line]


def test_swaks_xclient_with_login_and_json_logs(tmp_path: Path) -> None:
    import json
    import subprocess

    from conftest import require_tool

    swaks = require_tool("swaks")
    maildir = tmp_path / "Maildir"
    with cli(
        "--port", "0", "--hostname", "mx.test", "--maildir", str(maildir),
        "--xclient-from", "127.0.0.1", "--log-format", "json",
    ) as server:  # fmt: skip
        port = int(json.loads(server.wait_err(r"Server start on ip:").string)["msg"].split()[-1])
        result = subprocess.run(
            [swaks, "--server", "127.0.0.1", "--port", str(port), "--to", "b@y.test",
             "--xclient-addr", "198.51.100.4", "--xclient-name", "[UNAVAILABLE]",
             "--xclient-login", "carol"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout
        assert "XCLIENT ADDR=198.51.100.4" in result.stdout
        server.wait_err(r"Message accepted")
        assert server.stop() == 0
    records = [json.loads(line) for line in server.err]
    [xclient] = [r for r in records if r["msg"].startswith("XCLIENT:")]
    assert xclient["peer"] == "198.51.100.4:0"
    assert "login=carol" in xclient["msg"]
    [accepted] = [r for r in records if r.get("result") == "accepted"]
    assert accepted["peer"] == "198.51.100.4:0"  # every later record names the real client
    assert accepted["session"] == xclient["session"]
    [message] = list(mailbox.Maildir(str(maildir), create=False))
    assert "[198.51.100.4]" in message["Received"]
    assert "ESMTPA" in message["Received"]  # LOGIN= made the session authenticated
