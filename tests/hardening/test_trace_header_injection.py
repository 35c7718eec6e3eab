"""A message that starts with whitespace cannot continue our Received/Return-Path headers.

Attack: the first line of the message begins with a space or a tab. Put after our trace
headers unchanged, it reads (RFC 5322 §2.2.3) as a continuation of our ``Received:``
header, so mail readers show the attacker's text inside the trace we vouch for. Each test
sends such a message over a real socket to the command line server, with ``--maildir``
and with ``--mbox``, and parses what was stored with the :mod:`email` package.
"""

from __future__ import annotations

import email.parser
import email.policy
import mailbox
import smtplib
from email.message import Message
from pathlib import Path

import pytest
from _harden_support import TIMEOUT, cli_server

INJECTED = b"\tby trusted.example with ESMTPS; Mon, 1 Jan 2029 00:00:00 +0000"
ATTACKS = {
    "tab": INJECTED + b"\r\nSubject: hi\r\n\r\nbody\r\n",
    "space": b" (authenticated sender: ceo@example.org)\r\nSubject: hi\r\n\r\nbody\r\n",
}


def _send(port: int, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        assert client.sendmail("ann@client.test", ["bob@mx.test"], message) == {}


def _stored(flag: str, path: Path) -> bytes:
    if flag == "--maildir":
        (name,) = list((path / "new").iterdir())
        return name.read_bytes()
    box = mailbox.mbox(str(path))
    try:
        (message,) = list(box)
        return message.as_bytes()
    finally:
        box.close()


def _our_headers_are_clean(stored: bytes, first_line: bytes) -> Message:
    parsed = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(stored)
    received = parsed.get_all("Received")
    assert received is not None
    assert len(received) == 1
    # The attacker's first line is not part of our header, in any unfolding.
    attacker = first_line.strip().decode()
    assert attacker not in str(received[0])
    assert attacker not in str(parsed["Return-Path"])
    assert str(received[0]).rstrip().endswith("+0000")  # ends with our date, nothing after
    # The message's bytes are all still there, unchanged, in order.
    assert first_line in stored
    return parsed


@pytest.mark.parametrize("flag", ["--maildir", "--mbox"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_leading_whitespace_line_stays_out_of_our_trace_headers(
    tmp_path: Path, flag: str, attack: str
) -> None:
    target = tmp_path / ("Maildir" if flag == "--maildir" else "mbox")
    message = ATTACKS[attack]
    with cli_server(flag, str(target)) as srv:
        _send(srv.port, message)
    stored = _stored(flag, target)
    first_line = message.split(b"\r\n", 1)[0]
    _our_headers_are_clean(stored, first_line)


@pytest.mark.parametrize("flag", ["--maildir", "--mbox"])
def test_an_ordinary_message_is_stored_as_sent(tmp_path: Path, flag: str) -> None:
    """The rule touches only messages that begin with whitespace."""
    target = tmp_path / ("Maildir" if flag == "--maildir" else "mbox")
    with cli_server(flag, str(target)) as srv:
        _send(srv.port, b"Subject: hi\r\n\r\nbody\r\n")
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(_stored(flag, target))
    assert parsed["Subject"] == "hi"
    assert parsed.get_content().strip() == "body"
    assert len(parsed.get_all("Received") or []) == 1
