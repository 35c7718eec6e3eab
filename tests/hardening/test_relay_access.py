"""Relaying is closed by default: ``--relay`` forwards only for whom it is allowed.

Attack: anyone reaching a ``--relay`` server could send from any sender to any recipient
through it (an open relay). Now RCPT is accepted only when the session authenticated,
the client's address (the real one, or the one a trusted PROXY header gives) is in
``relay_from``, or the recipient's domain is in ``relay_domains``; else ``554 5.7.1``.
Every test talks to a real server over a loopback socket, with smtplib or raw bytes; the
messages that are allowed really go on to a second server.
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from _harden_support import TIMEOUT, Live, cli_server, run_cli, serving, smtp

from trio_smtp._relay_policy import RelayPolicy
from trio_smtp.sinks import MemorySink, RelaySink

DENIED = (554, b"5.7.1 relay access denied")


@asynccontextmanager
async def relay_pair(config: dict[str, Any]) -> AsyncIterator[tuple[Live, MemorySink]]:
    """A relaying server (``config``) in front of a second server that stores."""
    async with serving() as downstream:
        relay = RelaySink("127.0.0.1", downstream.port, starttls="never", timeout=TIMEOUT)
        async with serving(config, deps={"sink": relay}) as front:
            yield front, downstream.sink


def _rcpts(
    recipients: Sequence[str], *, login: tuple[str, str] | None = None
) -> Callable[[smtplib.SMTP], list[tuple[int, bytes]]]:
    def use(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        client.ehlo()
        if login is not None:
            client.login(*login)
        client.mail("ann@client.test")
        replies = [client.rcpt(r) for r in recipients]
        if any(code == 250 for code, _ in replies):
            code, _ = client.data(b"Subject: relayed\r\n\r\nbody\r\n")
            assert code == 250
        else:
            client.rset()
        return replies

    return use


async def test_relay_without_any_permission_refuses_every_recipient() -> None:
    async with relay_pair({}) as (front, stored):
        replies = await smtp(front.port, _rcpts(["victim@elsewhere.example"]))
    assert replies == [DENIED]
    assert stored.messages == []
    assert "Relay access denied" in front.logger.text


async def test_relay_domains_allow_only_their_recipients() -> None:
    config = {"relay_domains": ["example.com", ".example.org"]}
    async with relay_pair(config) as (front, stored):
        replies = await smtp(
            front.port,
            _rcpts(
                [
                    "bob@example.com",
                    "BOB@Example.COM",  # case does not matter
                    "victim@elsewhere.example",
                    "x@sub.example.com",  # example.com is exact: no subdomains
                    "y@mx.example.org",  # .example.org: subdomains ...
                    "z@example.org",  # ... only
                    "victim%elsewhere.example@example.com",  # a route hidden in the local part
                    '"victim@elsewhere.example"@example.com',
                    "victim!elsewhere.example@example.com",
                ]
            ),
        )
    assert [code for code, _ in replies] == [250, 250, 554, 554, 250, 554, 554, 554, 554]
    (message,) = stored.messages
    assert message.rcpt_tos == ["bob@example.com", "BOB@Example.COM", "y@mx.example.org"]


async def test_relay_from_allows_its_clients_anywhere() -> None:
    async with relay_pair({"relay_from": ["127.0.0.0/8"]}) as (front, stored):
        replies = await smtp(front.port, _rcpts(["victim%x@elsewhere.example"]))
    assert [code for code, _ in replies] == [250]
    assert len(stored.messages) == 1


async def test_relay_from_other_networks_does_not_include_us() -> None:
    async with relay_pair({"relay_from": ["192.0.2.0/24", "2001:db8::/32"]}) as (front, _):
        replies = await smtp(front.port, _rcpts(["victim@elsewhere.example"]))
    assert replies == [DENIED]


async def test_relay_from_uses_the_address_a_trusted_proxy_header_gives() -> None:
    config = {"relay_from": ["192.0.2.0/24"], "proxy_protocol": True}
    async with relay_pair(config) as (front, stored):
        answers = {}
        for client_ip in ("192.0.2.7", "198.51.100.7"):
            stream = await trio.open_tcp_stream("127.0.0.1", front.port)
            async with stream:
                header = f"PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n".encode()
                await stream.send_all(
                    header + b"EHLO c.test\r\nMAIL FROM:<a@c.test>\r\n"
                    b"RCPT TO:<victim@elsewhere.example>\r\nQUIT\r\n"
                )
                data = b""
                with trio.fail_after(TIMEOUT):
                    while chunk := await stream.receive_some():
                        data += chunk
            answers[client_ip] = [
                line for line in data.split(b"\r\n") if line[:3] in (b"250", b"554")
            ][-1]
    assert answers["192.0.2.7"].startswith(b"250 ")
    assert answers["198.51.100.7"] == b"554 5.7.1 relay access denied"
    assert stored.messages == []  # nobody sent DATA


async def test_an_authenticated_session_may_relay(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice:pw-alice\n", encoding="utf-8")
    config = {"auth_file": str(users), "auth_insecure": True}
    async with relay_pair(config) as (front, stored):
        anonymous = await smtp(front.port, _rcpts(["victim@elsewhere.example"]))
        logged_in = await smtp(
            front.port, _rcpts(["friend@elsewhere.example"], login=("alice", "pw-alice"))
        )
    assert anonymous == [DENIED]
    assert [code for code, _ in logged_in] == [250]
    (message,) = stored.messages
    assert message.rcpt_tos == ["friend@elsewhere.example"]


async def test_relay_keys_also_close_a_server_that_is_not_a_relay() -> None:
    """Set explicitly, the policy applies whatever the sink (here the memory sink)."""
    async with serving({"relay_domains": ["example.com"]}) as live:
        replies = await smtp(live.port, _rcpts(["bob@example.com", "victim@elsewhere.example"]))
    assert [code for code, _ in replies] == [250, 554]


async def test_a_server_that_is_not_a_relay_accepts_any_recipient_by_default() -> None:
    async with serving() as live:
        replies = await smtp(live.port, _rcpts(["anyone@anywhere.example"]))
    assert [code for code, _ in replies] == [250]


def test_cli_relay_alone_exits_2_with_one_line() -> None:
    done = run_cli("--port", "0", "--relay", "127.0.0.1:9")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "--relay" in line
    assert "--relay-from" in line
    assert "--relay-domain" in line
    assert "--auth-file" in line


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--relay-from", "10.0.0.0/33", "--relay-from"),
        ("--relay-domain", "bad domain", "--relay-domain"),
    ],
)
def test_cli_bad_relay_values_exit_2_naming_the_flag(flag: str, value: str, message: str) -> None:
    done = run_cli("--port", "0", "--relay", "127.0.0.1:9", flag, value)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert message in line
    assert repr(value) in line


def test_cli_relay_with_a_domain_refuses_others_over_the_wire() -> None:
    with cli_server("--relay", "127.0.0.1:9", "--relay-domain", "example.com") as srv:
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=TIMEOUT) as client:
            client.ehlo()
            client.mail("ann@client.test")
            assert client.rcpt("victim@elsewhere.example") == DENIED
            assert client.rcpt("bob@example.com")[0] == 250


def test_policy_rules() -> None:
    policy = RelayPolicy.build(
        relay_from=["10.1.0.0/16", "2001:db8::1"], relay_domains=["bücher.example", ".Example.NET"]
    )
    assert policy.client_allowed("10.1.2.3")
    assert policy.client_allowed("::ffff:10.1.2.3")
    assert policy.client_allowed("2001:db8::1")
    assert not policy.client_allowed("10.2.0.1")
    assert not policy.client_allowed("/run/smtp.sock")
    assert policy.domain_allowed("a@xn--bcher-kva.example")
    assert policy.domain_allowed("a@BÜCHER.example")
    assert policy.domain_allowed("a@deep.sub.example.net")
    assert not policy.domain_allowed("a@example.net")
    assert not policy.domain_allowed("a@notexample.net")
    assert not policy.domain_allowed("postmaster")
    assert not policy.domain_allowed("a@[10.1.2.3]")
    assert policy.allows(authenticated=True, client="192.0.2.1", recipient="a@b.example")
    assert not policy.allows(authenticated=False, client="192.0.2.1", recipient="a@b.example")
    with pytest.raises(ValueError, match="relay_domains: 'a b'"):
        RelayPolicy.build(relay_domains=["a b"])
    with pytest.raises(ValueError, match="relay_from: 'nope'"):
        RelayPolicy.build(relay_from=["nope"])


async def test_relayed_message_starting_with_whitespace_keeps_out_of_our_trace() -> None:
    """The relay sink's Received header is not continued by the message's first line."""
    async with relay_pair({"relay_from": ["127.0.0.0/8"]}) as (front, stored):

        def send(client: smtplib.SMTP) -> Any:
            return client.sendmail(
                "ann@client.test",
                ["bob@elsewhere.example"],
                b"\tby trusted.example with ESMTPS\r\nSubject: hi\r\n\r\nbody\r\n",
            )

        assert await smtp(front.port, send) == {}
    (message,) = stored.messages
    header, _, rest = message.content.partition(b"\r\n\r\n")
    assert header.startswith(b"Received: from ")
    assert b"trusted.example" not in header
    assert rest.startswith(b"\tby trusted.example with ESMTPS\r\n")


async def test_relay_from_uses_the_address_xclient_gives() -> None:
    """Postfix's XCLIENT from a trusted proxy: the client it names is who relays."""
    config = {"relay_from": ["192.0.2.0/24"], "xclient_from": ["127.0.0.0/8"]}
    async with relay_pair(config) as (front, _stored):

        def rcpt_as(addr: str) -> Callable[[smtplib.SMTP], tuple[int, bytes]]:
            def use(client: smtplib.SMTP) -> tuple[int, bytes]:
                client.ehlo()
                code, _ = client.docmd("XCLIENT", f"ADDR={addr}")
                assert code == 220
                client.ehlo()
                client.mail("ann@client.test")
                return client.rcpt("victim@elsewhere.example")

            return use

        inside = await smtp(front.port, rcpt_as("192.0.2.7"))
        outside = await smtp(front.port, rcpt_as("198.51.100.7"))
    assert inside[0] == 250
    assert outside == DENIED
